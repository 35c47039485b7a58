import { readdir, readFile, stat } from 'node:fs/promises'
import { basename, join, resolve, sep } from 'node:path'
import { digestBuffer, digestFile } from './checksum.ts'
import { inputError, usageError, verificationError } from './errors.ts'
import { parseManifest, parseManifestSum, type Manifest } from './manifest.ts'
import { isArtifactName, isPartialName, MANIFEST_FILE, MANIFEST_SUM_FILE } from './naming.ts'
import {
  checkArchive,
  checkReachable,
  connectionFromEnv,
  createDatabase,
  databaseExists,
  describeTarget,
  restoreDatabase,
  toolVersion,
  withDatabase,
} from './postgres.ts'
import { formatBytes, type Reporter } from './report.ts'

/**
 * The guide names artifacts relative to BACKUP_BASE; a path (anything
 * with a slash) is accepted too so that an artifact copied elsewhere can
 * be restored without inventing a BACKUP_BASE for it.
 */
export function resolveArtifactPath(arg: string | undefined, backupBase: string | undefined): string {
  if (arg === undefined || arg === '') {
    throw usageError('missing artifact name', 'run: BACKUP_BASE=/path/to/backups restore.sh conductor-backup-YYYYMMDDTHHMMSSZ')
  }
  const isPath = arg.includes('/') || arg.includes(sep)
  let path: string
  if (isPath) {
    path = resolve(arg)
  } else {
    if (!backupBase) {
      throw usageError('BACKUP_BASE is not set', `set BACKUP_BASE to the backup directory, or pass a path such as ./${arg}`)
    }
    if (arg === '.' || arg === '..') throw usageError(`'${arg}' is not an artifact name`)
    path = join(resolve(backupBase), arg)
  }
  if (isPartialName(basename(path))) {
    throw inputError(`${basename(path)} is an incomplete backup from an interrupted run and cannot be restored`, 'choose a completed artifact')
  }
  return path
}

async function checkArtifactDir(path: string, backupBase: string | undefined): Promise<void> {
  try {
    const st = await stat(path)
    if (!st.isDirectory()) throw inputError(`${path} is not a backup artifact (not a directory)`, 'pass an artifact directory')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      if (backupBase && !(await stat(backupBase).catch(() => undefined))) {
        throw inputError(`BACKUP_BASE ${backupBase} does not exist`, 'set BACKUP_BASE to the directory that holds the backups')
      }
      throw inputError(`artifact not found: ${path}`, `list the available ones with: ls ${backupBase ?? '<backup dir>'}`)
    }
    if (code === 'EACCES') throw inputError(`artifact is not readable: ${path}`, 'run as a user that can read the backups')
    throw err
  }
}

async function readSmall(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw verificationError(`${what} is missing from the artifact`, 'the artifact is incomplete or damaged; use another backup')
    if (code === 'EACCES') throw inputError(`${what} is not readable`, 'run as a user that can read the backups')
    throw err
  }
}

/**
 * Proves the artifact is whole before anything is touched: the manifest
 * matches its checksum and every listed file matches its size and SHA-256.
 */
export async function verifyArtifact(dir: string, reporter: Reporter): Promise<Manifest> {
  const sumText = (await readSmall(join(dir, MANIFEST_SUM_FILE), MANIFEST_SUM_FILE)).toString('utf8')
  const expected = parseManifestSum(sumText)
  const manifestBytes = await readSmall(join(dir, MANIFEST_FILE), MANIFEST_FILE)
  if (digestBuffer(manifestBytes).sha256 !== expected) {
    throw verificationError(`${MANIFEST_FILE} does not match its checksum`, 'the artifact is damaged; use another backup')
  }
  const manifest = parseManifest(manifestBytes.toString('utf8'))
  if (isArtifactName(basename(dir)) && manifest.artifact !== basename(dir)) {
    reporter.warn(`artifact directory ${basename(dir)} was renamed; its manifest names ${manifest.artifact}`)
  }
  const listed = new Set([MANIFEST_FILE, MANIFEST_SUM_FILE, ...manifest.files.map((f) => f.path.split('/')[0])])
  const unlisted = (await readdir(dir)).filter((name) => !listed.has(name))
  if (unlisted.length > 0) {
    reporter.warn(`not in the manifest, ignored: ${unlisted.join(', ')} (something other than the backup wrote into the artifact)`)
  }
  for (const file of manifest.files) {
    const path = join(dir, ...file.path.split('/'))
    const st = await stat(path).catch(() => undefined)
    if (!st?.isFile()) {
      throw verificationError(`${file.path} is listed in the manifest but missing`, 'the artifact is incomplete; use another backup')
    }
    if (st.size !== file.size) {
      throw verificationError(`${file.path} is ${st.size} bytes, manifest says ${file.size}`, 'the artifact is damaged; use another backup')
    }
    const digest = await digestFile(path, (bytes) => reporter.progress(`verifying ${file.path}`, bytes))
    reporter.endProgress()
    if (digest.sha256 !== file.sha256) {
      throw verificationError(`${file.path} failed its SHA-256 check`, 'the artifact is damaged; use another backup')
    }
    reporter.line(`verified ${file.path} (${formatBytes(file.size)}, sha256 ok)`)
  }
  return manifest
}

