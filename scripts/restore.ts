#!/usr/bin/env -S sh -c 'exec sh "$(dirname "$(realpath "$0")")/../lib/cli/launch.sh" "$(realpath "$0")" "$@"'
// Runs under zx with tsx (see the line above): it finds its own node_modules,
// so it may be called by absolute path from any working directory.
import { stagingWanted } from '../lib/postgres/stage-dump.ts'
import { parseArgs } from '../lib/cli/args.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { checkSpecFromFlags, CHECK_FLAGS, hasOperatorChecks } from '../lib/cli/check-flags.ts'
import { envFlag } from '../lib/cli/switches.ts'
import { usageError } from '../lib/cli/errors.ts'
import { parseJobs } from '../lib/cli/jobs.ts'
import { resolve } from 'node:path'
import { runRestore } from '../lib/commands/restore.ts'

const USAGE = `Usage: BACKUP_BASE=DIR restore.sh [--dry-run] [--json] ARTIFACT
       restore.sh [--dry-run] [--json] PATH/TO/ARTIFACT

Verifies the artifact first (manifest checksum, then every file's size and
SHA-256); nothing is touched unless all of it matches.

  ARTIFACT     an artifact name under BACKUP_BASE, e.g. conductor-backup-20240315T120000Z,
               or a path to an artifact directory (anything containing '/')
  --dry-run    verify and print the plan; change nothing
  --json       print one JSON result on stdout (for scripts)
  -h, --help   this text

Checks after a database restore (exit 5 when one fails; validate these
before reopening traffic):
  --check             every table recorded in the manifest has its recorded row count
  --check-sql FILE    each statement must succeed and return true or no rows
  --check-cmd CMD     run CMD (sh -c) with the restored database's PG* variables; must exit 0
  --check-url URL     HTTP GET must answer 2xx (e.g. the application's health endpoint)
  --check-timeout DUR per check (default 5m)
Any --check-* option implies --check.

RESTORE_POSTGRES=true restores the database dump into PGDATABASE (or
DATABASE_URL's database; by default the database that was backed up). A new
database is created beside the target; the dump is decompressed into
RESTORE_STAGING_DIR (default the system temp dir; hashed again on the way:
nothing unverified is used) and restored by one pg_restore --jobs, or, without
room for that (or on tmpfs, encrypted, formatVersion 1, RESTORE_STAGE_DUMP=false),
streamed into it with only its indexes and constraints built in parallel; after
the checks it is swapped in under the target's name in one step. The database it replaces is kept as
<name>_pre_restore_<UTC stamp> until you drop it (or --drop-old). A failure or
interrupt before the swap leaves the target exactly as it was. Sessions on the
target are ended at the swap: stop the application first.

  --jobs N      pg_restore parallelism (or RESTORE_JOBS; default min(4, CPUs))
  --drop-old    drop the replaced database once the swap succeeded
  --in-place    instead: every object of the dump is dropped and recreated inside
                the existing database in one transaction (pg_restore --clean
                --single-transaction; objects not in the dump are kept; no -j)

RESTORE_FILES=true restores the application's files (backup.sh --path) to the
places they were backed up from, or under --target DIR. They are extracted into
a staging directory beside each destination, every member checked against the
file index on the way in and every restored file (type, mode, owner, mtime,
SHA-256) checked again before anything moves; then each path is swapped in and
what it replaces is kept as PATH.pre-restore-<UTC stamp>.

  --target DIR  re-root restored files under DIR (DIR/etc/conductor for /etc/conductor)

Encrypted artifacts (age) verify without a key; a real restore needs
BACKUP_AGE_IDENTITY_FILE, which is checked against the artifact first.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 missing/unusable input,
4 verification failed, 5 a check failed, 130 interrupted.
See docs/operators-guide.md.`

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, env, reporter }) => {
  const { flags, lists, positional } = parseArgs(argv, {
    boolean: ['dry-run', 'json', 'help', 'check', 'in-place', 'drop-old'],
    string: ['check-timeout', 'jobs', 'target'],
    repeatable: CHECK_FLAGS,
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 1) throw usageError(`expected one artifact, got ${positional.length}`, 'pass a single artifact name')
  if (flags['in-place'] && (flags['drop-old'] || flags.jobs !== undefined)) {
    throw usageError('--drop-old and --jobs apply to the default restore, not to --in-place', 'drop --in-place, or drop those options')
  }
  const checks = checkSpecFromFlags(lists, flags)
  const result = await runRestore(
    {
      artifact: positional[0],
      backupBase: env.BACKUP_BASE || undefined,
      dryRun: Boolean(flags['dry-run']),
      restorePostgres: envFlag(env, 'RESTORE_POSTGRES'),
      restoreFiles: envFlag(env, 'RESTORE_FILES'),
      filesTarget: flags.target === undefined ? undefined : resolve(String(flags.target)),
      checks: flags.check || hasOperatorChecks(checks) ? checks : null,
      inPlace: Boolean(flags['in-place']),
      dropOld: Boolean(flags['drop-old']),
      jobs: parseJobs(flags.jobs, env.RESTORE_JOBS),
      stagingDir: env.RESTORE_STAGING_DIR || undefined,
      stage: stagingWanted(env),
      now: new Date(),
      env,
    },
    reporter,
  )
  const what = [
    result.postgres.status === 'restored' ? `database ${result.postgres.database} restored` : 'no database restored',
    result.files.status === 'restored' ? `${result.files.entries} file entries restored` : null,
  ]
    .filter(Boolean)
    .join(', ')
  reporter.result(
    { ...result },
    result.dryRun ? `dry run ok: ${result.artifact} verified, nothing changed` : `restore complete: ${result.artifact} verified, ${what}`,
  )
})
