#!/usr/bin/env -S sh -c 'exec sh "$(dirname "$(realpath "$0")")/../lib/cli/launch.sh" "$(realpath "$0")" "$@"'
// Runs under zx with tsx (see the line above), like backup.sh and restore.sh.
import { stagingWanted } from '../lib/postgres/stage-dump.ts'
import { checkAppendable } from '../lib/artifact/destination.ts'
import { appendSynced } from '../lib/artifact/durable.ts'
import { parseArgs } from '../lib/cli/args.ts'
import { checkSpecFromFlags, CHECK_FLAGS } from '../lib/cli/check-flags.ts'
import { DrError, usageError } from '../lib/cli/errors.ts'
import { parseJobs } from '../lib/cli/jobs.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { interrupted } from '../lib/cli/signals.ts'
import { runDrill } from '../lib/commands/drill.ts'
import { historyPathFor, historyRecord, renderMarkdown } from '../lib/drill/report.ts'
import { readHistory } from '../lib/drill/history.ts'
import { summarize } from '../lib/policy/calibrate.ts'
import { formatDuration, parseDuration } from '../lib/policy/duration.ts'

const USAGE = `Usage: BACKUP_BASE=DIR drill.sh [--dry-run] [options] [ARTIFACT]
       drill.sh --summary --report FILE [--window 30d] [--json]

Rehearses recovery and measures it. Takes the newest complete artifact in
BACKUP_BASE (or ARTIFACT: a name under BACKUP_BASE or a path), verifies it
exactly as restore.sh does (manifest checksum, every SHA-256, pg_restore
--list), restores the dump into a scratch database on the configured server
(never the live one), runs the checks, then drops the scratch database.

  --dry-run           verify only (timed); touch no database, need no secrets
  --keep              leave the scratch database for inspection
  --rpo DUR           objective: worst-case data loss (or DR_RPO_TARGET), e.g. 24h
  --rto DUR           objective: time to a checked restore (or DR_RTO_TARGET), e.g. 30m
  --window DUR        history considered for RPO and --summary (default 7d)
  --report FILE       append a Markdown section to FILE and a line to its JSONL history
                      (FILE.md -> FILE.jsonl, otherwise FILE.jsonl)
  --summary           with --report: observed RTO/RPO from the history, and proposed objectives
  --check-sql FILE    after the restore, each statement must succeed and return true or no rows
  --check-cmd CMD     run CMD (sh -c) with the scratch database's PG* variables; must exit 0
  --check-url URL     HTTP GET must answer 2xx
  --check-timeout DUR per check (default 5m)
  --jobs N            pg_restore parallelism (or RESTORE_JOBS; default min(4, CPUs))
  --json              one JSON document on stdout
  -h, --help          this text

Built-in check: every table recorded in the manifest exists in the restored
database with the row count taken in pg_dump's own snapshot.
Environment: BACKUP_BASE, DRILL_DATABASE (scratch name; default
<database>_drill_<UTC stamp>), RESTORE_STAGING_DIR (where the dump is decompressed
for pg_restore --jobs; default the system temp dir), RESTORE_STAGE_DUMP=false (stream it), DR_RPO_TARGET, DR_RTO_TARGET, PGHOST, PGPORT,
PGUSER, PGPASSWORD, DATABASE_URL (as for restore.sh).
Measured RTO = wall time from start until the checks pass. RPO = worst of
the newest backup's age and the largest gap between complete backups over
--window.

Exit codes: 0 passed, 1 runtime failure, 2 usage, 3 missing/unusable input,
4 verification failed, 5 a check failed, 6 an objective was missed,
130 interrupted. See docs/operators-guide.md.`

