import { usageError } from '../cli/errors.ts'

/**
 * Which backups to keep: restic's `forget` policy (internal/restic/snapshot_policy.go),
 * on UTC calendar buckets. Pure: a function of the artifacts, the rules and
 * `now`; the prune command does the listing and the deleting.
 */

/** How many to keep per rule; a rule left out (undefined) is not given. 0 is given and keeps nothing by itself. */
export interface RetentionRules {
  last?: number
  hourly?: number
  daily?: number
  weekly?: number
  monthly?: number
  yearly?: number
}

export const RULE_NAMES = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const
export type RuleName = (typeof RULE_NAMES)[number]

/** A complete backup as the policy sees it; the caller's own fields ride along. */
export interface Candidate {
  name: string
  createdAt: Date
}

export interface RetentionDecision<T extends Candidate = Candidate> {
  artifact: T
  keep: boolean
  /**
   * Why it is kept, in rule order, e.g. ['last 3', 'daily 2025-03-14',
   * 'weekly 2025-W11']; 'newest' when only the safety rule keeps it;
   * 'future …' for a stamp after `now`. Empty when it is removed.
   */
  reasons: string[]
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0')

/** Monday-based ISO 8601 week of the UTC date, e.g. '2025-W01' for 2024-12-30. */
export function isoWeek(d: Date): string {
  const day = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())
  const weekday = (new Date(day).getUTCDay() + 6) % 7 // Monday 0 … Sunday 6
  // A week belongs to the year its Thursday is in; that Thursday's day of the year gives the week.
  const thursday = new Date(day + (3 - weekday) * 86_400_000)
  const year = thursday.getUTCFullYear()
  const dayOfYear = Math.round((thursday.getTime() - Date.UTC(year, 0, 1)) / 86_400_000)
  return `${year}-W${pad(Math.floor(dayOfYear / 7) + 1)}`
}

/** The calendar bucket of each rule, in UTC (restic uses the snapshot's local time). */
const BUCKETS: Record<Exclude<RuleName, 'last'>, (d: Date) => string> = {
  hourly: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}`,
  daily: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`,
  weekly: isoWeek,
  monthly: (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`,
  yearly: (d) => `${d.getUTCFullYear()}`,
}

/** The rules that were given, validated: whole numbers from 0 up; anything else is a usage error. */
export function givenRules(rules: RetentionRules): Array<[RuleName, number]> {
  const given: Array<[RuleName, number]> = []
  for (const name of RULE_NAMES) {
    const n = rules[name]
    if (n === undefined) continue
    if (!Number.isSafeInteger(n) || n < 0) throw usageError(`keep ${name} must be a whole number from 0 up, got ${String(n)}`, `e.g. --keep-${name} 7`)
    given.push([name, n])
  }
  return given
}

/**
 * The given rules, or a usage error when there are none: a command that
 * deletes backups must be told what to keep, never fall back to a default.
 */
export function requireRules(rules: RetentionRules): Array<[RuleName, number]> {
  const given = givenRules(rules)
  if (given.length === 0) {
    throw usageError('no retention rule given, so nothing would be kept', 'say what to keep, e.g. --keep-daily 7 --keep-weekly 4 (or BACKUP_KEEP_DAILY=7)')
  }
  return given
}

/** For messages: 'last 3, daily 7', in rule order. */
export function describeRules(rules: RetentionRules): string {
  return givenRules(rules)
    .map(([name, n]) => `${name} ${n}`)
    .join(', ')
}

/** Newest first; equal times by name, also newest first (the order the listing uses). */
function newestFirst(a: Candidate, b: Candidate): number {
  const d = b.createdAt.getTime() - a.createdAt.getTime()
  if (d !== 0) return d
  return a.name < b.name ? 1 : a.name > b.name ? -1 : 0
}

/**
 * Decides keep or remove for every candidate (complete backups only),
 * newest first. restic's semantics: `last N` keeps the N newest; `hourly
 * N` keeps the newest backup in each of the N most recent UTC hours that
 * hold one (a gap uses up nothing), and likewise `daily` (UTC day),
 * `weekly` (ISO week), `monthly` and `yearly`. One backup may be kept by
 * several rules, and every rule counts independently.
 *
 * Safety, beyond restic:
 * - no rule given at all is a usage error: "keep nothing" is never a default;
 * - the newest backup is always kept (reason 'newest' when no rule keeps it,
 *   e.g. with only `last 0`), so a non-empty list never loses everything;
 * - a backup stamped after `now` (a clock that ran ahead) is kept, and
 *   takes no rule's slot: it cannot push the real newest out of `last 1`.
 */
export function applyRetention<T extends Candidate>(candidates: readonly T[], rules: RetentionRules, now: Date): RetentionDecision<T>[] {
  const given = requireRules(rules)
  for (const c of candidates) {
    if (!(c.createdAt instanceof Date) || Number.isNaN(c.createdAt.getTime())) throw new TypeError(`artifact ${c.name} has no valid createdAt`)
  }
  const sorted = [...candidates].sort(newestFirst)
  const decisions: RetentionDecision<T>[] = sorted.map((artifact) => ({ artifact, keep: false, reasons: [] }))

  const future = decisions.filter((d) => d.artifact.createdAt.getTime() > now.getTime())
  for (const d of future) {
    d.keep = true
    d.reasons.push('future: stamped after now (clock skew?)')
  }
  const judged = decisions.filter((d) => d.artifact.createdAt.getTime() <= now.getTime())

  for (const [rule, count] of given) {
    let left = count
    let lastBucket: string | undefined
    for (const d of judged) {
      if (left === 0) break
      if (rule === 'last') {
        d.reasons.push(`last ${count}`)
        left--
        continue
      }
      const bucket = BUCKETS[rule](d.artifact.createdAt)
      // Newest first: the first backup seen in a bucket is that bucket's newest.
      if (bucket === lastBucket) continue
      lastBucket = bucket
      d.reasons.push(`${rule} ${bucket}`)
      left--
    }
  }
  for (const d of judged) if (d.reasons.length > 0) d.keep = true

  const newest = judged[0]
  if (newest && !newest.keep) {
    newest.keep = true
    newest.reasons.push('newest')
  }
  return decisions
}
