import type { ArtifactEntry } from '../artifact/list.ts'
import { DrError } from '../cli/errors.ts'
import { escapeControl, quoteValue } from '../cli/escape.ts'
import type { Reporter } from '../cli/report.ts'
import { critical, InterruptedBeforeCritical } from '../cli/signals.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { formatDuration } from '../policy/duration.ts'
import { applyRetention, describeRules, requireRules, type RetentionRules } from '../policy/retention.ts'
import type { Store } from '../storage/store.ts'

export interface PruneOptions {
  /** Where the artifacts are; prune never asks which kind of store it is. */
  store: Store
  rules: RetentionRules
  /** A partial idle (by modifiedAt) longer than this is an abandoned run and is removed. */
  partialAgeMs: number
  dryRun: boolean
  now: Date
}

/** One artifact as printed in `--json`: what prune decided and why. */
export interface PruneEntry {
  name: string
  kind: ArtifactEntry['kind']
  createdAt: string | null
  modifiedAt: string | null
  database: string | null
  bytes: number | null
  action: 'keep' | 'remove'
  /** Why it is kept (every rule that keeps it), or why it is removed. */
  reasons: string[]
  /** Actually deleted by this run: false in a dry run, and for entries after a failure. */
  removed: boolean
  /** Why a damaged artifact is damaged; null otherwise. */
  problem: string | null
}

export interface PruneResult {
  store: string
  dryRun: boolean
  rules: RetentionRules
  partialAgeMs: number
  /** Every artifact, partial and damaged artifact, newest first. */
  artifacts: PruneEntry[]
  /** Names deleted by this run, in the order they were deleted. */
  removed: string[]
  /** Names that are (or in a dry run would be) deleted. */
  toRemove: string[]
  kept: { complete: number; damaged: number; partial: number }
}

export const NEWEST_WITH_DATABASE = 'newest with a database dump'

/**
 * The retention decision for complete artifacts, plus one safety rule that
 * needs to know what an artifact holds: the newest one with a database dump
 * is kept too, so a run of backups without the dump (the database switched
 * off by mistake) cannot push the last restorable database out of `last N`.
 */
function decideComplete(entries: readonly ArtifactEntry[], rules: RetentionRules, now: Date): Map<ArtifactEntry, string[] | null> {
  const complete = entries.filter((e): e is ArtifactEntry & { createdAt: Date } => e.kind === 'complete' && e.createdAt !== null)
  const decisions = applyRetention(complete, rules, now)
  const guard = decisions.find((d) => d.artifact.database !== null && d.artifact.createdAt.getTime() <= now.getTime())
  if (guard && !guard.keep) {
    guard.keep = true
    guard.reasons.push(NEWEST_WITH_DATABASE)
  }
  return new Map(decisions.map((d) => [d.artifact, d.keep ? d.reasons : null]))
}

/**
 * A partial is a backup in progress or one that was killed. Only its
 * idle time tells them apart; anything unclear keeps it.
 */
function decidePartial(e: ArtifactEntry, partialAgeMs: number, now: Date): { keep: boolean; reason: string } {
  const limit = `--partial-age ${formatDuration(partialAgeMs)}`
  if (e.modifiedAt === null) return { keep: true, reason: 'partial, last write unknown: may be a running backup' }
  const idleMs = now.getTime() - e.modifiedAt.getTime()
  if (idleMs > partialAgeMs) return { keep: false, reason: `abandoned partial, idle ${formatDuration(idleMs)}, longer than ${limit}` }
  return { keep: true, reason: `partial, idle ${formatDuration(Math.max(0, idleMs))}: may be a running backup (${limit})` }
}

function toEntry(e: ArtifactEntry, action: PruneEntry['action'], reasons: string[]): PruneEntry {
  return {
    name: e.name,
    kind: e.kind,
    createdAt: e.createdAt?.toISOString() ?? null,
    modifiedAt: e.modifiedAt?.toISOString() ?? null,
    database: e.database,
    bytes: e.bytes,
    action,
    reasons,
    removed: false,
    problem: e.problem,
  }
}

/** Pure: what prune does with each listed entry. Throws a usage error when no rule is given. */
export function planPrune(entries: readonly ArtifactEntry[], rules: RetentionRules, partialAgeMs: number, now: Date): PruneEntry[] {
  requireRules(rules)
  const complete = decideComplete(entries, rules, now)
  return entries.map((e) => {
    if (e.kind === 'damaged') return toEntry(e, 'keep', ['damaged: prune never removes it; inspect and remove it by hand'])
    if (e.kind === 'partial') {
      const p = decidePartial(e, partialAgeMs, now)
      return toEntry(e, p.keep ? 'keep' : 'remove', [p.reason])
    }
    const reasons = complete.get(e)
    // A complete entry without a time cannot be judged, so it is kept (the listing always has one).
    if (reasons === undefined) return toEntry(e, 'keep', ['no creation time: not judged'])
    return reasons === null ? toEntry(e, 'remove', ['no rule keeps it']) : toEntry(e, 'keep', reasons)
  })
}

