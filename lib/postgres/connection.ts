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

const BAD_URL = () => usageError('DATABASE_URL is not a valid URL', 'use postgresql://user:password@host:port/dbname (percent-encode @ / ? # in the password)')

/**
 * Translates DATABASE_URL into libpq variables so it never reaches a
 * command line. Parsed as libpq parses a connection URI (fe-connect.c),
 * not as a web URL: `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`.
 * The user part ends at the first '@' before any '/', so a password may
 * hold '?', '#' or ':'; an empty host with a user (`app@/db?host=/run/postgresql`)
 * and several hosts (`h1:5432,h2:5433`) are taken as psql takes them; every
 * part is percent-decoded, '+' stays '+'. Nothing of the URL is echoed in
 * an error but the name of a query parameter that is a plain word.
 */
export function parseDatabaseUrl(url: string): Record<string, string> {
  const prefix = /^postgres(?:ql)?:\/\//.exec(url)?.[0]
  if (prefix === undefined) {
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]
    if (scheme !== undefined && !/^postgres(ql)?$/.test(scheme)) {
      throw usageError(`DATABASE_URL must start with postgresql://, not ${scheme.slice(0, 20)}://`, 'use postgresql://user@host:port/dbname')
    }
    throw BAD_URL()
  }
  let rest = url.slice(prefix.length)
  const vars: Record<string, string> = {}
  const beforeSlash = rest.split('/')[0]!
  const at = beforeSlash.indexOf('@')
  if (at !== -1) {
    const userinfo = rest.slice(0, at)
    rest = rest.slice(at + 1)
    const colon = userinfo.indexOf(':')
    const user = colon === -1 ? userinfo : userinfo.slice(0, colon)
    const password = colon === -1 ? '' : userinfo.slice(colon + 1)
    if (user) vars.PGUSER = decodePart(user, 'user name')
    if (password) vars.PGPASSWORD = decodePart(password, 'password')
  }
  const hostEnd = rest.search(/[/?]/)
  const hostspec = hostEnd === -1 ? rest : rest.slice(0, hostEnd)
  rest = hostEnd === -1 ? '' : rest.slice(hostEnd)
  if (hostspec) {
    const hosts: string[] = []
    const ports: string[] = []
    for (const one of hostspec.split(',')) {
      const hp = /^(\[[^\]]+\]|[^:[\]]*)(?::(\d*))?$/.exec(one)
      if (!hp) throw BAD_URL()
      hosts.push(decodePart(hp[1]!.replace(/^\[(.*)\]$/, '$1'), 'host'))
      ports.push(hp[2] ?? '')
    }
    if (hosts.some((h) => h !== '')) vars.PGHOST = hosts.join(',')
    if (ports.some((p) => p !== '')) vars.PGPORT = ports.join(',')
  }
  const q = rest.indexOf('?')
  const path = (q === -1 ? rest : rest.slice(0, q)).replace(/^\//, '')
  const db = decodePart(path, 'database name')
  if (db) vars.PGDATABASE = db
  const query = q === -1 ? '' : rest.slice(q + 1)
  for (const pair of query === '' ? [] : query.split('&')) {
    const eq = pair.indexOf('=')
    if (eq === -1 || pair.indexOf('=', eq + 1) !== -1) throw usageError('DATABASE_URL has a query parameter that is not key=value', 'write each parameter as key=value, joined by &')
    const key = decodePart(pair.slice(0, eq), 'parameter names')
    const name = URL_PARAM_ENV[key]
    if (!name) {
      const shown = /^[a-z_]{1,40}$/.test(key) ? ` ${quoteValue(key)}` : ''
      throw usageError(`DATABASE_URL parameter${shown} is not supported`, 'set the matching PG* environment variable instead')
    }
    vars[name] = decodePart(pair.slice(eq + 1), `${key} parameter`)
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
