export interface BackupPoint {
  name: string
  createdAt: Date
}

/** Stands in for a backup name when a gap runs up to the moment of measuring. */
export const NOW = 'now'

export interface RpoMeasure {
  newestAgeMs: number | null
  newest: string | null
  largestGapMs: number | null
  gapBetween: [string, string] | null
  worstCaseMs: number | null
  backupsInWindow: number
}

export type Verdict = 'met' | 'missed' | 'unset'

export interface Judgement {
  rto: Verdict
  rpo: Verdict
  met: boolean
}

/**
 * How much data a disaster at the worst moment of the window would have lost.
 * `points` must be complete backups only: a partial artifact restores nothing.
 */
export function rpoFromBackups(points: readonly BackupPoint[], now: Date, windowMs: number): RpoMeasure {
  const nowMs = now.getTime()
  if (Number.isNaN(nowMs)) throw new RangeError('rpoFromBackups: now is not a valid date')
  if (!(windowMs >= 0)) throw new RangeError(`rpoFromBackups: window must be >= 0, got ${windowMs}`)

  // A backup stamped in the future is clock skew between hosts; the artifact
  // exists, so it protects data up to about now, and clamping keeps every age
  // and gap non-negative.
  const sorted = points
    .filter((p) => !Number.isNaN(p.createdAt.getTime()))
    .map((p) => ({ name: p.name, at: Math.min(p.createdAt.getTime(), nowMs) }))
    .sort((a, b) => a.at - b.at || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))

  if (sorted.length === 0) {
    return { newestAgeMs: null, newest: null, largestGapMs: null, gapBetween: null, worstCaseMs: null, backupsInWindow: 0 }
  }

  const newest = sorted[sorted.length - 1]!
  const newestAgeMs = nowMs - newest.at

  const start = nowMs - windowMs
  const firstInWindow = sorted.findIndex((p) => p.at >= start)
  const inWindow = firstInWindow === -1 ? [] : sorted.slice(firstInWindow)
  // The backup just before the window is what a disaster early in the window
  // would have restored, so the exposure it leaves counts. Without one (a new
  // installation) nothing is known about the time before the first backup.
  const anchorIndex = firstInWindow === -1 ? sorted.length - 1 : firstInWindow - 1
  const anchors = anchorIndex >= 0 ? [sorted[anchorIndex]!] : []
  const chain = [...anchors, ...inWindow, { name: NOW, at: nowMs }]

  let largestGapMs = -1
  let gapBetween: [string, string] = [newest.name, NOW]
  for (let i = 1; i < chain.length; i++) {
    const gap = chain[i]!.at - chain[i - 1]!.at
    if (gap > largestGapMs) {
      largestGapMs = gap
      gapBetween = [chain[i - 1]!.name, chain[i]!.name]
    }
  }

  return {
    newestAgeMs,
    newest: newest.name,
    largestGapMs,
    gapBetween,
    worstCaseMs: Math.max(newestAgeMs, largestGapMs),
    backupsInWindow: inWindow.length,
  }
}

/**
 * A target without a measurement is missed, not unknown: a drill that could
 * not time its restore, or found no backup at all, has not shown the
 * objective holds. Targets that are not set cannot fail.
 */
export function judge(
  measured: { rtoMs?: number; rpoMs?: number | null },
  targets: { rtoMs?: number; rpoMs?: number },
): Judgement {
  const rto = verdict(measured.rtoMs, targets.rtoMs)
  const rpo = verdict(measured.rpoMs, targets.rpoMs)
  return { rto, rpo, met: rto !== 'missed' && rpo !== 'missed' }
}

function verdict(measured: number | null | undefined, target: number | undefined): Verdict {
  if (target === undefined) return 'unset'
  // NaN fails the comparison, so a garbled measurement counts as missed.
  return measured != null && measured <= target ? 'met' : 'missed'
}

/** Clock skew between hosts; a stamp further ahead is a clock that ran ahead, not a fresh backup. */
export const FUTURE_TOLERANCE_MS = 15 * 60_000

/** Pure: made while the clock ran ahead (further than FUTURE_TOLERANCE_MS): not counted as the newest backup, nor drilled. */
export const stampedAhead = (createdAt: Date, now: Date): boolean => createdAt.getTime() - now.getTime() > FUTURE_TOLERANCE_MS
