import { verificationError } from '../cli/errors.ts'

/** Small typed validators shared by every section of the manifest: any deviation is a verification failure, never a crash. */
export type Json = Record<string, unknown>

export const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v)

export function field<T>(obj: Json, key: string, check: (v: unknown) => v is T, what: string, where: string): T {
  const value = obj[key]
  if (!check(value)) throw malformed(`${where}${key} must be ${what}`)
  return value
}

export const isString = (v: unknown): v is string => typeof v === 'string' && v.length > 0
export const isText = (v: unknown): v is string => typeof v === 'string'
export const isSize = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0
export const isSha = (v: unknown): v is string => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v)
/** A UTC time as toISOString() writes it, and a real one: Date.parse takes 2026-02-30 as 2 March, so the date must round-trip. */
export const isIsoDate = (v: unknown): v is string =>
  typeof v === 'string' &&
  /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(v) &&
  !Number.isNaN(Date.parse(v)) &&
  new Date(Date.parse(v)).toISOString().slice(0, 19) === v.slice(0, 19)

/** Pure: the YYYY-MM-DD a timestamp starts with is a day of the calendar (Date.parse takes 2026-02-30 as 2 March, whatever the offset). */
export function isCalendarDay(v: string): boolean {
  const m = /^(\d{4})-(\d\d)-(\d\d)/.exec(v)
  if (!m) return false
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])]
  const d = new Date(Date.UTC(year, month - 1, day))
  return d.getUTCFullYear() === year && d.getUTCMonth() === month - 1 && d.getUTCDate() === day
}

export function malformed(detail: string) {
  return verificationError(`manifest is malformed: ${detail}`, 'the artifact is damaged or not a Conductor backup; use another backup')
}

