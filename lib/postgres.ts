import { spawn, type ChildProcessByStdio } from 'node:child_process'
import type { Readable } from 'node:stream'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { $ } from 'zx'
import { DigestStream, type Digest } from './checksum.ts'
import { onInterrupt } from './cli.ts'
import { fsyncFile } from './durable.ts'
import { runtimeError, usageError, verificationError } from './errors.ts'
import { oneLine, redact } from './redact.ts'

/**
 * Where we connect, in terms safe to print: never the password. The
 * libpq defaults apply to anything left undefined.
 */
export interface PgTarget {
  host?: string
  port?: string
  user?: string
  database?: string
}

export interface PgConnection {
  /** Environment for pg_dump/psql/pg_restore: credentials travel here, never on argv. */
  env: NodeJS.ProcessEnv
  target: PgTarget
  /** Values to scrub from anything we print. */
  secrets: string[]
}

// DATABASE_URL query parameters we can hand to libpq as environment.
const URL_PARAM_ENV: Record<string, string> = {
  host: 'PGHOST',
  hostaddr: 'PGHOSTADDR',
  port: 'PGPORT',
  user: 'PGUSER',
  password: 'PGPASSWORD',
  dbname: 'PGDATABASE',
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  application_name: 'PGAPPNAME',
  options: 'PGOPTIONS',
  target_session_attrs: 'PGTARGETSESSIONATTRS',
}

/** Translates DATABASE_URL into libpq variables so it never reaches a command line. */
export function parseDatabaseUrl(url: string): Record<string, string> {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    // The URL may hold a password: never echo it.
    throw usageError('DATABASE_URL is not a valid URL', 'use postgresql://user@host:port/dbname')
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw usageError(`DATABASE_URL must start with postgresql://, not ${parsed.protocol}//`, 'use postgresql://user@host:port/dbname')
  }
  const vars: Record<string, string> = {}
  if (parsed.hostname) vars.PGHOST = decodeURIComponent(parsed.hostname).replace(/^\[(.*)\]$/, '$1')
  if (parsed.port) vars.PGPORT = parsed.port
  if (parsed.username) vars.PGUSER = decodeURIComponent(parsed.username)
  if (parsed.password) vars.PGPASSWORD = decodeURIComponent(parsed.password)
  const db = decodeURIComponent(parsed.pathname.replace(/^\//, ''))
  if (db) vars.PGDATABASE = db
  for (const [key, value] of parsed.searchParams) {
    const name = URL_PARAM_ENV[key]
    if (!name) {
      throw usageError(`DATABASE_URL parameter '${key}' is not supported`, 'set the matching PG* environment variable instead')
    }
    vars[name] = value
  }
  return vars
}

export function connectionFromEnv(env: NodeJS.ProcessEnv): PgConnection {
  const childEnv: NodeJS.ProcessEnv = { ...env }
  const secrets: string[] = []
  if (env.DATABASE_URL) {
    secrets.push(env.DATABASE_URL)
    Object.assign(childEnv, parseDatabaseUrl(env.DATABASE_URL))
  }
  if (childEnv.PGPASSWORD) secrets.push(childEnv.PGPASSWORD)
  // A dead server must fail a 3 a.m. run promptly, not hang it.
  childEnv.PGCONNECT_TIMEOUT ??= '10'
  return {
    env: childEnv,
    secrets,
    target: {
      host: childEnv.PGHOST,
      port: childEnv.PGPORT,
      user: childEnv.PGUSER,
      database: childEnv.PGDATABASE,
    },
  }
}

/** A copy of the connection aimed at another database (e.g. `postgres` for CREATE DATABASE). */
export function withDatabase(conn: PgConnection, database: string): PgConnection {
  return {
    env: { ...conn.env, PGDATABASE: database },
    secrets: conn.secrets,
    target: { ...conn.target, database },
  }
}

export function describeTarget(target: PgTarget): string {
  const host = target.host ?? 'local socket'
  const port = target.port ? `:${target.port}` : ''
  const user = target.user ? `${target.user}@` : ''
  return `${user}${host}${port}/${target.database ?? '(libpq default database)'}`
}

const notFound = (cmd: string) =>
  runtimeError(`${cmd} not found on PATH`, 'install the PostgreSQL client tools (apt-get install postgresql-client)')

interface CommandResult {
  exitCode: number
  stdout: string
  stderr: string
}

async function run(conn: PgConnection, cmd: string, args: string[], input?: string): Promise<CommandResult> {
  const child = $({ env: conn.env, quiet: true, nothrow: true, input })`${cmd} ${args}`
  // An interrupted run must not leave e.g. pg_restore going on to commit behind our back.
  const release = onInterrupt(async () => {
    await child.kill('SIGTERM').catch(() => {})
  })
  const out = await child.finally(release)
  if (out.exitCode === 127) throw notFound(cmd)
  return { exitCode: out.exitCode ?? 1, stdout: out.stdout, stderr: out.stderr }
}

function failed(conn: PgConnection, what: string, result: { exitCode: number; stderr: string }, fix: string) {
  const detail = oneLine(redact(result.stderr, conn.secrets)) || `exit status ${result.exitCode}`
  return runtimeError(`${what} failed: ${detail}`, fix)
}

const CONNECT_FIX = 'check PGHOST/PGPORT/PGUSER/PGDATABASE (or DATABASE_URL) and that the server is running'

export async function toolVersion(conn: PgConnection, tool: 'pg_dump' | 'pg_restore' | 'psql'): Promise<string> {
  const result = await run(conn, tool, ['--version'])
  if (result.exitCode !== 0) throw failed(conn, `${tool} --version`, result, 'reinstall the PostgreSQL client tools')
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

/** The database's own properties: a plain pg_dump does not carry them, so the manifest must. */
export interface DatabaseSettings {
  encoding: string
  collate: string
  ctype: string
}

export interface ServerInfo extends DatabaseSettings {
  serverVersion: string
  database: string
}

export async function serverInfo(conn: PgConnection): Promise<ServerInfo> {
  const out = await psql(
    conn,
    `SELECT current_setting('server_version'), datname, pg_encoding_to_char(encoding), datcollate, datctype
       FROM pg_database WHERE datname = current_database();\n`,
    {},
    'connecting to PostgreSQL',
  )
  const [serverVersion, database, encoding, collate, ctype] = out.replace(/\n$/, '').split('\t')
  if (!serverVersion || !database || !encoding) {
    throw runtimeError('could not read the server version from PostgreSQL', CONNECT_FIX)
  }
  return { serverVersion, database, encoding, collate: collate ?? '', ctype: ctype ?? '' }
}

export async function databaseExists(conn: PgConnection, name: string): Promise<boolean> {
  const out = await psql(withDatabase(conn, 'postgres'), "SELECT count(*) FROM pg_database WHERE datname = :'name';\n", { name })
  return out.trim() === '1'
}

/**
 * Recreates a lost database with the encoding and locale it had: created
 * with the server's defaults instead, text that fitted before may no
 * longer fit, or sort differently. template0 allows any encoding.
 */
export async function createDatabase(conn: PgConnection, name: string, settings: DatabaseSettings): Promise<void> {
  await psql(
    withDatabase(conn, 'postgres'),
    `CREATE DATABASE :"name" TEMPLATE template0 ENCODING :'encoding' LC_COLLATE :'collate' LC_CTYPE :'ctype';\n`,
    { name, ...settings },
  )
}

/**
 * Streams `pg_dump -Fc` straight to `dest`, hashing on the way: the dump
 * is never held in memory and never read twice. The file is fsynced
 * before the digest is returned.
 */
export async function dumpDatabase(
  conn: PgConnection,
  dest: string,
  onProgress?: (bytes: number) => void,
): Promise<Digest> {
  const child = spawn('pg_dump', ['--format=custom', '--no-password'], {
    env: conn.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  // On Ctrl-C or SIGTERM, do not leave pg_dump holding locks on the server.
  const release = onInterrupt(() => {
    child.kill('SIGTERM')
  })
  try {
    return await finishDump(conn, child, dest, onProgress)
  } finally {
    release()
  }
}

async function finishDump(
  conn: PgConnection,
  child: ChildProcessByStdio<null, Readable, Readable>,
  dest: string,
  onProgress?: (bytes: number) => void,
): Promise<Digest> {
  const stderr = collectTail(child.stderr)
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)))
  })
  const digester = new DigestStream(onProgress)
  const written = pipeline(child.stdout, digester, createWriteStream(dest, { flags: 'wx', mode: 0o600 }))
  let exitCode: number
  try {
    ;[exitCode] = await Promise.all([exited, written])
  } catch (err) {
    // A full disk must not leave pg_dump running against the server.
    child.kill('SIGTERM')
    throw (err as NodeJS.ErrnoException).syscall?.startsWith('spawn') ? notFound('pg_dump') : err
  }
  if (exitCode !== 0) throw failed(conn, 'pg_dump', { exitCode, stderr: stderr() }, CONNECT_FIX)
  await fsyncFile(dest)
  return digester.digest()
}

