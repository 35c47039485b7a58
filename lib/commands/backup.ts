import { readdir, stat } from 'node:fs/promises'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { createDestination, planDestination, type DestinationPlan } from '../artifact/destination.ts'
import type { FilesystemSection } from '../artifact/manifest-tree.ts'
import {
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  manifestSumLine,
  serializeManifest,
  type Manifest,
  type ManifestFile,
  type PostgresSection,
  type PostgresSkipped,
} from '../artifact/manifest.ts'
import { artifactName, isPartialName } from '../artifact/naming.ts'
import { DrError, runtimeError, usageError } from '../cli/errors.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import type { Reporter } from '../cli/report.ts'
import { critical, noteDone, onInterrupt } from '../cli/signals.ts'
import type { EncryptionPolicy, Recipients } from '../crypto/age.ts'
import { archiveTrees } from '../files/archive.ts'
import { checkOutsideRoots, checkRoots } from '../files/roots.ts'
import { digestBuffer } from '../pipeline/checksum.ts'
import { checkTools } from '../pipeline/tools.ts'
import { connectionFromEnv, type PgConnection } from '../postgres/connection.ts'
import { parseLocation, type Location } from '../storage/location.ts'
import { openStore } from '../storage/open.ts'
import type { ArtifactWriter, Store } from '../storage/store.ts'
import type { ArtifactEntry } from '../artifact/list.ts'
import { TOOL } from '../version.ts'
import type { RetentionRules } from '../policy/retention.ts'
import { checkPostgresTools, dumpPostgres, planPostgres } from './backup-postgres.ts'
import { copyArtifact, type CopyResult } from './copy-artifact.ts'
import { runPrune, type PruneResult } from './prune.ts'

export { planPostgres, type PostgresPlan } from './backup-postgres.ts'

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
  /** Absolute paths of the application's files (--path, BACKUP_PATHS); empty: none. */
  paths: string[]
  /** age public keys every data file is encrypted to; null: stored in the clear. */
  recipients: Recipients | null
  /** BACKUP_ENCRYPTION=required: fail rather than write plaintext. */
  encryption: EncryptionPolicy
  /** --copy-to LOCATION (repeatable): copy the finished artifact there and read it back. */
  copyTo: string[]
  /** --keep-* / BACKUP_KEEP_*: prune with these rules after a successful backup; null: no pruning. */
  prune: { rules: RetentionRules; partialAgeMs: number } | null
  now: Date
  env: NodeJS.ProcessEnv
}

export interface BackupResult {
  dryRun: boolean
  artifact: string
  path: string
  postgres: PostgresSection | { status: 'planned' }
  filesystem: FilesystemSection | { status: 'planned'; roots: string[] } | null
  encryption: { scheme: 'age'; recipients: number } | null
  files: ManifestFile[]
  bytes: number
  /** Off-site copies made after the backup (--copy-to), each read back and checked. */
  copies: CopyResult[]
  /** What the retention run after the backup did (or, in a dry run, would do). */
  prune: PruneResult | null
  durationMs: number
}

/**
 * The store as the prune after the backup will see it: with the artifact
 * the run is about to write, newest of all, so the dry run's plan is the
 * real run's plan.
 */
function withPlanned(store: Store, name: string, withDatabase: boolean, now: Date): Store {
  const entry: ArtifactEntry = {
    name,
    path: `${store.url}/${name}`,
    kind: 'complete',
    createdAt: now,
    completedAt: now,
    bytes: null,
    database: withDatabase ? '(this backup)' : null,
    problem: null,
    modifiedAt: now,
  }
  return { url: store.url, kind: store.kind, create: (n) => store.create(n), read: (n, f) => store.read(n, f), remove: (e) => store.remove(e), list: async () => [entry, ...(await store.list())] }
}

async function destinationExists(path: string): Promise<boolean> {
  return stat(path).then(
    (st) => st.isDirectory(),
    () => false,
  )
}

async function warnAboutLeftovers(output: string, reporter: Reporter): Promise<void> {
  const stale = (await readdir(output)).filter(isPartialName)
  if (stale.length > 0) {
    reporter.warn(
      `${stale.length} incomplete backup(s) from interrupted runs in ${output} (${stale.join(', ')}); they are not restorable, remove them with rm -rf or prune.sh`,
    )
  }
}

