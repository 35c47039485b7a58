import type { ArtifactEntry } from '../artifact/list.ts'
import { verifyArtifact, type VerifiedArtifact } from '../artifact/verify.ts'
import { checkRowCounts, runOperatorChecks, validateCheckSpec } from '../checks/index.ts'
import type { CheckResult, CheckSpec } from '../checks/types.ts'
import { DrError, inputError, runtimeError, usageError } from '../cli/errors.ts'
import { shellWord } from '../cli/escape.ts'
import type { Reporter } from '../cli/report.ts'
import { PhaseClock } from '../drill/phases.ts'
import type { DrillResult, DrillVerdict } from '../drill/result.ts'
import { formatDuration } from '../policy/duration.ts'
import { judge, rpoFromBackups, stampedAhead, type RpoMeasure } from '../policy/objectives.ts'
import { checkReachable } from '../postgres/client.ts'
import { checkDatabaseName, connectionFromEnv, describeTarget, withDatabase } from '../postgres/connection.ts'
import { defaultJobs, stagingNotes } from './restore-postgres.ts'
import { derivedDatabaseName } from '../postgres/derived-name.ts'
import { restoreIntoNewDatabase, type RestoredDatabase } from '../postgres/restore-new.ts'
import { checkArchive, type DumpSource } from '../postgres/restore.ts'
import { localArtifact, storeAt, type LocalArtifact } from './artifact-location.ts'
import { describeEncryption, dumpSource, unlockArtifact } from './artifact-sources.ts'
import { databaseExists } from '../postgres/server.ts'

export interface DrillOptions {
  /** A name under BACKUP_BASE or a path; the newest complete artifact when absent. */
  artifact: string | undefined
  backupBase: string | undefined
  dryRun: boolean
  keep: boolean
  /** DRILL_DATABASE: restore here instead of `<database>_drill_<stamp>`. */
  scratchDatabase: string | undefined
  windowMs: number
  targets: { rtoMs?: number; rpoMs?: number }
  checks: CheckSpec
  /** pg_restore -j; default min(4, CPUs). */
  jobs: number | undefined
  stagingDir: string | undefined
  /** RESTORE_STAGE_DUMP (default on): stage the dump for one parallel pg_restore when there is room. */
  stage: boolean
  env: NodeJS.ProcessEnv
  now: Date
}

/** A drill that ran to its end, whatever its verdict; a DrError when it could not start at all. */
export interface DrillOutcome {
  result: DrillResult
  /** The error a failed drill ends with (exit code); null when it passed. */
  failure: DrError | null
}

const NO_RPO: RpoMeasure = { newestAgeMs: null, newest: null, largestGapMs: null, gapBetween: null, worstCaseMs: null, backupsInWindow: 0 }

/** What a drill rehearses and RPO counts: complete artifacts that hold a database dump (one without restores nothing), not stamped in the future (as status.sh). */
const restorable = (now: Date) => (a: ArtifactEntry) => a.kind === 'complete' && a.database !== null && a.createdAt !== null && !stampedAhead(a.createdAt, now)

async function measureRpo(base: string | undefined, now: Date, windowMs: number, env: NodeJS.ProcessEnv): Promise<RpoMeasure> {
  if (!base) return NO_RPO
  const complete = (await (await storeAt(base, 'BACKUP_BASE', env)).list()).filter(restorable(now))
  return rpoFromBackups(
    complete.map((a) => ({ name: a.name, createdAt: a.createdAt! })),
    now,
    windowMs,
  )
}

/** The named artifact, or the newest restorable one in BACKUP_BASE; downloaded first when it is in a bucket. */
async function locate(opts: DrillOptions, reporter: Reporter): Promise<LocalArtifact> {
  if (opts.artifact !== undefined) return localArtifact(opts.artifact, opts.backupBase, opts.env, opts.stagingDir, reporter)
  if (!opts.backupBase) throw usageError('BACKUP_BASE is not set', 'set BACKUP_BASE to the backup directory, or name an artifact path')
  const store = await storeAt(opts.backupBase, 'BACKUP_BASE', opts.env)
  const newest = (await store.list()).find(restorable(opts.now))
  if (!newest) throw inputError(`no complete backup with a database dump in ${opts.backupBase}`, 'run backup.sh with the dump enabled first, or check BACKUP_BASE')
  if (store.kind === 'local') return { path: newest.path, origin: newest.path, cleanup: async () => {} }
  return localArtifact(newest.name, opts.backupBase, opts.env, opts.stagingDir, reporter)
}

