import { runtimeError } from '../cli/errors.ts'
import { psql } from './client.ts'
import { withDatabase, type PgConnection } from './connection.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** How long the swap waits for a lock on the databases' catalog rows. */
const SWAP_LOCK_WAIT = '30s'
/** Before each of the swap's statements: another session's open ALTER DATABASE or GRANT on the target holds its catalog row, and an unbounded wait is a restore that hangs at its last step. */
const BOUNDED = `SET lock_timeout = '${SWAP_LOCK_WAIT}';\n`

/** A lock wait that ran out: another session holds the target. */
function lockedTarget(err: unknown, target: string): unknown {
  if (!/lock timeout/i.test((err as Error)?.message ?? '')) return err
  return runtimeError(
    `another session holds the database ${target} (an open ALTER DATABASE, GRANT or COMMENT on it?); the swap waited ${SWAP_LOCK_WAIT} and changed nothing`,
    'find it in pg_locks / pg_stat_activity, let it finish or end it, then restore again',
  )
}

/**
 * Gives a freshly restored database the database-level properties of the
 * one it replaces, which pg_dump without --create does not carry:
 * per-database settings (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE
 * … SET), the grants on the database itself and its comment. Owner,
 * encoding and locale are set when it is created; the connection limit
 * only at the swap (swapDatabases), after the checks have connected.
 */
export async function copyDatabaseProperties(conn: PgConnection, from: string, to: string): Promise<void> {
  await psql(
    withDatabase(conn, 'postgres'),
    `SELECT CASE WHEN r.setrole = 0
                 THEN format('ALTER DATABASE %I SET %I = %s', :'to', k.name, k.value)
                 ELSE format('ALTER ROLE %I IN DATABASE %I SET %I = %s', pg_get_userbyid(r.setrole), :'to', k.name, k.value)
            END
       FROM pg_db_role_setting r CROSS JOIN LATERAL unnest(r.setconfig) AS s
            CROSS JOIN LATERAL (SELECT split_part(s, '=', 1) AS name, substr(s, strpos(s, '=') + 1) AS raw) AS p
            -- List settings are stored as a list of already-quoted elements ("$user", public): passed as they
            -- are, as pg_dumpall does; quoted as one literal they would become a single bogus element.
            CROSS JOIN LATERAL (SELECT p.name, CASE WHEN p.name IN ('search_path', 'temp_tablespaces', 'local_preload_libraries',
                                                          'session_preload_libraries', 'shared_preload_libraries', 'unix_socket_directories')
                                                    THEN p.raw ELSE quote_literal(p.raw) END AS value) AS k
      WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = :'from')
\\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'to')
  FROM pg_database WHERE datname = :'from' AND datacl IS NOT NULL
\\gexec
SELECT format('GRANT %s ON DATABASE %I TO %s', a.privilege_type, :'to',
              CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
  FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) AS a
 WHERE d.datname = :'from'
\\gexec
SELECT format('COMMENT ON DATABASE %I IS %L', :'to', c.text)
  FROM pg_database d CROSS JOIN LATERAL (SELECT shobj_description(d.oid, 'pg_database') AS text) AS c
 WHERE d.datname = :'from' AND c.text IS NOT NULL
\\gexec
`,
    { from, to },
    'copying database settings, grants and comment',
  )
}

/**
 * Puts `replacement` in place of `target` in one transaction, keeping
 * the old database as `kept`, so a bad restore is undone by renaming
 * back. Sessions on `target` are ended first (the application must be
 * stopped for a restore anyway) and new ones refused meanwhile.
 */
export async function swapDatabases(conn: PgConnection, target: string, replacement: string, kept: string): Promise<void> {
  const admin = withDatabase(conn, 'postgres')
  const vars = { target, replacement, kept }
  await psql(admin, `${BOUNDED}ALTER DATABASE :"target" WITH ALLOW_CONNECTIONS false;\n`, vars, 'closing the target database to new sessions').catch((err: unknown) => {
    throw lockedTarget(err, target)
  })
  try {
    for (let attempt = 0; ; attempt++) {
      const others = await psql(
        admin,
        `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :'target' AND pid <> pg_backend_pid();\n`,
        vars,
        'ending sessions on the target database',
      )
      if (others.trim() === '0') break
      if (attempt >= 20) throw runtimeError(`sessions on ${target} would not end`, 'stop the application, then restore again')
      await sleep(250)
    }
    await psql(
      admin,
      // The replaced database's connection limit comes last, in the same transaction: set earlier,
      // a limit of 0 or 1 kept a non-superuser's checks out of the restored database.
      `${BOUNDED}BEGIN;
ALTER DATABASE :"target" RENAME TO :"kept";
ALTER DATABASE :"replacement" RENAME TO :"target";
SELECT format('ALTER DATABASE %I CONNECTION LIMIT %s', :'target', datconnlimit)
  FROM pg_database WHERE datname = :'kept' AND datconnlimit <> -1
\\gexec
COMMIT;
`,
      vars,
      'swapping the restored database in',
    )
  } catch (err) {
    await psql(admin, `${BOUNDED}ALTER DATABASE :"target" WITH ALLOW_CONNECTIONS true;\n`, vars).catch(() => {})
    throw lockedTarget(err, target)
  }
  await psql(admin, `${BOUNDED}ALTER DATABASE :"kept" WITH ALLOW_CONNECTIONS true;\n`, vars, 'reopening the kept database')
}

export async function renameDatabase(conn: PgConnection, from: string, to: string): Promise<void> {
  await psql(withDatabase(conn, 'postgres'), 'ALTER DATABASE :"from" RENAME TO :"to";\n', { from, to }, 'renaming the restored database')
}