/**
 * Reads the archive's table of contents with the pg_restore that will do
 * the restore: a dump from a newer pg_dump, or one damaged before its
 * checksum was taken, fails here, before the database is touched.
 */
export async function checkArchive(conn: PgConnection, dumpPath: string): Promise<void> {
  // The table of contents can be long; only the verdict is wanted.
  const out = await run(conn, 'pg_restore', ['--list', '--file=/dev/null', dumpPath])
  if (out.exitCode !== 0) {
    throw verificationError(
      `the dump cannot be read by this pg_restore: ${oneLine(redact(out.stderr, conn.secrets))}`,
      'use a pg_restore at least as new as the pg_dump named in manifest.json, or another backup',
    )
  }
}

/**
 * Replaces, inside `database`, every object the dump contains (drop then
 * recreate), in one transaction: a failure part-way leaves the database
 * as it was. Objects that are not in the dump are left alone.
 */
export async function restoreDatabase(conn: PgConnection, dumpPath: string, database: string): Promise<void> {
  const args = [
    '--clean',
    '--if-exists',
    '--single-transaction',
    '--exit-on-error',
    '--no-password',
    `--dbname=${conninfoQuote('dbname', database)}`,
    dumpPath,
  ]
  const result = await run(conn, 'pg_restore', args)
  if (result.exitCode !== 0) {
    throw failed(conn, 'pg_restore', result, 'the database was left unchanged (single transaction); fix the cause and re-run')
  }
}

/** libpq conninfo value quoting: a name containing '=' or spaces must not be misread. */
export function conninfoQuote(key: string, value: string): string {
  return `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
}

/** Keeps the last few KiB of a child's stderr: enough to explain a failure, bounded memory. */
function collectTail(stream: NodeJS.ReadableStream, limit = 16 * 1024): () => string {
  let tail = ''
  stream.setEncoding('utf8')
  stream.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-limit)
  })
  return () => tail
}
