import { runtimeError } from '../cli/errors.ts'
import { oneLine, redact } from '../cli/redact.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { clientCommand, learnClientVersion } from './client-path.ts'
import { describeTarget, type PgConnection } from './connection.ts'
import { ownSessionEnv } from './own-sessions.ts'

export const notFound = (cmd: string) =>
  runtimeError(`${cmd} not found on PATH`, 'install the PostgreSQL client tools (apt-get install postgresql-client)')

interface CommandResult {
  exitCode: number
  stdout: string
  stderr: string
}

/**
 * One short client call, its output collected (a few KiB: versions, query
 * results). Spawned directly, without a shell: each psql of a restore then
 * costs one exec, not a shell's and pg_wrapper's as well (client-path.ts).
 */
async function run(conn: PgConnection, cmd: string, args: string[], input?: string): Promise<CommandResult> {
  const env = cmd === 'psql' ? ownSessionEnv(conn) : conn.env
  const tool = spawnTool(clientCommand(cmd, conn.env), args, { env, stdin: 'pipe', stdout: 'pipe', missing: notFound(cmd) })
  const chunks: Buffer[] = []
  tool.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk))
  tool.stdin!.end(input ?? '')
  // The whole output is wanted: 'close' (which resolves exited) comes after stdout has ended.
  const exitCode = await tool.exited
  return { exitCode, stdout: Buffer.concat(chunks).toString('utf8'), stderr: tool.stderr() }
}

export function failed(conn: PgConnection, what: string, result: { exitCode: number; stderr: string }, fix: string) {
  const detail = oneLine(redact(result.stderr, conn.secrets)) || `exit status ${result.exitCode}`
  return runtimeError(`${what} failed: ${detail}`, fix)
}

export const CONNECT_FIX = 'check PGHOST/PGPORT/PGUSER/PGDATABASE (or DATABASE_URL) and that the server is running'

export async function toolVersion(conn: PgConnection, tool: 'pg_dump' | 'pg_restore' | 'psql'): Promise<string> {
  const result = await run(conn, tool, ['--version'])
  if (result.exitCode !== 0) throw failed(conn, `${tool} --version`, result, 'reinstall the PostgreSQL client tools')
  learnClientVersion(result.stdout)
  return result.stdout.trim()
}

/** Reachability without credentials, so dry runs need no secrets. */
export async function checkReachable(conn: PgConnection): Promise<void> {
  const result = await run(conn, 'pg_isready', [])
  if (result.exitCode !== 0) {
    const detail = oneLine(redact(result.stdout + result.stderr, conn.secrets))
    throw runtimeError(`PostgreSQL at ${describeTarget(conn.target)} is not accepting connections (${detail})`, CONNECT_FIX)
  }
}

/** Runs SQL from stdin so that psql variables (:'name') quote values for us. */
export async function psql(
  conn: PgConnection,
  sql: string,
  vars: Record<string, string> = {},
  what = 'psql',
): Promise<string> {
  const args = ['-X', '-A', '-t', '-q', '-w', '-v', 'ON_ERROR_STOP=1', '-F', '\t']
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`)
  const result = await run(conn, 'psql', args, sql)
  if (result.exitCode !== 0) throw failed(conn, what, result, CONNECT_FIX)
  return result.stdout
}