const duration = (value: unknown, what: string): number | undefined =>
  value === undefined || value === '' ? undefined : parseDuration(String(value), what)

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, env, reporter }) => {
  const { flags, lists, positional } = parseArgs(argv, {
    boolean: ['dry-run', 'keep', 'summary', 'json', 'help'],
    string: ['rpo', 'rto', 'window', 'report', 'check-timeout', 'jobs'],
    repeatable: CHECK_FLAGS,
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 1) throw usageError(`expected at most one artifact, got ${positional.length}`, 'pass a single artifact name or path')
  const windowMs = duration(flags.window, '--window') ?? 7 * 86_400_000
  const report = typeof flags.report === 'string' ? flags.report : undefined

  if (flags.summary) {
    if (!report) throw usageError('--summary needs --report FILE', 'pass the report file that drills append to')
    const now = new Date()
    const { records, skipped } = await readHistory(historyPathFor(report))
    const s = summarize(records, now, windowMs)
    const fmt = (ms: number | null | undefined) => (ms === null || ms === undefined ? 'n/a' : formatDuration(ms))
    reporter.heading(`Drill history: ${historyPathFor(report)} (last ${formatDuration(windowMs)})`)
    reporter.line(`drills: ${s.drills}, passed: ${s.passed}${skipped ? `, ${skipped} unreadable line(s) skipped` : ''}`)
    reporter.line(`observed RTO: median ${fmt(s.rto?.medianMs)}, worst ${fmt(s.rto?.worstMs)}`)
    reporter.line(`observed RPO: median ${fmt(s.rpo?.medianMs)}, worst ${fmt(s.rpo?.worstMs)}`)
    const proposal = s.proposed
      ? `proposed objectives: --rto ${fmt(s.proposed.rtoMs)} --rpo ${fmt(s.proposed.rpoMs)} (worst observed × 1.5, rounded up)`
      : 'no measured drills in the window: run drill.sh --report first'
    reporter.result({ history: historyPathFor(report), windowMs, skipped, ...s }, proposal)
    return
  }

  if (report) {
    await checkAppendable(report, '--report')
    await checkAppendable(historyPathFor(report), 'the drill history')
  }
  const { result, failure } = await runDrill(
    {
      artifact: positional[0],
      backupBase: env.BACKUP_BASE || undefined,
      dryRun: Boolean(flags['dry-run']),
      keep: Boolean(flags.keep),
      scratchDatabase: env.DRILL_DATABASE || undefined,
      windowMs,
      targets: {
        rtoMs: duration(flags.rto ?? env.DR_RTO_TARGET, flags.rto ? '--rto' : 'DR_RTO_TARGET'),
        rpoMs: duration(flags.rpo ?? env.DR_RPO_TARGET, flags.rpo ? '--rpo' : 'DR_RPO_TARGET'),
      },
      checks: checkSpecFromFlags(lists, flags),
      jobs: parseJobs(flags.jobs, env.RESTORE_JOBS),
      stagingDir: env.RESTORE_STAGING_DIR || undefined,
      stage: stagingWanted(env),
      env,
      now: new Date(),
    },
    reporter,
  )
  // Interrupted: the signal handler reports it and exits 130. A cancelled drill measured nothing,
  // so it goes into neither the report nor the history (a 'failed' line there would skew the RTO summary).
  if (interrupted()) return
  if (report) {
    await appendSynced(report, renderMarkdown(result))
    await appendSynced(historyPathFor(report), JSON.stringify(historyRecord(result)) + '\n')
  }
  const fmt = (ms: number | null) => (ms === null ? '—' : formatDuration(ms))
  for (const p of result.phases) reporter.line(`${p.name.padEnd(8)} ${p.status.padEnd(8)} ${fmt(p.ms)}`)
  reporter.line(`RTO measured: ${fmt(result.rtoMs)}${result.targets.rtoMs ? ` (target ${formatDuration(result.targets.rtoMs)}: ${result.judgement.rto})` : ''}`)
  reporter.line(
    `RPO worst case: ${fmt(result.rpo.worstCaseMs)} (newest backup ${fmt(result.rpo.newestAgeMs)} old, largest gap ${fmt(result.rpo.largestGapMs)} over ${formatDuration(windowMs)})${
      result.targets.rpoMs ? ` (target ${formatDuration(result.targets.rpoMs)}: ${result.judgement.rpo})` : ''
    }`,
  )
  if (failure) throw new DrError(failure.kind, failure.message, failure.fix, { ...result })
  reporter.result({ ...result }, `drill ${result.verdict}: ${result.artifact}${result.rtoMs === null ? '' : `, RTO ${fmt(result.rtoMs)}`}`)
})
