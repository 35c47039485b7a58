import { runtimeError, type DrError } from '../cli/errors.ts'
import { formatDuration } from '../policy/duration.ts'

/**
 * A lock the backup waited for longer than --lock-wait-timeout, in the
 * server's words. pg_dump enforces its --lock-wait-timeout with
 * statement_timeout around each LOCK TABLE ("canceling statement due to
 * statement timeout ... Query was: LOCK TABLE t"); the row counts use
 * lock_timeout ("canceling statement due to lock timeout").
 */
const TIMED_OUT = /canceling statement due to (lock timeout|statement timeout)/i

/** Pure: the one line for a lock wait that ran out, or null when `text` says something else. */
export function lockWaitFailure(text: string, timeoutMs: number): DrError | null {
  const m = TIMED_OUT.exec(text)
  const table = /LOCK TABLE (\S+)/.exec(text)?.[1]
  // A statement timeout is ours only around a LOCK TABLE: pg_dump sets none elsewhere.
  if (!m || (m[1]!.toLowerCase() === 'statement timeout' && !table)) return null
  return runtimeError(
    `pg_dump could not lock ${table ?? 'a table'} within ${formatDuration(timeoutMs)}: another session holds an exclusive lock`,
    'run again later, or raise --lock-wait-timeout (PG_LOCK_WAIT_TIMEOUT)',
  )
}
