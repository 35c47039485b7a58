#!/usr/bin/env -S sh -c 'exec sh "$(dirname "$(realpath "$0")")/../lib/cli/launch.sh" "$(realpath "$0")" "$@"'
// Runs under zx with tsx (see the line above): it finds its own node_modules,
// so cron may call it by absolute path from any working directory.
import { parseArgs } from '../lib/cli/args.ts'
import { runBackup } from '../lib/commands/backup.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { envFlag, flagOrEnv } from '../lib/cli/switches.ts'
import { usageError } from '../lib/cli/errors.ts'
import { formatBytes } from '../lib/cli/report.ts'
import { parseDuration } from '../lib/policy/duration.ts'
import { encryptionPolicyFromEnv, recipientsFromEnv } from '../lib/crypto/age.ts'
import { parseRoots } from '../lib/files/roots.ts'
import { hasKeepRules, joinKeepValues, KEEP_FLAGS, KEEP_USAGE, keepRules } from '../lib/cli/keep-flags.ts'
import type { RetentionRules } from '../lib/policy/retention.ts'

/** Retention after the backup only when some rule is given (by flag or BACKUP_KEEP_*). */
function pruneFrom(rules: RetentionRules, partialAge: unknown): { rules: RetentionRules; partialAgeMs: number } | null {
  if (!hasKeepRules(rules)) {
    if (partialAge !== undefined) throw usageError('--partial-age applies to pruning after the backup', 'add a --keep-* rule, or drop --partial-age')
    return null
  }
  return { rules, partialAgeMs: typeof partialAge === 'string' ? parseDuration(partialAge, '--partial-age') : 24 * 3_600_000 }
}

/** PostgreSQL takes lock_timeout and statement_timeout in whole milliseconds up to 2^31 - 1 (about 24.8 days). */
const MAX_LOCK_WAIT_MS = 2 ** 31 - 1

function lockWait(flag: unknown, fromEnv: string | undefined): number {
  const what = flag ? '--lock-wait-timeout' : 'PG_LOCK_WAIT_TIMEOUT'
  const ms = parseDuration(String(flag ?? (fromEnv || '5m')), what)
  if (ms > MAX_LOCK_WAIT_MS) throw usageError(`${what} is longer than PostgreSQL takes (at most 24d)`, 'use a shorter wait, e.g. 5m or 1h')
  return ms
}

const USAGE = `Usage: backup.sh --output DIR [--include-postgres] [--path PATH]... [--dry-run] [--json]

Writes DIR/conductor-backup-YYYYMMDDTHHMMSSZ/ (UTC) holding manifest.json,
manifest.json.sha256 and, when enabled, postgres.dump.zst (pg_dump -Fc -Z0
compressed by zstd -T0 -3) with the row count of every table, and the
application's files as files.tar.zst (GNU tar, pax) with an index of every
file's SHA-256 (files.index.jsonl).

  --output DIR          where artifacts go; created with mode 0700 if missing; or
                        s3://BUCKET/PREFIX (credentials and endpoint from the AWS
                        variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
                        AWS_ENDPOINT_URL for S3-compatible servers, or AWS_PROFILE)
  --copy-to s3://BUCKET/PREFIX  after the backup, copy it there too and read it back
                        (repeatable); the local copy stays
  --include-postgres    include the database (same as INCLUDE_POSTGRES=true)
  --path PATH           a directory or file of the application to include; repeatable,
                        and BACKUP_PATHS=/a:/b (colon-separated) adds more
  --lock-wait-timeout DUR  give up when a table stays locked this long (default 5m,
                        or PG_LOCK_WAIT_TIMEOUT); a cron backup fails instead of stalling
  --dry-run             validate and print the plan; write nothing, need no secrets
After a successful backup, prune with restic-style rules (see prune.sh, docs/retention.md):
${KEEP_USAGE}
  --partial-age DUR     remove abandoned partial backups idle this long (default 24h)
  --json                print one JSON result on stdout (for cron)
  -h, --help            this text

Encryption: BACKUP_AGE_RECIPIENTS (age1… public keys) and/or BACKUP_AGE_RECIPIENTS_FILE
encrypt every data file with age (.age); BACKUP_ENCRYPTION=required refuses to run
without a recipient. The backup host needs no private key.

The database is dumped only when it is included AND ENABLE_POSTGRES_DUMP=true.
The cluster's roles and memberships go along (roles.json) without password
hashes unless BACKUP_ROLE_PASSWORDS=true.
Connection: PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD (or ~/.pgpass), or
DATABASE_URL. Passwords are never put on a command line or printed.

Exit codes: 0 ok, 1 runtime failure, 2 usage, 3 missing/unusable input,
4 verification failed, 130 interrupted. See docs/operators-guide.md.`

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, env, reporter }) => {
  const { flags, lists, positional } = parseArgs(joinKeepValues(argv), {
    boolean: ['dry-run', 'include-postgres', 'json', 'help'],
    string: ['output', 'lock-wait-timeout', ...KEEP_FLAGS, 'partial-age'],
    repeatable: ['path', 'copy-to'],
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 0) throw usageError(`unexpected argument '${positional[0]}'`, 'backup.sh takes only options; see --help')
  const output = flags.output
  if (typeof output !== 'string') throw usageError('--output is required', 'pass --output DIR, e.g. --output /tmp/backups')

  const result = await runBackup(
    {
      output,
      dryRun: Boolean(flags['dry-run']),
      includePostgres: flagOrEnv(flags['include-postgres'] === true, env, 'INCLUDE_POSTGRES'),
      enablePostgresDump: envFlag(env, 'ENABLE_POSTGRES_DUMP'),
      rolePasswords: envFlag(env, 'BACKUP_ROLE_PASSWORDS'),
      lockWaitTimeoutMs: lockWait(flags['lock-wait-timeout'], env.PG_LOCK_WAIT_TIMEOUT),
      paths: parseRoots(lists.path ?? [], env.BACKUP_PATHS, process.cwd()),
      copyTo: lists['copy-to'] ?? [],
      recipients: await recipientsFromEnv(env),
      encryption: encryptionPolicyFromEnv(env),
      prune: pruneFrom(keepRules(flags, env), flags['partial-age']),
      now: new Date(),
      env,
    },
    reporter,
  )
  reporter.result(
    { ...result },
    result.dryRun
      ? `dry run ok: would write ${result.path}`
      : `backup complete: ${result.path} (${
          [
            result.postgres.status === 'dumped'
              ? `database ${result.postgres.database}`
              : result.filesystem
                ? 'database skipped'
                : 'manifest only, database skipped',
            result.filesystem?.status === 'archived' ? `${result.filesystem.entries} file entries` : null,
            result.encryption ? 'encrypted' : null,
            formatBytes(result.bytes),
          ]
            .filter(Boolean)
            .join(', ')
        }, ${(result.durationMs / 1000).toFixed(1)} s)`,
  )
})
