import { verifyArtifact } from '../artifact/verify.ts'
import { validateCheckSpec } from '../checks/index.ts'
import type { CheckResult } from '../checks/types.ts'
import { DrError, inputError, usageError } from '../cli/errors.ts'
import type { Reporter } from '../cli/report.ts'
import { describeEncryption, dumpSource, rolesSource, unlockArtifact } from './artifact-sources.ts'
import { localArtifact } from './artifact-location.ts'
import { placeFiles, plannedFiles, prepareFilesRestore, stageFiles, type FilesRestoreResult } from './restore-files.ts'
import { restorePostgres, type PostgresRestoreOptions, type PostgresRestoreResult } from './restore-postgres.ts'

export interface RestoreOptions extends PostgresRestoreOptions {
  artifact: string | undefined
  backupBase: string | undefined
  restorePostgres: boolean
  /** RESTORE_FILES=true: the application's files, to their recorded places or under filesTarget. */
  restoreFiles: boolean
  filesTarget: string | undefined
}

type Skipped = { status: 'skipped'; reason: string }

export interface RestoreResult {
  dryRun: boolean
  artifact: string
  path: string
  createdAt: string
  verified: string[]
  encrypted: boolean
  postgres: PostgresRestoreResult | Skipped
  files: FilesRestoreResult | Skipped
  checks: CheckResult[]
  durationMs: number
}

export async function runRestore(opts: RestoreOptions, reporter: Reporter): Promise<RestoreResult> {
  const started = Date.now()
  if (opts.checks) validateCheckSpec(opts.checks)
  if (opts.checks && !opts.restorePostgres) throw usageError('checks run against a restored database', 'set RESTORE_POSTGRES=true, or drop the --check options')
  if (opts.filesTarget !== undefined && !opts.restoreFiles) throw usageError('--target places restored files', 'set RESTORE_FILES=true as well, or drop --target')
  const located = await localArtifact(opts.artifact, opts.backupBase, opts.env, opts.stagingDir, reporter)
  const path = located.origin
  reporter.heading(`${opts.dryRun ? 'Restore plan (dry run)' : 'Restore'}: ${path}`)
  const artifact = await verifyArtifact(located.path, reporter, located.digests).catch(async (err: unknown) => {
    await located.cleanup()
    throw err
  })
  try {
    const { manifest } = artifact
    reporter.line(`artifact: ${manifest.artifact}, taken ${manifest.createdAt} on ${manifest.hostname}`)
    if (opts.dryRun) describeEncryption(artifact, reporter)
    let postgres: PostgresRestoreResult | Skipped = { status: 'skipped', reason: 'not requested (set RESTORE_POSTGRES=true to restore the database)' }
    let files: FilesRestoreResult | Skipped = { status: 'skipped', reason: 'not requested (set RESTORE_FILES=true to restore the files)' }
    let checks: CheckResult[] = []
    if (opts.restorePostgres && manifest.postgres.status !== 'dumped') {
      throw inputError(
        `RESTORE_POSTGRES=true but ${manifest.artifact} has no database dump (${manifest.postgres.reason})`,
        'pick an artifact taken with the dump enabled, or unset RESTORE_POSTGRES',
      )
    }
    if (opts.restoreFiles && !manifest.filesystem) {
      throw inputError(`RESTORE_FILES=true but ${manifest.artifact} holds no application files`, 'pick an artifact taken with --path or BACKUP_PATHS, or unset RESTORE_FILES')
    }
    // The key is proven before anything is touched; a dry run needs none.
    const identity = !opts.dryRun && (opts.restorePostgres || opts.restoreFiles) ? await unlockArtifact(artifact, opts.env, reporter) : undefined
    const filesOptions = { dryRun: opts.dryRun, target: opts.filesTarget, env: opts.env, now: opts.now }
    // Everything that can refuse the files is checked before the database is touched.
    const preparedFiles = opts.restoreFiles && manifest.filesystem ? await prepareFilesRestore(filesOptions, manifest.filesystem, artifact, identity, reporter) : null

    // Files are extracted and verified in staging before the database is touched: a damaged archive
    // (one whose ciphertext only fails when decrypted) stops the restore while everything is as it was.
    const staged = preparedFiles && !opts.dryRun ? await stageFiles(filesOptions, preparedFiles, artifact, reporter) : null
    try {
      if (opts.restorePostgres && manifest.postgres.status === 'dumped') {
        const outcome = await restorePostgres(opts, manifest.postgres, dumpSource(artifact, manifest.postgres, identity), rolesSource(artifact, manifest.postgres, identity), reporter)
        postgres = outcome.postgres
        checks = outcome.checks
      } else reporter.line(`postgres: skipped — ${(postgres as Skipped).reason}`)
    } catch (err) {
      await staged?.discard()
      throw err
    }
    const failed = checks.filter((c) => !c.ok)
    if (staged && failed.length === 0) {
      try {
        files = await placeFiles(staged, reporter)
      } catch (err) {
        // The database is already restored: a re-run would swap it again, so the line must say so.
        if (postgres.status !== 'restored' || !(err instanceof DrError)) throw err
        const kept = postgres.kept ? `, the one it replaced kept as ${postgres.kept}` : ''
        throw new DrError(err.kind, `database ${postgres.database} was restored${kept}, but ${/\(already restored: /.test(err.message) ? 'not all of the files were' : 'the files were not'}: ${err.message}`, `${err.fix ? `${err.fix}; ` : ''}restore the files alone (RESTORE_FILES=true without RESTORE_POSTGRES), not the database again`, {
          ...err.details,
          postgres,
        })
      }
    }
    else if (preparedFiles && opts.dryRun) files = plannedFiles(preparedFiles)
    else {
      await staged?.discard()
      if (manifest.filesystem) reporter.line(`files: skipped — ${failed.length > 0 ? 'the database checks failed' : (files as Skipped).reason}`)
    }
    if (opts.dryRun) reporter.line('dry run: nothing was changed')

    const result: RestoreResult = {
      dryRun: opts.dryRun,
      artifact: manifest.artifact,
      path,
      createdAt: manifest.createdAt,
      verified: manifest.files.map((f) => f.path),
      encrypted: manifest.encryption !== undefined,
      postgres,
      files,
      checks,
      durationMs: Date.now() - started,
    }
    if (failed.length > 0) {
      throw new DrError(
        'check',
        `${failed.length} check(s) failed on the restored database: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`,
        postgres.status === 'restored' && postgres.inspect
          ? `${postgres.database} was left as it was; the restored copy is kept as ${postgres.inspect} for inspection`
          : 'do not reopen traffic; investigate, or restore another backup',
        { ...result },
      )
    }
    return result
  } finally {
    await artifact.close()
    await located.cleanup()
  }
}
