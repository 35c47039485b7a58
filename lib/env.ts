import { usageError } from './errors.ts'

const TRUE = new Set(['1', 'true', 'yes', 'on'])
const FALSE = new Set(['', '0', 'false', 'no', 'off'])

/**
 * Reads an opt-in switch such as INCLUDE_POSTGRES. A typo like
 * `INCLUDE_POSTGRES=ture` must not silently mean "off" for a DR tool,
 * so anything unrecognised is a usage error rather than false.
 */
export function envFlag(env: NodeJS.ProcessEnv, name: string): boolean {
  const raw = env[name]
  if (raw === undefined) return false
  const value = raw.trim().toLowerCase()
  if (TRUE.has(value)) return true
  if (FALSE.has(value)) return false
  throw usageError(
    `${name} must be true or false, got '${raw}'`,
    `set ${name}=true or ${name}=false`,
  )
}
