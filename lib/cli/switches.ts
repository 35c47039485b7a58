import { usageError } from './errors.ts'
import { quoteValue } from './escape.ts'

const TRUE = new Set(['1', 'true', 'yes', 'on'])
const FALSE = new Set(['0', 'false', 'no', 'off'])

/**
 * The one reading of a yes/no value, for flags (`--include-postgres=no`)
 * and environment (`INCLUDE_POSTGRES=ture`) alike. A typo must not
 * silently mean "on" or "off" for a DR tool: anything unclear is refused.
 */
export function parseSwitch(raw: string, name: string): boolean {
  const value = raw.trim().toLowerCase()
  if (TRUE.has(value)) return true
  if (FALSE.has(value)) return false
  throw usageError(`${name} must be true or false, got ${quoteValue(raw, 40)}`, `use ${name}=true or ${name}=false`)
}

/** Reads an opt-in switch such as INCLUDE_POSTGRES; unset or empty means off. */
export function envFlag(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name]
  if (raw === undefined || raw.trim() === '') return false
  return parseSwitch(raw, name)
}

/**
 * A switch that has both a flag and an environment spelling. Both are
 * always read, so a bad value in either is refused even when the other
 * already says yes.
 */
export function flagOrEnv(flag: boolean | undefined, env: NodeJS.ProcessEnv, name: string): boolean {
  const fromEnv = envFlag(env, name)
  return flag === true || fromEnv
}
