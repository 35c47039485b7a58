import { mkdir, readdir, rm, stat } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { createDestination, planDestination } from '../artifact/destination.ts'
import { exists, publishDir, writeFileSynced } from '../artifact/durable.ts'
import {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  manifestSumLine,
  serializeManifest,
  type Manifest,
  type ManifestFile,
  type PostgresDumped,
  type PostgresSection,
  type PostgresSkipped,
  type TableCount,
} from '../artifact/manifest.ts'
import { artifactName, isPartialName, MANIFEST_FILE, MANIFEST_SUM_FILE, partialName, POSTGRES_DUMP_ZST_FILE, ROLES_FILE } from '../artifact/naming.ts'
import { runtimeError } from '../cli/errors.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { critical, onInterrupt } from '../cli/signals.ts'
import { digestBuffer, type Digest } from '../pipeline/checksum.ts'
import { allInOrder } from '../pipeline/in-order.ts'
import { checkReachable, toolVersion } from '../postgres/client.ts'
import { connectionFromEnv, describeTarget, type PgConnection } from '../postgres/connection.ts'
import { dumpDatabase } from '../postgres/dump.ts'
import { serverInfo } from '../postgres/server.ts'
import { dumpRoles } from '../postgres/roles.ts'
import { countRows, exportSnapshot } from '../postgres/snapshot.ts'
import { TOOL } from '../version.ts'

export interface BackupOptions {
  output: string
  dryRun: boolean
  /** --include-postgres or INCLUDE_POSTGRES=true */
  includePostgres: boolean
  /** ENABLE_POSTGRES_DUMP=true: the second, deliberate opt-in of the guide. */
  enablePostgresDump: boolean
  /** pg_dump --lock-wait-timeout, in ms. */
  lockWaitTimeoutMs: number
  /** BACKUP_ROLE_PASSWORDS=true: keep the roles' password hashes in the artifact. */
  rolePasswords: boolean
  now: Date
  env: NodeJS.ProcessEnv
}

export type PostgresPlan = { run: true } | { run: false; reason: string }

/** The guide's double opt-in, as a pure decision with an explanation. */
export function planPostgres(include: boolean, enable: boolean): PostgresPlan {
  if (!include) return { run: false, reason: 'not requested (pass --include-postgres or set INCLUDE_POSTGRES=true)' }
  if (!enable) {
    return { run: false, reason: 'requested, but the dump hook is off (set ENABLE_POSTGRES_DUMP=true to enable it)' }
  }
  return { run: true }
}

export interface BackupResult {
  dryRun: boolean
  artifact: string
  path: string
  postgres: PostgresSection | { status: 'planned' }
  files: ManifestFile[]
  bytes: number
  durationMs: number
}

async function warnAboutLeftovers(output: string, reporter: Reporter): Promise<void> {
  const stale = (await readdir(output)).filter(isPartialName)
  if (stale.length > 0) {
    reporter.warn(
      `${stale.length} incomplete backup(s) from interrupted runs in ${output} (${stale.join(', ')}); they are not restorable, remove them with rm -rf`,
    )
  }
}

async function checkPostgresTools(conn: PgConnection, reporter: Reporter): Promise<string> {
  // Independent checks, run together: each is a child process and a round trip.
  const [version] = await allInOrder([toolVersion(conn, 'pg_dump'), checkReachable(conn)])
  reporter.line(`postgres: dump ${describeTarget(conn.target)} with ${version}`)
  return version
}

async function dumpPostgres(
  conn: PgConnection,
  pgDumpVersion: string,
  dir: string,
  lockWaitTimeoutMs: number,
  withRolePasswords: boolean,
  reporter: Reporter,
): Promise<{ files: ManifestFile[]; section: PostgresDumped }> {
  const info = await serverInfo(conn)
  reporter.line(`postgres: dumping database ${info.database} (server ${info.serverVersion})`)
  const snapshot = await exportSnapshot(conn)
  let digest: Digest
  let tables: TableCount[]
  try {
    ;[digest, tables] = await Promise.all([
      dumpDatabase(conn, join(dir, POSTGRES_DUMP_ZST_FILE), {
        snapshot: snapshot.id,
        lockWaitTimeoutMs,
        onProgress: (bytes) => reporter.progress('dumping database (compressed)', bytes),
      }),
      countRows(conn, snapshot.id, lockWaitTimeoutMs),
    ])
  } finally {
    await snapshot.release()
  }
  reporter.endProgress()
  reporter.line(`postgres: ${formatBytes(digest.size)} sha256 ${digest.sha256}`)
  const roles = await dumpRoles(conn, join(dir, ROLES_FILE), withRolePasswords)
  reporter.line(`postgres: roles ${withRolePasswords ? 'with' : 'without'} password hashes (${formatBytes(roles.size)})`)
  return {
    files: [
      { path: POSTGRES_DUMP_ZST_FILE, ...digest },
      { path: ROLES_FILE, ...roles },
    ],
    section: {
      status: 'dumped',
      file: POSTGRES_DUMP_ZST_FILE,
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
      roles: { file: ROLES_FILE, passwords: withRolePasswords },
    },
  }
}

