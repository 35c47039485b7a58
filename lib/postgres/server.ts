import { runtimeError } from '../cli/errors.ts'
import { CONNECT_FIX, psql } from './client.ts'
import { withDatabase, type PgConnection } from './connection.ts'

/** The database's own properties: a plain pg_dump does not carry them, so the manifest must. */
export interface DatabaseSettings {
  encoding: string
  collate: string
  ctype: string
  /** 'icu' only where the server uses ICU for this database (PostgreSQL 15+). */
  localeProvider?: 'libc' | 'icu'
  iculocale?: string
  owner?: string
}

export interface ServerInfo extends DatabaseSettings {
  serverVersion: string
  database: string
  /** pg_database_size: about what a dump will hold (sizes a bucket upload's parts). */
  sizeBytes?: number
}

/**
 * The row is read as JSON so that columns a server version lacks
 * (datlocprovider before 15, daticulocale renamed datlocale in 17) are
 * simply absent rather than a query error.
 */
export async function serverInfo(conn: PgConnection): Promise<ServerInfo> {
  const out = await psql(
    conn,
    `SELECT json_build_object('serverVersion', current_setting('server_version'), 'encoding', pg_encoding_to_char(d.encoding),
                              'owner', pg_get_userbyid(d.datdba), 'size', pg_database_size(d.oid), 'row', to_jsonb(d))
       FROM pg_database d WHERE datname = current_database();\n`,
    {},
    'connecting to PostgreSQL',
  )
  let info: { serverVersion?: string; encoding?: string; owner?: string; size?: unknown; row?: Record<string, unknown> }
  try {
    info = JSON.parse(out)
  } catch {
    throw runtimeError('could not read the server version from PostgreSQL', CONNECT_FIX)
  }
  const row = info.row ?? {}
  const text = (v: unknown) => (typeof v === 'string' ? v : '')
  if (!info.serverVersion || !info.encoding || typeof row.datname !== 'string') {
    throw runtimeError('could not read the server version from PostgreSQL', CONNECT_FIX)
  }
  const icu = row.datlocprovider === 'i'
  return {
    serverVersion: info.serverVersion,
    database: row.datname,
    encoding: info.encoding,
    collate: text(row.datcollate),
    ctype: text(row.datctype),
    localeProvider: icu ? 'icu' : 'libc',
    ...(icu ? { iculocale: text(row.daticulocale ?? row.datlocale) } : {}),
    ...(info.owner ? { owner: info.owner } : {}),
    ...(typeof info.size === 'number' ? { sizeBytes: info.size } : {}),
  }
}

export async function databaseExists(conn: PgConnection, name: string): Promise<boolean> {
  const out = await psql(withDatabase(conn, 'postgres'), "SELECT count(*) FROM pg_database WHERE datname = :'name';\n", { name })
  return out.trim() === '1'
}

/**
 * The owner of an existing database, read from the catalog through the
 * administrative connection: the database itself may be closed to new
 * sessions (ALLOW_CONNECTIONS false, to keep the application out during a
 * restore, or left so by a swap cut short).
 */
export async function databaseOwner(conn: PgConnection, name: string): Promise<string | undefined> {
  const out = await psql(withDatabase(conn, 'postgres'), "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'name';\n", { name }, 'reading the database owner')
  return out.trim() || undefined
}

/**
 * Recreates a lost database with the encoding, locale (and ICU locale)
 * and owner it had: created with the server's defaults instead, text that
 * fitted before may no longer fit, or sort differently. template0 allows
 * any encoding. A recorded owner that no longer exists is left out.
 */
export async function createDatabase(conn: PgConnection, name: string, settings: DatabaseSettings): Promise<void> {
  const admin = withDatabase(conn, 'postgres')
  const owner = settings.owner && (await roleExists(admin, settings.owner)) ? ' OWNER :"owner"' : ''
  const icu = settings.localeProvider === 'icu' ? " LOCALE_PROVIDER icu ICU_LOCALE :'iculocale'" : ''
  await psql(
    admin,
    `CREATE DATABASE :"name" TEMPLATE template0 ENCODING :'encoding' LC_COLLATE :'collate' LC_CTYPE :'ctype'${icu}${owner};\n`,
    { name, encoding: settings.encoding, collate: settings.collate, ctype: settings.ctype, iculocale: settings.iculocale ?? '', owner: settings.owner ?? '' },
  )
}

export async function roleExists(conn: PgConnection, role: string): Promise<boolean> {
  const out = await psql(withDatabase(conn, 'postgres'), "SELECT count(*) FROM pg_roles WHERE rolname = :'role';\n", { role })
  return out.trim() === '1'
}

/** Drops a database we created ourselves (a drill's scratch copy); FORCE ends sessions a check left open. */
export async function dropDatabase(conn: PgConnection, name: string): Promise<void> {
  await psql(withDatabase(conn, 'postgres'), 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);\n', { name })
}
