import { randomBytes } from 'node:crypto'
import { runtimeError } from '../cli/errors.ts'
import { interrupted, onInterrupt } from '../cli/signals.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { clientCommand } from './client-path.ts'
import type { PgConnection } from './connection.ts'

/**
 * This run's name on the server (application_name) for its psql sessions:
 * unique per run (pid and a random part), so an interrupt can end exactly
 * the sessions this run opened. A client killed while its statement waits
 * on a lock (systemd's SIGTERM reaches psql too; psql's own SIGTERM does
 * not cancel) leaves the statement waiting on the server, where it runs
 * once the lock is released: an ALTER DATABASE … ALLOW_CONNECTIONS false
 * would close the target after the run said nothing changed, and a row
 * count would go on holding table locks.
 */
export const OWN_SESSION = `conductor-dr ${process.pid} ${randomBytes(4).toString('hex')}`

/** The CREATE DATABASE session's own name (restore-new.ts), ended with the rest. */
export const createSessionName = () => `conductor-dr create ${process.pid}`

let registered = false

const CLEANUP_SESSION = `conductor-dr cleanup ${process.pid}`

/**
 * The environment for a psql session of this run: named OWN_SESSION,
 * unless the caller named it (conductor-dr …). One opened once an
 * interrupt has arrived is the clean-up's own (dropping a scratch or
 * half-restored database) and is named apart, so it is not ended with
 * the work it cleans up after.
 */
export function ownSessionEnv(conn: PgConnection): NodeJS.ProcessEnv {
  if (!registered) {
    registered = true
    onInterrupt(() => endOwnSessions(conn))
  }
  if (conn.env.PGAPPNAME?.startsWith('conductor-dr ')) return conn.env
  return { ...conn.env, PGAPPNAME: interrupted() ? CLEANUP_SESSION : OWN_SESSION }
}

/** Ends this run's sessions still on the server (best effort, within the interrupt's deadline). */
async function endOwnSessions(conn: PgConnection): Promise<void> {
  const tool = spawnTool(
    clientCommand('psql', conn.env),
    ['-X', '-A', '-t', '-q', '-w', '-d', 'postgres', '-v', `own=${OWN_SESSION}`, '-v', `create=${createSessionName()}`],
    {
      env: { ...conn.env, PGAPPNAME: CLEANUP_SESSION, PGCONNECT_TIMEOUT: '3' },
      stdin: 'pipe',
      stdout: 'ignore',
      missing: runtimeError('psql not found on PATH', 'install the PostgreSQL client tools'),
    },
  )
  tool.stdin!.end("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND application_name IN (:'own', :'create');\n")
  await tool.exited
}
