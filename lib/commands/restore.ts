import { checkArtifactDir, resolveArtifactPath } from '../artifact/locate.ts'
import { verifyArtifact } from '../artifact/verify.ts'
import { inputError, verificationError } from '../cli/errors.ts'
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
  const artifact = await verifyArtifact(path, reporter)
  try {
    const { manifest } = artifact
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
    return { ...base, dryRun: false, postgres: { status: 'restored', database }, durationMs: Date.now() - started }
  } finally {
    await artifact.close()
  }
}