/**
 * Deletion order: abandoned partials first (they restore nothing), then
 * complete artifacts oldest first, so a run cut short has thinned the
 * oldest history and left the newer backups alone.
 */
function deletionOrder(plan: readonly PruneEntry[]): PruneEntry[] {
  const doomed = plan.filter((p) => p.action === 'remove')
  return [...doomed.filter((p) => p.kind === 'partial'), ...doomed.filter((p) => p.kind !== 'partial').reverse()]
}

function countKept(plan: readonly PruneEntry[]): PruneResult['kept'] {
  const kept = plan.filter((p) => p.action === 'keep')
  return {
    complete: kept.filter((p) => p.kind === 'complete').length,
    damaged: kept.filter((p) => p.kind === 'damaged').length,
    partial: kept.filter((p) => p.kind === 'partial').length,
  }
}

/** Aligned columns: ACTION, NAME, WHY; names escaped before measuring, as status does. */
export function formatPlan(plan: readonly PruneEntry[], dryRun: boolean): string[] {
  const rows = [['ACTION', 'NAME', 'WHY'], ...plan.map((p) => [p.action === 'keep' ? 'keep' : dryRun ? 'would remove' : 'remove', escapeControl(p.name), p.reasons.join(', ')])]
  const widths = [0, 1].map((col) => Math.max(...rows.map((r) => r[col]!.length)))
  return rows.map(([action, name, why]) => `${action!.padEnd(widths[0]!)}  ${name!.padEnd(widths[1]!)}  ${why}`)
}

/**
 * Lists the store, decides, reports the plan, and (unless a dry run)
 * deletes through store.remove, manifest first, one artifact at a time,
 * each one a critical step. Damaged artifacts are never touched. Stops at the first failed deletion with a DrError whose
 * details are the result so far, so what was removed is still reported.
 */
export async function runPrune(opts: PruneOptions, reporter: Reporter): Promise<PruneResult> {
  requireRules(opts.rules)
  const entries = await opts.store.list()
  const plan = planPrune(entries, opts.rules, opts.partialAgeMs, opts.now)
  const byEntry = new Map(plan.map((p, i) => [p, entries[i]!]))
  const order = deletionOrder(plan)
  const result: PruneResult = {
    store: opts.store.url,
    dryRun: opts.dryRun,
    rules: { ...opts.rules },
    partialAgeMs: opts.partialAgeMs,
    artifacts: plan,
    removed: [],
    toRemove: order.map((p) => p.name),
    kept: countKept(plan),
  }

  reporter.heading(`${opts.dryRun ? 'Dry run: nothing is deleted. ' : ''}Prune ${opts.store.url}, keeping ${describeRules(opts.rules)}`)
  if (plan.length === 0) reporter.line('no artifacts')
  else for (const row of formatPlan(plan, opts.dryRun)) reporter.line(row)
  for (const p of plan) {
    if (p.kind === 'damaged') reporter.warn(`damaged artifact ${quoteValue(p.name)} left in place: ${p.problem}`)
  }
  if (opts.dryRun) return result

  for (const p of order) {
    try {
      // An interrupt lets the deletion in progress finish (no half-deleted artifact) and starts no other.
      await critical(`removing ${escapeControl(p.name)}`, () => opts.store.remove(byEntry.get(p)!))
    } catch (err) {
      if (err instanceof InterruptedBeforeCritical) throw err
      throw removalFailed(result, p, err)
    }
    p.removed = true
    result.removed.push(p.name)
  }
  return result
}

function removalFailed(result: PruneResult, p: PruneEntry, err: unknown): DrError {
  const cause = err instanceof DrError ? err : fromSystemError(err)
  const why = cause?.message ?? (err as Error)?.message ?? String(err)
  const done = result.removed.length === 0 ? 'nothing was removed before it' : `removed before it: ${result.removed.join(', ')}`
  return new DrError(
    cause?.kind ?? 'runtime',
    `cannot remove ${p.kind === 'partial' ? 'partial ' : ''}${quoteValue(p.name)} from ${quoteValue(result.store)}: ${why} (${done})`,
    `${cause?.fix ? `${cause.fix}; then ` : ''}run prune again: what was removed stays removed, the rest is as before`,
    { ...result },
  )
}

/** The human summary line. */
export function summaryLine(result: PruneResult): string {
  const kept = `kept ${result.kept.complete} complete${result.kept.damaged ? `, ${result.kept.damaged} damaged` : ''}${result.kept.partial ? `, ${result.kept.partial} partial` : ''}`
  const plural = (n: number) => `${n} artifact${n === 1 ? '' : 's'}`
  if (result.dryRun) return `dry run: would remove ${plural(result.toRemove.length)}, ${kept.replace('kept', 'keep')}`
  return `removed ${plural(result.removed.length)}, ${kept}`
}
