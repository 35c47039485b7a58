import { resolve } from 'node:path'
import type { ArtifactEntry } from '../artifact/list.ts'
import type { S3Store } from '../storage/s3.ts'
import { storeAt } from './artifact-location.ts'
import { DrError } from '../cli/errors.ts'
import { escapeControl, quoteValue } from '../cli/escape.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { formatDuration } from '../policy/duration.ts'
import { judge, rpoFromBackups, stampedAhead } from '../policy/objectives.ts'

export interface StatusOptions {
  /** The backup directory or s3:// location (BACKUP_BASE or the positional argument). */
  base: string
  /** Multipart uploads in a bucket older than this are reported as left behind by interrupted runs. */
  uploadAgeMs: number
  env: NodeJS.ProcessEnv
  /** The newest complete backup must be at most this old; undefined: no objective, report only. */
  maxAgeMs: number | undefined
  /** Where the limit came from, for the message: `--max-age` or `DR_RPO_TARGET`. */
  maxAgeSource: string
  now: Date
}

/** One entry as printed in `--json`: dates as ISO strings, ages in ms from `now`. */
export interface StatusEntry {
  name: string
  path: string
  kind: ArtifactEntry['kind']
  createdAt: string | null
  completedAt: string | null
  /** Since createdAt; negative when the artifact is stamped in the future (clock skew). */
  ageMs: number | null
  bytes: number | null
  database: string | null
  problem: string | null
  modifiedAt: string | null
  /** Since the directory was last written to; for a partial, how long it has been idle. */
  idleMs: number | null
}

export interface StatusResult {
  base: string
  /** Unfinished multipart uploads in a bucket, from interrupted runs; always empty for a directory. */
  staleUploads: { key: string; initiated: string | null }[]
  /** Newest COMPLETE artifact; partial and damaged ones restore nothing. */
  newest: string | null
  newestAgeMs: number | null
  /** Complete and damaged artifacts, newest first. */
  artifacts: StatusEntry[]
  partials: StatusEntry[]
  stale: boolean
  maxAgeMs: number | null
  /** The flag or variable the limit came from, for messages; null without a limit. */
  maxAgeSource: string | null
}

export interface Freshness {
  newest: string | null
  newestAgeMs: number | null
  stale: boolean
  /** Complete backups stamped further ahead than FUTURE_TOLERANCE_MS: not counted (see freshness). */
  future: string[]
}

/**
 * Pure: is the newest complete backup young enough? Reuses the drill's RPO
 * arithmetic, so status and drills agree on what "age" means (a backup
 * stamped in the future counts as age 0), and judge()'s rule that no
 * backup at all misses any objective.
 */
export function freshness(entries: readonly ArtifactEntry[], now: Date, maxAgeMs: number | undefined): Freshness {
  const all = entries
    // A complete artifact without a database dump restores nothing: it is not a backup for the objective.
    .filter((e) => e.kind === 'complete' && e.database !== null && e.createdAt !== null)
    .map((e) => ({ name: e.name, createdAt: e.createdAt! }))
  // One backup made while the clock ran a year ahead would otherwise read as "0 s old" until that
  // date and silence --max-age while backups stop; it is reported, and the rest are judged.
  const ahead = (p: { createdAt: Date }) => stampedAhead(p.createdAt, now)
  const measure = rpoFromBackups(all.filter((p) => !ahead(p)), now, 0)
  const verdict = judge({ rpoMs: measure.newestAgeMs }, { rpoMs: maxAgeMs })
  return { newest: measure.newest, newestAgeMs: measure.newestAgeMs, stale: verdict.rpo === 'missed', future: all.filter(ahead).map((p) => p.name) }
}

const since = (d: Date | null, now: Date) => (d === null ? null : now.getTime() - d.getTime())

function toStatusEntry(e: ArtifactEntry, now: Date): StatusEntry {
  return {
    name: e.name,
    path: e.path,
    kind: e.kind,
    createdAt: e.createdAt?.toISOString() ?? null,
    completedAt: e.completedAt?.toISOString() ?? null,
    ageMs: since(e.createdAt, now),
    bytes: e.bytes,
    database: e.database,
    problem: e.problem,
    modifiedAt: e.modifiedAt?.toISOString() ?? null,
    idleMs: since(e.modifiedAt, now),
  }
}

const age = (ms: number | null) => (ms === null ? '?' : formatDuration(ms))

/**
 * Aligned columns. Names are escaped before measuring so that a name with
 * control characters still lines up once the reporter has escaped it
 * (escaping is idempotent: a backslash is not a control character).
 */
export function formatTable(entries: readonly StatusEntry[]): string[] {
  const rows = [
    ['NAME', 'AGE', 'SIZE', 'DATABASE', 'STATE'],
    ...entries.map((e) => [
      escapeControl(e.name),
      age(e.ageMs),
      e.bytes === null ? '-' : formatBytes(e.bytes),
      e.database === null ? '-' : escapeControl(e.database),
      e.kind,
    ]),
  ]
  const widths = rows[0]!.map((_, col) => Math.max(...rows.map((r) => r[col]!.length)))
  return rows.map((r) => r.map((cell, col) => (col === r.length - 1 ? cell : cell.padEnd(widths[col]!))).join('  '))
}