/** How many following seconds a backup tries when its name is taken by a run in the same second. */
const NAME_ATTEMPTS = 3

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Claims an artifact name by creating its hidden work directory. Two
 * backups started in the same second (the guide runs its steps back to
 * back) get consecutive seconds; a finished artifact is never touched.
 */
async function claimName(output: string, start: Date): Promise<{ name: string; at: Date; partial: string }> {
  let at = start
  for (let attempt = 1; ; attempt++) {
    const name = artifactName(at)
    const partial = join(output, partialName(name))
    if (!(await exists(join(output, name)))) {
      try {
        await mkdir(partial, { mode: 0o700 })
        return { name, at, partial }
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
    }
    if (attempt >= NAME_ATTEMPTS) {
      throw runtimeError(`artifacts for ${attempt} consecutive seconds up to ${name} already exist in ${output}`, 'another backup is running or the clock jumped; run again later')
    }
    await sleep(1000 - (Date.now() % 1000) + 5)
    at = new Date()
  }
}

export async function runBackup(opts: BackupOptions, reporter: Reporter): Promise<BackupResult> {
  const started = Date.now()
  const pgPlan = planPostgres(opts.includePostgres, opts.enablePostgresDump)
  const destination = await planDestination(opts.output)
  const output = destination.path
  const planned = artifactName(opts.now)

  reporter.heading(`${opts.dryRun ? 'Backup plan (dry run)' : 'Backup'}: ${join(output, planned)}`)
  reporter.line(`output: ${output}${destination.create.length === 0 ? '' : ` (will create ${destination.create.join(', ')}, mode 0700)`}`)
  let pg: { run: true; conn: PgConnection; pgDumpVersion: string } | { run: false; skipped: PostgresSkipped }
  if (pgPlan.run) {
    const conn = connectionFromEnv(opts.env)
    pg = { run: true, conn, pgDumpVersion: await checkPostgresTools(conn, reporter) }
  } else {
    pg = { run: false, skipped: { status: 'skipped', reason: pgPlan.reason } }
    reporter.line(`postgres: skipped — ${pgPlan.reason}`)
    // Asked for the database but will not get it: say so where cron mail will show it.
    if (opts.includePostgres) reporter.warn(`the database will not be backed up: ${pgPlan.reason}`)
  }

  if (opts.dryRun) {
    reporter.line('dry run: nothing was written')
    return {
      dryRun: true,
      artifact: planned,
      path: join(output, planned),
      postgres: pg.run ? { status: 'planned' } : pg.skipped,
      files: [],
      bytes: 0,
      durationMs: Date.now() - started,
    }
  }

  await createDestination(destination)
  const mode = (await stat(output)).mode & 0o777
  if (mode & 0o077) {
    reporter.warn(`${output} is accessible to other users (mode ${mode.toString(8)}); run chmod 700 ${output}`)
  }
  await warnAboutLeftovers(output, reporter)
  const { name, at, partial } = await claimName(output, opts.now)
  const finalPath = join(output, name)
  const discard = () => rm(partial, { recursive: true, force: true })
  const release = onInterrupt(discard)
  try {
    const { files, section: postgres }: { files: ManifestFile[]; section: PostgresSection } = pg.run
      ? await dumpPostgres(pg.conn, pg.pgDumpVersion, partial, opts.lockWaitTimeoutMs, opts.rolePasswords, reporter)
      : { files: [], section: pg.skipped }

    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_VERSION,
      tool: { name: TOOL.name, version: TOOL.version },
      artifact: name,
      createdAt: at.toISOString(),
      completedAt: new Date().toISOString(),
      hostname: hostname(),
      postgres,
      files,
    }
    const text = serializeManifest(manifest)
    await writeFileSynced(join(partial, MANIFEST_FILE), text)
    await writeFileSynced(join(partial, MANIFEST_SUM_FILE), manifestSumLine(digestBuffer(text).sha256))
    await critical(`publishing ${name}`, async () => {
      try {
        await publishDir(partial, finalPath, output)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOTEMPTY' || code === 'EEXIST') {
          throw runtimeError(`artifact ${name} appeared in ${output} while this backup ran`, 'another backup used the same name; run again')
        }
        throw err
      }
      // Published: the interrupt cleanup must not remove it now.
      release()
    })
    const bytes = files.reduce((sum, f) => sum + f.size, 0)
    return { dryRun: false, artifact: name, path: finalPath, postgres, files, bytes, durationMs: Date.now() - started }
  } catch (err) {
    release()
    await discard()
    throw err
  }
}