/** The first failure decides the exit code: a broken drill before a failed check before a missed objective. */
function verdictOf(error: DrError | null, checks: CheckResult[], objectivesMet: boolean): DrillVerdict {
  if (error) return 'failed'
  if (checks.some((c) => !c.ok)) return 'check-failed'
  return objectivesMet ? 'passed' : 'objective-missed'
}

/**
 * A rehearsal of recovery that measures it: verify the artifact exactly
 * as restore does, restore it into a scratch database (never the live
 * one), run the checks, drop the scratch database. Every phase is timed;
 * RTO is the wall time until the checks passed. Whatever fails, the
 * scratch database is dropped and the result is still reported.
 */
export async function runDrill(opts: DrillOptions, reporter: Reporter): Promise<DrillOutcome> {
  validateCheckSpec(opts.checks)
  const clock = new PhaseClock()
  const conn = connectionFromEnv(opts.env)
  let artifact: VerifiedArtifact | undefined
  let path: string | null = null
  let located: LocalArtifact | undefined
  let scratch: string | null = null
  let restored: RestoredDatabase | undefined
  let checks: CheckResult[] = []
  let rtoMs: number | null = null
  let error: DrError | null = null
  let rpo = NO_RPO
  let tocBytes = 0

  let identity: string | undefined
  try {
    located = await clock.run('locate', async () => {
      rpo = await measureRpo(opts.backupBase, opts.now, opts.windowMs, opts.env)
      return locate(opts, reporter)
    })
    path = located.origin
    reporter.heading(`${opts.dryRun ? 'Drill (dry run: verify only)' : 'Drill'}: ${path}`)
    artifact = await clock.run('verify', async () => {
      const verified = await verifyArtifact(located!.path, reporter, located!.digests)
      if (opts.dryRun) describeEncryption(verified, reporter)
      else identity = await unlockArtifact(verified, opts.env, reporter)
      const dump = dumpOf(verified, identity)
      // The restore's own read of the archive's table of contents; needs no connection (and, when encrypted, the key).
      if (dump && !(dump.encrypted && dump.identity === undefined)) tocBytes = (await checkArchive(conn, dump)).tocBytes
      return verified
    })
    const { manifest } = artifact
    const dump = dumpOf(artifact, identity)
    if (opts.dryRun || manifest.postgres.status !== 'dumped' || !dump) {
      if (!opts.dryRun) {
        throw inputError(`${manifest.artifact} holds no database dump, so there is nothing to rehearse`, 'name an artifact taken with the dump enabled (ENABLE_POSTGRES_DUMP=true)')
      }
      clock.skip('restore')
      clock.skip('checks')
      clock.skip('cleanup')
    } else {
      const pg = manifest.postgres
      const server = conn
      const name = opts.scratchDatabase ?? derivedDatabaseName(pg.database, 'drill', opts.now)
      checkDatabaseName(name, 'DRILL_DATABASE')
      scratch = name
      const target = withDatabase(server, name)
      await clock.run('restore', async () => {
        await checkReachable(target)
        if (name === pg.database || name === server.target.database) {
          throw usageError(`the drill database ${name} is the source database`, 'set DRILL_DATABASE to a scratch name')
        }
        // Never restore over something that exists: a drill must not touch a real database.
        if (await databaseExists(target, name)) {
          throw inputError(`the drill database ${name} already exists`, 'drop it, or set DRILL_DATABASE to a name that is not in use')
        }
        const jobs = opts.jobs ?? defaultJobs()
        reporter.line(`restoring into scratch database ${describeTarget(target.target)} (pg_restore -j${jobs})…`)
        restored = await restoreIntoNewDatabase(server, {
          source: dump,
          tocBytes,
          name,
          settings: pg,
          jobs,
          stagingDir: opts.stagingDir,
          stage: opts.stage,
          onProgress: (bytes) => reporter.progress(`restoring ${pg.file}`, bytes),
          ...stagingNotes(reporter, jobs),
        })
        reporter.endProgress()
      })
      checks = await clock.run('checks', async () => {
        const all = [await checkRowCounts(target, pg.tables ?? [])]
        all.push(...(await runOperatorChecks(opts.checks, target)))
        return all
      })
      if (checks.every((c) => c.ok)) rtoMs = clock.elapsed()
      for (const c of checks) reporter.line(`check ${c.name}: ${c.ok ? 'ok' : 'FAILED'} — ${c.detail}`)
    }
  } catch (err) {
    error = err instanceof DrError ? err : runtimeError(`drill failed: ${(err as Error)?.message ?? String(err)}`)
  } finally {
    await artifact?.close()
    await located?.cleanup()
  }

  if (restored) {
    const db = restored
    if (opts.keep) {
      db.keep()
      clock.skip('cleanup')
      reporter.line(`kept scratch database ${db.name} for inspection (--keep); drop it with: dropdb ${shellWord(db.name)}`)
    } else {
      await clock.run('cleanup', () => db.drop()).catch((err: unknown) => {
        reporter.warn(`could not drop the scratch database ${db.name}: ${(err as Error).message}`)
      })
    }
  }

  const judgement = judge({ rtoMs: opts.dryRun ? undefined : (rtoMs ?? undefined), rpoMs: rpo.worstCaseMs }, {
    rtoMs: opts.dryRun ? undefined : opts.targets.rtoMs,
    rpoMs: opts.targets.rpoMs,
  })
  const verdict = verdictOf(error, checks, judgement.met)
  const result: DrillResult = {
    at: opts.now.toISOString(),
    dryRun: opts.dryRun,
    artifact: artifact?.manifest.artifact ?? null,
    path,
    artifactCreatedAt: artifact?.manifest.createdAt ?? null,
    sourceDatabase: artifact?.manifest.postgres.status === 'dumped' ? artifact.manifest.postgres.database : null,
    scratchDatabase: scratch,
    kept: opts.keep && restored !== undefined,
    phases: clock.phases,
    rtoMs,
    rpo,
    windowMs: opts.windowMs,
    targets: opts.targets,
    judgement,
    checks,
    verdict,
    error: error ? error.line : null,
  }
  return { result, failure: failureFor(verdict, error, checks, result) }
}