/** Lists BACKUP_BASE and reports it; decides staleness but does not throw for it (see objectiveMissed). */
export async function runStatus(opts: StatusOptions, reporter: Reporter): Promise<StatusResult> {
  const store = await storeAt(opts.base, 'BACKUP_BASE', opts.env)
  const base = store.kind === 'local' ? resolve(opts.base) : store.url
  const entries = await store.list()
  // A bucket also collects multipart uploads that no backup will finish (a killed run): they cost money, list them.
  const staleUploads = store.kind === 's3' ? (await (store as S3Store).staleUploads(opts.uploadAgeMs)).map((u) => ({ key: u.key, initiated: u.initiated?.toISOString() ?? null })) : []
  const { newest, newestAgeMs, stale, future } = freshness(entries, opts.now, opts.maxAgeMs)
  const all = entries.map((e) => toStatusEntry(e, opts.now))

  reporter.heading(`Backups in ${base}`)
  if (all.length === 0) reporter.line('no artifacts')
  else for (const row of formatTable(all)) reporter.line(row)

  for (const name of future) {
    reporter.warn(`artifact ${quoteValue(name)} is stamped in the future (the clock was ahead when it was made); it is not counted as the newest backup: check the host's clock`)
  }
  for (const e of all) {
    if (e.kind === 'damaged') {
      reporter.warn(`damaged artifact ${quoteValue(e.name)} cannot be restored: ${e.problem}`)
    } else if (e.kind === 'partial') {
      const idle = e.idleMs === null ? '' : `, last written ${age(e.idleMs)} ago`
      reporter.warn(
        `leftover partial backup ${quoteValue(e.name)} (started ${age(e.ageMs)} ago${idle}): from an interrupted run unless a backup is running now; it is not restorable and may be removed`,
      )
    }
  }

  for (const u of staleUploads) reporter.warn(`unfinished multipart upload ${quoteValue(u.key)} (started ${u.initiated ?? 'at an unknown time'}): from an interrupted backup; prune.sh aborts it with its partial artifact once idle past --partial-age (an upload outside any artifact: abort it by hand)`)

  return {
    base,
    staleUploads,
    newest,
    newestAgeMs,
    artifacts: all.filter((e) => e.kind !== 'partial'),
    partials: all.filter((e) => e.kind === 'partial'),
    stale,
    maxAgeMs: opts.maxAgeMs ?? null,
    maxAgeSource: opts.maxAgeMs === undefined ? null : opts.maxAgeSource,
  }
}

/** What else lies there that restores nothing, e.g. ['1 damaged', '2 partial']. */
function unusable(result: StatusResult): string[] {
  const damaged = result.artifacts.filter((e) => e.kind === 'damaged').length
  return [damaged > 0 ? `${damaged} damaged` : '', result.partials.length > 0 ? `${result.partials.length} partial` : ''].filter(Boolean)
}

function counts(result: StatusResult): string {
  const parts = unusable(result)
  return parts.length > 0 ? ` (also ${parts.join(', ')})` : ''
}

/**
 * The objective failure (exit 6). It is thrown instead of printing the
 * result, because runCli prints a failure as its own JSON document and
 * `--json` promises exactly one; the result rides along as the error's
 * details, so that document still holds the whole listing. The message
 * alone names the newest complete artifact and its age, for cron mail.
 */
export function objectiveMissed(result: StatusResult): DrError {
  const limit = `${formatDuration(result.maxAgeMs ?? 0)} (${result.maxAgeSource ?? '--max-age'})`
  const fix = 'check that scheduled backups run and succeed (cron mail, journal), then run backup.sh'
  if (result.newest === null || result.newestAgeMs === null) {
    return new DrError('objective', `no complete backup in ${quoteValue(result.base)} (one without a database dump does not count), required within ${limit}${counts(result)}`, fix, { ...result })
  }
  return new DrError(
    'objective',
    `newest complete backup ${result.newest} is ${formatDuration(result.newestAgeMs)} old, older than ${limit}${counts(result)}`,
    fix,
    { ...result },
  )
}

/** The human summary line of a result that met its objective (or had none). */
export function summaryLine(result: StatusResult): string {
  const within = result.maxAgeMs === null ? '' : `, within ${formatDuration(result.maxAgeMs)}`
  if (result.newest === null || result.newestAgeMs === null) return `no complete backup with a database dump in ${result.base}${counts(result)}`
  const complete = result.artifacts.filter((e) => e.kind === 'complete').length
  return `newest backup ${result.newest} is ${formatDuration(result.newestAgeMs)} old${within}; ${[`${complete} complete`, ...unusable(result)].join(', ')}`
}
