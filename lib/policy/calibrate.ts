import { isCalendarDay } from '../artifact/manifest-fields.ts'
/** One line of the drill history (JSONL), as written after each drill. */
export interface DrillRecord {
  at: string
  artifact: string
  rtoMs: number | null
  rpoWorstMs: number | null
  ok: boolean
}

export interface Stats {
  medianMs: number
  worstMs: number
}

export interface Summary {
  drills: number
  passed: number
  rto: Stats | null
  rpo: Stats | null
  proposed: { rtoMs: number | null; rpoMs: number | null } | null
}

const MINUTE = 60_000
const HOUR = 60 * MINUTE
const DAY = 24 * HOUR

// A zone is required: a local time would mean something else on each host.
const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$/

const isDuration = (v: unknown): v is number | null =>
  v === null || (typeof v === 'number' && Number.isFinite(v) && v >= 0)

/**
 * A damaged history (a torn last line after a crash, a hand edit) must not
 * stop calibration, so anything doubtful is skipped rather than thrown.
 */
export function parseHistoryLine(line: string): DrillRecord | undefined {
  if (line.trim() === '') return undefined
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const r = value as Record<string, unknown>
  if (typeof r.at !== 'string' || !ISO_RE.test(r.at) || Number.isNaN(Date.parse(r.at)) || !isCalendarDay(r.at)) return undefined
  if (typeof r.artifact !== 'string') return undefined
  if (!isDuration(r.rtoMs) || !isDuration(r.rpoWorstMs)) return undefined
  if (typeof r.ok !== 'boolean') return undefined
  // A drill that failed before it found an artifact (none there, a bad BACKUP_BASE) records none: still a failed drill.
  if (r.artifact === '' && r.ok) return undefined
  // Copy the known fields only, so nothing unexpected rides along into reports.
  return { at: r.at, artifact: r.artifact, rtoMs: r.rtoMs, rpoWorstMs: r.rpoWorstMs, ok: r.ok }
}

/** Even counts take the mean of the two middle values. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

function stats(values: readonly number[]): Stats | null {
  const medianMs = median(values)
  return medianMs === null ? null : { medianMs, worstMs: values.reduce((a, b) => Math.max(a, b)) }
}

/**
 * Proposed objective: the worst observed value times 1.5, rounded up to a
 * step people write in runbooks (a minute below 1h, 15 minutes below 1d, an
 * hour above). The headroom is for slower days: a bigger database, a busy
 * storage array, an operator who is not the one who ran the drills. Taking
 * the worst rather than the median is deliberate: an objective that the
 * tool's own drills already miss would be a promise it cannot keep. Never
 * below one step, since a zero objective cannot be met.
 */
export function proposeObjective(worstMs: number): number {
  const raw = worstMs * 1.5
  const step = raw < HOUR ? MINUTE : raw < DAY ? 15 * MINUTE : HOUR
  return Math.max(step, Math.ceil(raw / step) * step)
}

/**
 * Drills in [now - window, now]; later stamps are kept as clock skew. RTO only
 * counts passed drills (a failed restore has no meaningful duration), while
 * RPO counts every drill that measured it: backup exposure is a fact about
 * the backups whether or not the restore then worked.
 */
export function summarize(records: readonly DrillRecord[], now: Date, windowMs: number): Summary {
  const start = now.getTime() - windowMs
  const recent = records.filter((r) => Date.parse(r.at) >= start)
  const passed = recent.filter((r) => r.ok)
  const rto = stats(passed.flatMap((r) => (isDuration(r.rtoMs) && r.rtoMs !== null ? [r.rtoMs] : [])))
  const rpo = stats(recent.flatMap((r) => (isDuration(r.rpoWorstMs) && r.rpoWorstMs !== null ? [r.rpoWorstMs] : [])))
  const proposed =
    rto || rpo
      ? { rtoMs: rto ? proposeObjective(rto.worstMs) : null, rpoMs: rpo ? proposeObjective(rpo.worstMs) : null }
      : null
  return { drills: recent.length, passed: passed.length, rto, rpo, proposed }
}
