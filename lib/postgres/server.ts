import { runtimeError } from '../cli/errors.ts'
import { CONNECT_FIX, psql } from './client.ts'
import { withDatabase, type PgConnection } from './connection.ts'

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


/** Drops a database we created ourselves (a drill's scratch copy); FORCE ends sessions a check left open. */
export async function dropDatabase(conn: PgConnection, name: string): Promise<void> {
  await psql(withDatabase(conn, 'postgres'), 'DROP DATABASE IF EXISTS :"name" WITH (FORCE);\n', { name })
}
