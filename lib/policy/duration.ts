import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'

const UNIT_MS = {
  w: 7 * 86_400_000,
  d: 86_400_000,
  h: 3_600_000,
  m: 60_000,
  s: 1_000,
  ms: 1,
} as const

type Unit = keyof typeof UNIT_MS

// Largest unit first, so `1h30m` reads naturally; `30m1h` and `1h1h` are
// almost certainly typos and are refused rather than silently summed.
const UNIT_ORDER: readonly Unit[] = ['w', 'd', 'h', 'm', 's', 'ms']

// `ms` must be tried before `m`, or `500ms` would read as 500 minutes plus junk.
const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/iy

const EXAMPLES = 'like 90s, 15m, 4h or 1d'
const FIX = 'use a number with a unit (ms, s, m, h, d, w), e.g. 1h30m'

/** Milliseconds in `text`; `what` names the setting in the error, e.g. `--rpo`. */
export function parseDuration(text: string, what: string): number {
  // minimist hands over numbers and booleans for `--rpo 15` and a bare `--rpo`.
  const raw = typeof text === 'string' ? text : String(text)
  const bad = () => usageError(`${what} must be a duration ${EXAMPLES}, got ${quoteValue(raw, 64)}`, FIX)
  const body = raw.trim()
  if (body === '') throw bad()

  const part = new RegExp(PART_RE)
  let total = 0
  let lastRank = -1
  while (part.lastIndex < body.length) {
    const m = part.exec(body)
    if (!m) throw bad()
    const unit = m[2]!.toLowerCase() as Unit
    const rank = UNIT_ORDER.indexOf(unit)
    if (rank <= lastRank) throw bad()
    lastRank = rank
    total += Number(m[1]) * UNIT_MS[unit]
  }

  total = Math.round(total)
  if (!Number.isFinite(total) || total > Number.MAX_SAFE_INTEGER) {
    throw usageError(`${what} is too large, got ${quoteValue(raw, 64)}`, FIX)
  }
  // A zero objective can never be met and a zero window holds nothing.
  if (total <= 0) throw usageError(`${what} must be greater than zero, got ${quoteValue(raw, 64)}`, FIX)
  return total
}

const pad2 = (n: number) => String(n).padStart(2, '0')

/**
 * Two significant units at most: reports are read by people comparing a drill
 * against an objective, and `4m 05s` answers that better than `245123ms`.
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms)
  if (ms < 0) return '-' + formatDuration(-ms)
  if (ms < 100) return `${Math.round(ms)}ms`
  // Each branch re-rounds in its own unit, so 59.96s becomes `1m 00s`, not `60.0s`.
  const tenths = Math.round(ms / 100)
  if (tenths < 600) return `${(tenths / 10).toFixed(1)}s`
  const seconds = Math.round(ms / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${pad2(seconds % 60)}s`
  const minutes = Math.round(ms / 60_000)
  if (minutes < 1440) return `${Math.floor(minutes / 60)}h ${pad2(minutes % 60)}m`
  const hours = Math.round(ms / 3_600_000)
  return `${Math.floor(hours / 24)}d ${pad2(hours % 24)}h`
}
