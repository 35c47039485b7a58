import type { CheckSpec } from '../checks/types.ts'
import { parseDuration } from '../policy/duration.ts'

/** The operator-check flags, shared by restore.sh and drill.sh so both read them the same way. */
export const CHECK_FLAGS = ['check-sql', 'check-cmd', 'check-url'] as const

const DEFAULT_CHECK_TIMEOUT_MS = 5 * 60_000

export function checkSpecFromFlags(lists: Record<string, string[]>, flags: Record<string, string | boolean | undefined>): CheckSpec {
  const timeout = flags['check-timeout']
  return {
    sql: lists['check-sql'] ?? [],
    cmd: lists['check-cmd'] ?? [],
    url: lists['check-url'] ?? [],
    timeoutMs: typeof timeout === 'string' ? parseDuration(timeout, '--check-timeout') : DEFAULT_CHECK_TIMEOUT_MS,
  }
}

export const hasOperatorChecks = (spec: CheckSpec) => spec.sql.length + spec.cmd.length + spec.url.length > 0