function dumpOf(artifact: VerifiedArtifact, identity: string | undefined): DumpSource | undefined {
  const pg = artifact.manifest.postgres
  return pg.status === 'dumped' ? dumpSource(artifact, pg, identity) : undefined
}

function failureFor(verdict: DrillVerdict, error: DrError | null, checks: CheckResult[], r: DrillResult): DrError | null {
  switch (verdict) {
    case 'passed':
      return null
    case 'failed':
      return error
    case 'check-failed': {
      const failed = checks.filter((c) => !c.ok)
      return new DrError('check', `drill check failed: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ')}`, 'do not rely on this backup until the cause is found; see the drill report')
    }
    case 'objective-missed': {
      const missed: string[] = []
      if (r.judgement.rto === 'missed') missed.push(`RTO ${r.rtoMs === null ? 'not measured' : formatDuration(r.rtoMs)} > target ${formatDuration(r.targets.rtoMs!)}`)
      if (r.judgement.rpo === 'missed') {
        missed.push(`RPO worst case ${r.rpo.worstCaseMs === null ? 'unknown (no backups)' : formatDuration(r.rpo.worstCaseMs)} > target ${formatDuration(r.targets.rpoMs!)}`)
      }
      return new DrError('objective', `drill passed but missed its objectives: ${missed.join(', ')}`, 'back up more often or speed up the restore; see the drill report')
    }
  }
}
