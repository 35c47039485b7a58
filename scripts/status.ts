#!/usr/bin/env -S sh -c 'exec sh "$(dirname "$(realpath "$0")")/../lib/cli/launch.sh" "$(realpath "$0")" "$@"'
// Runs under zx with tsx (see the line above): it finds its own node_modules,
// so cron or a monitoring check may call it by absolute path from anywhere.
import { backupBaseFrom, parseArgs } from '../lib/cli/args.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { objectiveMissed, runStatus, summaryLine } from '../lib/commands/status.ts'
import { parseDuration } from '../lib/policy/duration.ts'

const USAGE = `Usage: BACKUP_BASE=DIR status.sh [--max-age DUR] [--json]
       status.sh [--max-age DUR] [--json] DIR

Lists the artifacts in the backup directory, newest first: name, age, size,
database and state (complete, damaged or partial). A complete artifact has an
intact manifest (checked against manifest.json.sha256); its data files are not
hashed here, restore verifies every byte. Damaged artifacts and leftover
.partial directories from interrupted runs are reported as warnings on stderr.

  DIR            the backup directory (instead of BACKUP_BASE)
  --max-age DUR  fail with exit 6 unless the newest complete backup holding a
                 database dump is at most DUR old (by the manifest's
                 createdAt), e.g. 26h, 1d, 90m; one without a dump restores
                 nothing and does not count;
                 default: DR_RPO_TARGET if set, otherwise no limit
  --upload-age DUR  in a bucket, warn about unfinished multipart uploads older than
                 DUR (default 24h): left by killed runs, and billed
  --json         print one JSON document on stdout (for monitoring):
                 {ok, base, newest, newestAgeMs, artifacts, partials, stale, maxAgeMs}
                 when the limit is missed it is the failure document: the same
                 fields with ok false and stale true, plus exitCode 6, error
                 (naming the newest complete backup and its age) and fix
  -h, --help     this text

Without a limit it exits 0 even when there is no backup at all (and says so).

Exit codes: 0 ok, 1 runtime failure, 2 usage (also a bad DUR), 3 backup directory
missing or unreadable, 6 no complete backup recent enough. See docs/operators-guide.md.`

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, env, reporter }) => {
  const { flags, positional } = parseArgs(argv, {
    boolean: ['json', 'help'],
    string: ['max-age', 'upload-age'],
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  const base = backupBaseFrom(positional, env, 'status.sh /path/to/backups')
  // The flag wins; the variable lets one setting drive both drills and monitoring.
  const flag = flags['max-age']
  const fromEnv = env.DR_RPO_TARGET?.trim() ? env.DR_RPO_TARGET : undefined
  const maxAgeSource = typeof flag === 'string' ? '--max-age' : 'DR_RPO_TARGET'
  const raw = typeof flag === 'string' ? flag : fromEnv
  const maxAgeMs = raw === undefined ? undefined : parseDuration(raw, maxAgeSource)

  const result = await runStatus({ base, maxAgeMs, maxAgeSource, uploadAgeMs: typeof flags['upload-age'] === 'string' ? parseDuration(flags['upload-age'], '--upload-age') : 24 * 3_600_000, env, now: new Date() }, reporter)
  // Thrown, not printed: runCli prints the failure, listing included, as the one JSON document.
  if (result.stale) throw objectiveMissed(result)
  reporter.result({ ...result }, summaryLine(result))
})