/** Bucket stores this command writes to: upload-only settings (S3_PART_SIZE, S3_CONTENT_MD5) are read and checked. */
const UPLOAD = { upload: true } as const
/** How many following seconds a backup tries when its name is taken by a run in the same second. */
const NAME_ATTEMPTS = 3

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Claims an artifact name in the store. Two backups started in the same
 * second (the guide runs its steps back to back) get consecutive seconds;
 * a finished artifact is never touched.
 */
async function claimName(store: Store, start: Date): Promise<{ name: string; at: Date; writer: ArtifactWriter }> {
  let at = start
  for (let attempt = 1; ; attempt++) {
    const name = artifactName(at)
    const writer = await store.create(name)
    if (writer) return { name, at, writer }
    if (attempt >= NAME_ATTEMPTS) {
      throw runtimeError(`artifacts for ${attempt} consecutive seconds up to ${name} already exist in ${store.url}`, 'another backup is running or the clock jumped; run again later')
    }
    await sleep(1000 - (Date.now() % 1000) + 5)
    at = new Date()
  }
}

export async function runBackup(opts: BackupOptions, reporter: Reporter): Promise<BackupResult> {
  const started = Date.now()
  const pgPlan = planPostgres(opts.includePostgres, opts.enablePostgresDump)
  if (opts.encryption === 'required' && !opts.recipients) {
    throw usageError('BACKUP_ENCRYPTION=required but no recipient is set', 'set BACKUP_AGE_RECIPIENTS or BACKUP_AGE_RECIPIENTS_FILE to the age public key(s) backups are encrypted to')
  }
  const location = parseLocation(opts.output, '--output')
  const copies = opts.copyTo.map((c) => {
    const at = parseLocation(c, '--copy-to')
    return at.kind === 'local' ? { ...at, path: resolve(at.path) } : at
  })
  const destination = location.kind === 'local' ? await planDestination(location.path) : null
  const output = destination ? destination.path : (location as Extract<Location, { kind: 's3' }>).url
  const planned = artifactName(opts.now)

  reporter.heading(`${opts.dryRun ? 'Backup plan (dry run)' : 'Backup'}: ${output}/${planned}`)
  if (destination) reporter.line(`output: ${output}${destination.create.length === 0 ? '' : ` (will create ${destination.create.join(', ')}, mode 0700)`}`)
  else {
    // The settings (region, endpoint, a half-set key pair) are checked here; nothing is sent.
    await openStore(location, opts.env, UPLOAD)
    reporter.line(`output: ${output} (S3${opts.dryRun ? '; credentials, the bucket and write access are checked by the real run, not by a dry run' : ''})`)
  }
  // A local copy's directory is planned like --output's (and created by the real run); a bucket's settings are checked, nothing is sent.
  const copyPlans = new Map<string, DestinationPlan>()
  for (const c of copies) {
    if (c.kind === 's3') await openStore(c, opts.env, UPLOAD)
    else copyPlans.set(c.path, await planDestination(c.path, '--copy-to'))
    reporter.line(`copy to: ${c.kind === 'local' ? c.path : c.url} (after the backup, read back and checked)`)
  }
  for (const [dir, what] of [...(destination ? [[destination.path, '--output'] as const] : []), ...[...copyPlans.keys()].map((p) => [p, '--copy-to'] as const)]) {
    await checkOutsideRoots(dir, what, opts.paths)
  }
  if (copies.length > 0 && location.kind !== 'local') throw usageError('--copy-to copies a local backup off-site', 'use a local --output with --copy-to s3://…, or write to the bucket directly with --output s3://… alone')
  reporter.line(
    opts.recipients
      ? `encryption: age, to ${opts.recipients.keys.length} recipient(s) from ${opts.recipients.source}`
      : 'encryption: none (set BACKUP_AGE_RECIPIENTS to encrypt)',
  )
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
  await checkTools([...(pg.run || opts.paths.length > 0 ? ['zstd'] : []), ...(opts.paths.length > 0 ? ['tar'] : []), ...(opts.recipients ? ['age'] : [])], opts.env)
  if (opts.paths.length > 0) {
    await checkRoots(opts.paths)
    reporter.line(`files: ${opts.paths.join(', ')}`)
  }
  const encryption = { recipients: opts.recipients }
  const encryptionSection = opts.recipients ? { scheme: 'age' as const, recipients: opts.recipients.keys.length } : null

  if (opts.dryRun) {
    reporter.line('dry run: nothing was written')
    return {
      dryRun: true,
      artifact: planned,
      path: `${output}/${planned}`,
      postgres: pg.run ? { status: 'planned' } : pg.skipped,
      filesystem: opts.paths.length > 0 ? { status: 'planned', roots: opts.paths } : null,
      encryption: encryptionSection,
      files: [],
      bytes: 0,
      copies: [],
      prune:
        opts.prune && (!destination || (await destinationExists(output)))
          ? await runPrune({ store: withPlanned(await openStore(destination ? { kind: 'local', path: output } : location, opts.env), planned, pg.run, opts.now), ...opts.prune, dryRun: true, now: opts.now }, reporter)
          : null,
      durationMs: Date.now() - started,
    }
  }

  if (destination) {
    await createDestination(destination)
    const mode = (await stat(output)).mode & 0o777
    if (mode & 0o077) {
      reporter.warn(`${output} is accessible to other users (mode ${mode.toString(8)}); run chmod 700 ${output}`)
    }
    await warnAboutLeftovers(output, reporter)
  }
  const store = await openStore(destination ? { kind: 'local', path: output } : location, opts.env, UPLOAD)
  const { name, at, writer } = await claimName(store, opts.now)
  const release = onInterrupt(() => writer.discard())
  try {
    const files: ManifestFile[] = []
    let postgres: PostgresSection
    if (pg.run) {
      const dumped = await dumpPostgres(pg.conn, pg.pgDumpVersion, writer, encryption, opts.lockWaitTimeoutMs, opts.rolePasswords, reporter)
      files.push(...dumped.files)
      postgres = dumped.section
    } else postgres = pg.skipped
    let filesystem: FilesystemSection | undefined
    if (opts.paths.length > 0) {
      const archived = await archiveTrees(opts.paths, writer, encryption, opts.env, reporter)
      files.push(...archived.files)
      filesystem = archived.section
    }

    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      formatVersion: MANIFEST_VERSION,
      tool: { name: TOOL.name, version: TOOL.version },
      artifact: name,
      createdAt: at.toISOString(),
      completedAt: new Date().toISOString(),
      hostname: hostname(),
      postgres,
      ...(filesystem ? { filesystem } : {}),
      ...(encryptionSection ? { encryption: encryptionSection } : {}),
      files,
    }
    const text = serializeManifest(manifest)
    const sum = manifestSumLine(digestBuffer(text).sha256)
    await critical(`publishing ${name}`, async () => {
      await writer.publish(text, sum)
      // Published: the interrupt cleanup must not remove it now.
      release()
    })
    if (copies.length > 0 || opts.prune) noteDone(`backup ${name} is complete (${writer.location})`)
    const bytes = files.reduce((sum, f) => sum + f.size, 0)
    // Off-site copies of the finished artifact, then prune. Either failing still fails the run
    // (exit 1; a missing copy or old backups piling up need someone to act), but the line says the
    // new backup is complete, and --json names it, so cron does not report a lost backup.
    const afterPublish = (what: string, err: unknown): unknown => {
      const known = err instanceof DrError ? err : fromSystemError(err)
      if (!known) return err
      return new DrError(known.kind, `backup ${name} is complete (${writer.location}), but ${what} failed: ${known.message}`, known.fix, {
        ...known.details,
        artifact: name,
        path: writer.location,
      })
    }
    const copied: CopyResult[] = []
    for (const c of copies) {
      const plan = c.kind === 'local' ? copyPlans.get(c.path) : undefined
      try {
        if (plan) await createDestination(plan)
        copied.push(await copyArtifact(writer.location, name, text, sum, files, await openStore(c, opts.env, UPLOAD), reporter))
      } catch (err) {
        throw afterPublish(`copying it to ${c.kind === 'local' ? c.path : c.url}`, err)
      }
    }
    // After the new backup is complete, never before: it is the newest, so prune always keeps it.
    const pruned = opts.prune
      ? await runPrune({ store, ...opts.prune, dryRun: false, now: new Date() }, reporter).catch((err: unknown) => {
          throw afterPublish('pruning afterwards', err)
        })
      : null
    return {
      dryRun: false,
      artifact: name,
      path: writer.location,
      postgres,
      filesystem: filesystem ?? null,
      encryption: encryptionSection,
      files,
      bytes,
      copies: copied,
      prune: pruned,
      durationMs: Date.now() - started,
    }
  } catch (err) {
    release()
    await writer.discard()
    throw err
  }
}
