import type { ManifestFile, PostgresDumped, TableCount } from '../artifact/manifest.ts'
import { POSTGRES_DUMP_ZST_FILE, ROLES_FILE } from '../artifact/naming.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { storeEncoded, type Encoding } from '../pipeline/encode.ts'
import { allInOrder } from '../pipeline/in-order.ts'
import { checkReachable, toolVersion } from '../postgres/client.ts'
import { describeTarget, type PgConnection } from '../postgres/connection.ts'
import { dumpDatabase } from '../postgres/dump.ts'
import { dumpRoles } from '../postgres/roles.ts'
import { serverInfo } from '../postgres/server.ts'
import { countRows, exportSnapshot } from '../postgres/snapshot.ts'
import type { ArtifactWriter } from '../storage/store.ts'

export type PostgresPlan = { run: true } | { run: false; reason: string }

/** The guide's double opt-in, as a pure decision with an explanation. */
export function planPostgres(include: boolean, enable: boolean): PostgresPlan {
  if (!include) return { run: false, reason: 'not requested (pass --include-postgres or set INCLUDE_POSTGRES=true)' }
  if (!enable) {
    return { run: false, reason: 'requested, but the dump hook is off (set ENABLE_POSTGRES_DUMP=true to enable it)' }
  }
  return { run: true }
}

export async function checkPostgresTools(conn: PgConnection, reporter: Reporter): Promise<string> {
  // Independent checks, run together: each is a child process and a round trip.
  const [version] = await allInOrder([toolVersion(conn, 'pg_dump'), checkReachable(conn)])
  reporter.line(`postgres: dump ${describeTarget(conn.target)} with ${version}`)
  return version
}

export async function dumpPostgres(
  conn: PgConnection,
  pgDumpVersion: string,
  writer: ArtifactWriter,
  encryption: Omit<Encoding, 'compress'>,
  lockWaitTimeoutMs: number,
  withRolePasswords: boolean,
  reporter: Reporter,
): Promise<{ files: ManifestFile[]; section: PostgresDumped }> {
  // Three round trips that need nothing of each other, run together (each is a child process).
  const held = exportSnapshot(conn)
  held.catch(() => {}) // observed below; failing before the others settle must not count as unhandled
  let info: Awaited<ReturnType<typeof serverInfo>>
  let rolesText: string
  try {
    ;[info, rolesText] = await allInOrder([serverInfo(conn), dumpRoles(conn, withRolePasswords)])
  } catch (err) {
    // The snapshot's session waits on its stdin: it must not keep this process alive.
    await held.then((s) => s.release(), () => {})
    throw err
  }
  const snapshot = await held
  reporter.line(`postgres: dumping database ${info.database} (server ${info.serverVersion})`)
  let dump: ManifestFile
  let tables: TableCount[]
  try {
    ;[dump, tables] = await Promise.all([
      dumpDatabase(
        conn,
        (stdout) =>
          storeEncoded(writer, POSTGRES_DUMP_ZST_FILE, stdout, { ...encryption, compress: true }, conn.env, (bytes) =>
            reporter.progress(`dumping database (${encryption.recipients ? 'compressed, encrypted' : 'compressed'})`, bytes),
            // pg_database_size counts indexes and free space a dump leaves out, but a dump can
            // hold more than the heap (TOAST compressed by pglz, hex bytea): half as much again.
            info.sizeBytes === undefined ? undefined : Math.ceil(info.sizeBytes * 1.5),
          ),
        { snapshot: snapshot.id, lockWaitTimeoutMs },
      ),
      countRows(conn, snapshot.id, lockWaitTimeoutMs),
    ])
  } finally {
    await snapshot.release()
  }
  reporter.endProgress()
  reporter.line(`postgres: ${formatBytes(dump.size)} sha256 ${dump.sha256}`)
  const rolesOut = storeEncoded(writer, ROLES_FILE, 'pipe', { ...encryption, compress: false }, conn.env)
  rolesOut.stdin!.end(rolesText)
  const roles = await rolesOut.done
  reporter.line(`postgres: roles ${withRolePasswords ? 'with' : 'without'} password hashes (${formatBytes(roles.size)})`)
  return {
    files: [dump, roles],
    section: {
      status: 'dumped',
      file: dump.path,
      format: 'custom',
      compression: 'zstd',
      database: info.database,
      encoding: info.encoding,
      collate: info.collate,
      ctype: info.ctype,
      ...(info.owner ? { owner: info.owner } : {}),
      ...(info.localeProvider === 'icu' ? { localeProvider: 'icu' as const, iculocale: info.iculocale ?? '' } : {}),
      serverVersion: info.serverVersion,
      pgDumpVersion,
      tables,
      roles: { file: roles.path, passwords: withRolePasswords },
    },
  }
}

