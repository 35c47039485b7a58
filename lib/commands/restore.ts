import { checkArtifactDir, resolveArtifactPath } from '../artifact/locate.ts'
import { verifyArtifact } from '../artifact/verify.ts'
import { checkRowCounts, runOperatorChecks, validateCheckSpec } from '../checks/index.ts'
import type { CheckResult, CheckSpec } from '../checks/types.ts'
import { DrError, inputError, usageError, verificationError } from '../cli/errors.ts'
import type { Reporter } from '../cli/report.ts'
import { checkReachable, toolVersion } from '../postgres/client.ts'
import { connectionFromEnv, describeTarget, withDatabase } from '../postgres/connection.ts'
import { checkArchive, restoreDatabase } from '../postgres/restore.ts'
import { createDatabase, databaseExists } from '../postgres/server.ts'

export interface RestoreOptions {
  artifact: string | undefined
  backupBase: string | undefined
  dryRun: boolean
  restorePostgres: boolean
  /** Checks after the restore: the built-in row counts, plus the operator's own. */
  checks: CheckSpec | null
  env: NodeJS.ProcessEnv
}

export interface RestoreResult {
  dryRun: boolean
  artifact: string
  path: string
  createdAt: string
  verified: string[]
  postgres: { status: 'restored' | 'planned'; database: string } | { status: 'skipped'; reason: string }
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

    const conn = connectionFromEnv(opts.env)
    // With no database configured, restore to the one that was backed up.
    const database = conn.target.database ?? manifest.postgres.database
    const target = withDatabase(conn, database)
    const [version] = await Promise.all([toolVersion(target, 'pg_restore'), checkArchive(target, dump)])
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
    await restoreDatabase(target, dump, database, (bytes) => reporter.progress('restoring database', bytes))
    reporter.endProgress()
    const restored = { ...base, dryRun: false, postgres: { status: 'restored' as const, database } }
    if (!opts.checks) return { ...restored, durationMs: Date.now() - started }
    const pg = manifest.postgres
    const checks = [await checkRowCounts(target, pg.tables ?? []), ...(await runOperatorChecks(opts.checks, target))]
    for (const c of checks) reporter.line(`check ${c.name}: ${c.ok ? 'ok' : 'FAILED'} — ${c.detail}`)
    const result = { ...restored, checks, durationMs: Date.now() - started }
    const failed = checks.filter((c) => !c.ok)
    if (failed.length > 0) {
      throw new DrError(
        'check',
        `restored ${database}, but ${failed.length} check(s) failed: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`,
        'do not reopen traffic; investigate, or restore another backup',
        { ...result },
      )
    }
    return result
  } finally {
    await artifact.close()
  }
}
