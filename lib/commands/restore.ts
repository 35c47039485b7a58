import { checkArtifactDir, resolveArtifactPath } from '../artifact/locate.ts'
import { verifyArtifact } from '../artifact/verify.ts'
import { validateCheckSpec } from '../checks/index.ts'
import type { CheckResult } from '../checks/types.ts'
import { DrError, inputError, usageError, verificationError } from '../cli/errors.ts'
import type { Reporter } from '../cli/report.ts'
import type { DumpSource } from '../postgres/restore.ts'
import { restorePostgres, type PostgresRestoreOptions, type PostgresRestoreResult } from './restore-postgres.ts'

export interface RestoreOptions extends PostgresRestoreOptions {
  artifact: string | undefined
  backupBase: string | undefined
  restorePostgres: boolean
}

export interface RestoreResult {
  dryRun: boolean
  artifact: string
  path: string
  createdAt: string
  verified: string[]
  postgres: PostgresRestoreResult | { status: 'skipped'; reason: string }
  checks: CheckResult[]
  durationMs: number
}

export async function runRestore(opts: RestoreOptions, reporter: Reporter): Promise<RestoreResult> {
  const started = Date.now()
  if (opts.checks) validateCheckSpec(opts.checks)
  const path = resolveArtifactPath(opts.artifact, opts.backupBase)
  await checkArtifactDir(path, opts.backupBase)
  reporter.heading(`${opts.dryRun ? 'Restore plan (dry run)' : 'Restore'}: ${path}`)
  const artifact = await verifyArtifact(path, reporter)
  try {
    const { manifest } = artifact
    reporter.line(`artifact: ${manifest.artifact}, taken ${manifest.createdAt} on ${manifest.hostname}`)
    const base = {
      artifact: manifest.artifact,
      path,
      createdAt: manifest.createdAt,
      verified: manifest.files.map((f) => f.path),
      checks: [] as CheckResult[],
    }

    if (!opts.restorePostgres) {
      if (opts.checks) throw usageError('checks run against a restored database', 'set RESTORE_POSTGRES=true, or drop the --check options')
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
    const dump = artifact.files.get(manifest.postgres.file)
    if (!dump) throw verificationError(`${manifest.postgres.file} was not verified`, 'the manifest is inconsistent; use another backup')

    const source: DumpSource = { file: dump, compression: manifest.postgres.compression }
    const roles = manifest.postgres.roles ? artifact.files.get(manifest.postgres.roles.file) : undefined
    const outcome = await restorePostgres(opts, manifest.postgres, source, roles, reporter)
    const result = { ...base, dryRun: opts.dryRun, postgres: outcome.postgres, checks: outcome.checks, durationMs: Date.now() - started }
    const failed = outcome.checks.filter((c) => !c.ok)
    if (failed.length > 0) {
      throw new DrError(
        'check',
        `${failed.length} check(s) failed on the restored database: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`,
        outcome.postgres.status === 'restored' && outcome.postgres.inspect
          ? `${outcome.postgres.database} was left as it was; the restored copy is kept as ${outcome.postgres.inspect} for inspection`
          : 'do not reopen traffic; investigate, or restore another backup',
        { ...result },
      )
    }
    return result
  } finally {
    await artifact.close()
  }
}
