import { constants } from 'node:fs'
import { access, mkdir, readdir, rm, stat } from 'node:fs/promises'
import { hostname } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { digestBuffer } from './checksum.ts'
import { onInterrupt } from './cli.ts'
import { ensurePrivateDir, exists, publishDir, writeFileSynced } from './durable.ts'
import { inputError, runtimeError } from './errors.ts'
import {
  MANIFEST_VERSION,
  MANIFEST_FORMAT,
  manifestSumLine,
  serializeManifest,
  type Manifest,
  type ManifestFile,
  type PostgresDumped,
  type PostgresSection,
  type PostgresSkipped,
} from './manifest.ts'
import { artifactName, isPartialName, MANIFEST_FILE, MANIFEST_SUM_FILE, partialName, POSTGRES_DUMP_FILE } from './naming.ts'
import {
  checkReachable,
  connectionFromEnv,
  describeTarget,
  dumpDatabase,
  serverInfo,
  toolVersion,
  type PgConnection,
} from './postgres.ts'
import type { Reporter } from './report.ts'
import { formatBytes } from './report.ts'
import { TOOL } from './version.ts'

export interface BackupOptions {
  output: string
  dryRun: boolean
  /** --include-postgres or INCLUDE_POSTGRES=true */
  includePostgres: boolean
  /** ENABLE_POSTGRES_DUMP=true: the second, deliberate opt-in of the guide. */
  enablePostgresDump: boolean
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

/**
 * The destination must be a writable directory, or creatable: checked
 * without creating anything so that dry runs write nothing.
 */
export async function checkOutput(output: string): Promise<{ exists: boolean }> {
  let probe = resolve(output)
  let existing = true
  for (;;) {
    try {
      const st = await stat(probe)
      if (!st.isDirectory()) {
        throw inputError(
          existing ? `--output ${output} is not a directory` : `cannot create --output ${output}: ${probe} is not a directory`,
          'choose a directory for --output',
        )
      }
      break
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err
      existing = false
      const parent = dirname(probe)
      if (parent === probe) break
      probe = parent
    }
  }
  try {
    await access(probe, constants.W_OK | constants.X_OK)
  } catch {
    throw inputError(`--output ${output} is not writable (${probe})`, 'choose a writable directory or fix its permissions')
  }
  return { exists: existing }
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
  const version = await toolVersion(conn, 'pg_dump')
  await checkReachable(conn)
  reporter.line(`postgres: dump ${describeTarget(conn.target)} with ${version}`)
  return version
}

async function dumpPostgres(
  conn: PgConnection,
  pgDumpVersion: string,
  dir: string,
  reporter: Reporter,
): Promise<{ files: ManifestFile[]; section: PostgresDumped }> {
  const info = await serverInfo(conn)
  reporter.line(`postgres: dumping database ${info.database} (server ${info.serverVersion})`)
  const digest = await dumpDatabase(conn, join(dir, POSTGRES_DUMP_FILE), (bytes) => reporter.progress('dumping database', bytes))
  reporter.endProgress()
  reporter.line(`postgres: ${formatBytes(digest.size)} sha256 ${digest.sha256}`)
  return {
    files: [{ path: POSTGRES_DUMP_FILE, ...digest }],
    section: {
      status: 'dumped',
      file: POSTGRES_DUMP_FILE,
      format: 'custom',
      database: info.database,
      encoding: info.encoding,
      collate: info.collate,
      ctype: info.ctype,
      serverVersion: info.serverVersion,
      pgDumpVersion,
    },
  }
}

export async function runBackup(opts: BackupOptions, reporter: Reporter): Promise<BackupResult> {
  const started = Date.now()
  const output = resolve(opts.output)
  const name = artifactName(opts.now)
  const finalPath = join(output, name)
  const pgPlan = planPostgres(opts.includePostgres, opts.enablePostgresDump)

  reporter.heading(`${opts.dryRun ? 'Backup plan (dry run)' : 'Backup'}: ${finalPath}`)
  const { exists: outputExists } = await checkOutput(output)
  reporter.line(`output: ${output}${outputExists ? '' : ' (will be created, mode 0700)'}`)
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
      artifact: name,
      path: finalPath,
      postgres: pg.run ? { status: 'planned' } : pg.skipped,
      files: [],
      bytes: 0,
      durationMs: Date.now() - started,
    }
  }

  await ensurePrivateDir(output)
  const mode = (await stat(output)).mode & 0o777
  if (mode & 0o077) {
    reporter.warn(`${output} is accessible to other users (mode ${mode.toString(8)}); run chmod 700 ${output}`)
  }
  await warnAboutLeftovers(output, reporter)
  const alreadyExists = () =>
    runtimeError(`artifact ${name} already exists in ${output}`, 'another backup finished this second; run again')
  if (await exists(finalPath)) throw alreadyExists()

  const partial = join(output, partialName(name))
  try {
    await mkdir(partial, { mode: 0o700 })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw runtimeError(`another backup is writing ${name} right now`, 'wait for it to finish, then run again')
    }
    throw err
  }
  const discard = () => rm(partial, { recursive: true, force: true })
  const release = onInterrupt(discard)
  try {
    const { files, section: postgres }: { files: ManifestFile[]; section: PostgresSection } = pg.run
      ? await dumpPostgres(pg.conn, pg.pgDumpVersion, partial, reporter)
      : { files: [], section: pg.skipped }

    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_VERSION,
      tool: { name: TOOL.name, version: TOOL.version },
      artifact: name,
      createdAt: opts.now.toISOString(),
      completedAt: new Date().toISOString(),
      hostname: hostname(),
      postgres,
      files,
    }
    const text = serializeManifest(manifest)
    await writeFileSynced(join(partial, MANIFEST_FILE), text)
    await writeFileSynced(join(partial, MANIFEST_SUM_FILE), manifestSumLine(digestBuffer(text).sha256))
    try {
      await publishDir(partial, finalPath, output)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      throw code === 'ENOTEMPTY' || code === 'EEXIST' ? alreadyExists() : err
    }
    release()
    const bytes = files.reduce((sum, f) => sum + f.size, 0)
    return { dryRun: false, artifact: name, path: finalPath, postgres, files, bytes, durationMs: Date.now() - started }
  } catch (err) {
    release()
    await discard()
    throw err
  }
}
