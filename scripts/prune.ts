#!/usr/bin/env -S sh -c 'exec sh "$(dirname "$(realpath "$0")")/../lib/cli/launch.sh" "$(realpath "$0")" "$@"'
// Runs under zx with tsx (see the line above): it finds its own node_modules,
// so cron may call it by absolute path from anywhere.
import { backupBaseFrom, parseArgs } from '../lib/cli/args.ts'
import { joinKeepValues, KEEP_FLAGS, KEEP_USAGE, keepRules } from '../lib/cli/keep-flags.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { runPrune, summaryLine } from '../lib/commands/prune.ts'
import { parseDuration } from '../lib/policy/duration.ts'
import { requireRules } from '../lib/policy/retention.ts'
import { storeAt } from '../lib/commands/artifact-location.ts'

const USAGE = `Usage: BACKUP_BASE=DIR prune.sh --keep-… N [--keep-… N …] [--partial-age DUR] [--dry-run] [--json]
       prune.sh --keep-… N … [options] DIR

Deletes the backups that no retention rule keeps, with restic's forget
semantics: the backups are sorted newest first, and each rule keeps its own
set; a backup kept by any rule stays. Buckets are UTC hours, UTC days, ISO
weeks (Monday to Sunday), months and years; a period without a backup uses up
nothing. At least one rule is required.

${KEEP_USAGE}
  DIR               the backup directory (instead of BACKUP_BASE)
  --partial-age DUR remove a .partial directory (an interrupted backup) only
                    when nothing was written to it for longer than DUR
                    (default 24h); make it longer than your longest backup
  --dry-run         delete nothing; show for each artifact keep or remove and why
  --json            one JSON document on stdout: {ok, store, dryRun, rules,
                    partialAgeMs, artifacts: [{name, kind, action, reasons,
                    removed, …}], removed, toRemove, kept}
  -h, --help        this text

A flag wins over its variable; the other variables still apply. N is a whole
number from 0 up; 0 keeps nothing by that rule.

Always kept, whatever the rules say: the newest complete backup, the newest
complete backup with a database dump, backups stamped in the future (clock
skew), damaged artifacts (reported, never deleted: inspect them), and partials
idle for less than --partial-age. A deletion removes the manifest first, so a
half-deleted artifact reads as damaged, never as complete. The first failed
deletion stops the run; what was removed before it is reported.

Exit codes: 0 ok, 1 runtime failure, 2 usage (no rule, a bad N or DUR),
3 backup directory missing or unreadable (or a deletion not permitted).
See docs/retention.md.`

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, env, reporter }) => {
  const { flags, positional } = parseArgs(joinKeepValues(argv), {
    boolean: ['dry-run', 'json', 'help'],
    string: [...KEEP_FLAGS, 'partial-age'],
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  const rules = keepRules(flags, env)
  requireRules(rules)
  const partialAge = flags['partial-age']
  const partialAgeMs = typeof partialAge === 'string' ? parseDuration(partialAge, '--partial-age') : 24 * 3_600_000

  const base = backupBaseFrom(positional, env, 'prune.sh --keep-daily 7 /path/to/backups')
  const store = await storeAt(base, 'BACKUP_BASE', env)
  const result = await runPrune({ store, rules, partialAgeMs, dryRun: Boolean(flags['dry-run']), now: new Date() }, reporter)
  reporter.result({ ...result }, summaryLine(result))
})
