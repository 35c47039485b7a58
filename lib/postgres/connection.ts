import { isPgIdentifier } from './identifier.ts'
import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'

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

/** A bad %-escape names the part it is in; the text itself may be a password, so it is never shown. */
function decodePart(text: string, part: string): string {
  let decoded: string
  try {
    decoded = decodeURIComponent(text)
  } catch {
    throw usageError(
      `DATABASE_URL has a malformed %-escape in its ${part}`,
      'percent-encode reserved characters in it (% as %25, @ as %40, / as %2F)',
    )
  }
  return withoutNul(decoded, part)
}

/** libpq takes C strings: a NUL would be cut there, or refused by spawn. */
function withoutNul(value: string, part: string): string {
  if (value.includes('\0')) throw usageError(`DATABASE_URL has a NUL byte (%00) in its ${part}`, 'remove it')
  return value
}

/**
 * Translates DATABASE_URL into libpq variables so it never reaches a
 * command line. Parsed as libpq parses a connection URI, not as a web URL:
 * `postgresql://[user[:password]@][host[:port][,host[:port]...]][/dbname][?param=value&...]`,
 * so an empty host with a user (`postgresql://app@/db?host=/var/run/postgresql`)
 * and several hosts (`h1:5432,h2:5433`) are taken as psql takes them.
 */
export function parseDatabaseUrl(url: string): Record<string, string> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase()
  if (scheme !== undefined && scheme !== 'postgres' && scheme !== 'postgresql') {
    throw usageError(`DATABASE_URL must start with postgresql://, not ${scheme.slice(0, 20)}://`, 'use postgresql://user@host:port/dbname')
  }
  const m = /^postgres(?:ql)?:\/\/([^/?#]*)(?:\/([^?#]*))?(?:\?([^#]*))?$/i.exec(url)
  // The URL may hold a password: never echo it.
  if (!m) throw usageError('DATABASE_URL is not a valid URL', 'use postgresql://user@host:port/dbname')
  const [, authority = '', path = '', query] = m
  const at = authority.lastIndexOf('@')
  const userinfo = at === -1 ? '' : authority.slice(0, at)
  const hostspec = at === -1 ? authority : authority.slice(at + 1)
  const vars: Record<string, string> = {}
  if (userinfo) {
    const colon = userinfo.indexOf(':')
    const user = colon === -1 ? userinfo : userinfo.slice(0, colon)
    if (user) vars.PGUSER = decodePart(user, 'user name')
    if (colon !== -1) vars.PGPASSWORD = decodePart(userinfo.slice(colon + 1), 'password')
  }
  if (hostspec) {
    const hosts: string[] = []
    const ports: string[] = []
    for (const one of hostspec.split(',')) {
      const hp = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(one)
      if (!hp) throw usageError('DATABASE_URL is not a valid URL', 'use postgresql://user@host:port/dbname (host:port, several separated by commas)')
      hosts.push(decodePart(hp[1]!, 'host').replace(/^\[(.*)\]$/, '$1'))
      ports.push(hp[2] ?? '')
    }
    if (hosts.some((h) => h !== '')) vars.PGHOST = hosts.join(',')
    if (ports.some((p) => p !== '')) vars.PGPORT = ports.join(',')
  }
  const db = decodePart(path, 'database name')
  if (db) vars.PGDATABASE = db
  for (const [key, value] of new URLSearchParams(query ?? '')) {
    const name = URL_PARAM_ENV[key]
    if (!name) {
      throw usageError(`DATABASE_URL parameter ${quoteValue(key, 40)} is not supported`, 'set the matching PG* environment variable instead')
    }
    vars[name] = withoutNul(value, `${key} parameter`)
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

/** libpq conninfo value quoting: a name containing '=' or spaces must not be misread. */
export function conninfoQuote(key: string, value: string): string {
  return `${key}='${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`
}


/** PostgreSQL cuts identifiers at 63 bytes (NAMEDATALEN - 1): a longer name would silently become another one. */
export function checkDatabaseName(name: string, what: string): string {
  if (!isPgIdentifier(name)) {
    throw usageError(`${what} ${quoteValue(name, 80)} is not a usable database name`, 'use a non-empty name of at most 63 bytes')
  }
  return name
}