export interface RestoreOptions {
  artifact: string | undefined
  backupBase: string | undefined
  dryRun: boolean
  restorePostgres: boolean
  env: NodeJS.ProcessEnv
}

export interface RestoreResult {
  dryRun: boolean
  artifact: string
  path: string
  createdAt: string
  verified: string[]
  postgres: { status: 'restored' | 'planned'; database: string } | { status: 'skipped'; reason: string }
  durationMs: number
}

export async function runRestore(opts: RestoreOptions, reporter: Reporter): Promise<RestoreResult> {
  const started = Date.now()
  const path = resolveArtifactPath(opts.artifact, opts.backupBase)
  await checkArtifactDir(path, opts.backupBase)
  reporter.heading(`${opts.dryRun ? 'Restore plan (dry run)' : 'Restore'}: ${path}`)
  const manifest = await verifyArtifact(path, reporter)
  reporter.line(`artifact: ${manifest.artifact}, taken ${manifest.createdAt} on ${manifest.hostname}`)
  const base = {
    artifact: manifest.artifact,
    path,
    createdAt: manifest.createdAt,
    verified: manifest.files.map((f) => f.path),
  }

  if (!opts.restorePostgres) {
    const reason = 'not requested (set RESTORE_POSTGRES=true to restore the database)'
    reporter.line(`postgres: skipped — ${reason}`)
    if (opts.dryRun) reporter.line('dry run: nothing was changed')
    return { ...base, dryRun: opts.dryRun, postgres: { status: 'skipped', reason }, durationMs: Date.now() - started }
  }
  if (manifest.postgres.status !== 'dumped') {
    throw inputError(
      `RESTORE_POSTGRES=true but ${manifest.artifact} has no database dump (${manifest.postgres.reason})`,
      'pick an artifact taken with the dump enabled, or unset RESTORE_POSTGRES',
    )
  }

  const conn = connectionFromEnv(opts.env)
  // With no database configured, restore to the one that was backed up.
  const database = conn.target.database ?? manifest.postgres.database
  const target = withDatabase(conn, database)
  const version = await toolVersion(target, 'pg_restore')
  const dumpPath = join(path, manifest.postgres.file)
  await checkArchive(target, dumpPath)
  reporter.line(`checked ${manifest.postgres.file} is a readable archive (dumped by ${manifest.postgres.pgDumpVersion})`)
  await checkReachable(target)
  reporter.line(
    `postgres: replace every object of the dump in ${describeTarget(target.target)} with ${version} (one transaction; objects not in the dump are kept)`,
  )
  if (opts.dryRun) {
    reporter.line('dry run: nothing was changed')
    return { ...base, dryRun: true, postgres: { status: 'planned', database }, durationMs: Date.now() - started }
  }
  if (!(await databaseExists(target, database))) {
    const { encoding, collate, ctype } = manifest.postgres
    reporter.line(`postgres: database ${database} does not exist; creating it (${encoding}, collate ${collate || 'default'})`)
    await createDatabase(target, database, { encoding, collate, ctype })
  }
  reporter.line(`postgres: restoring ${manifest.postgres.database} into ${database}…`)
  await restoreDatabase(target, dumpPath, database)
  return { ...base, dryRun: false, postgres: { status: 'restored', database }, durationMs: Date.now() - started }
}
