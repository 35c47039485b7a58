import type { CheckResult } from '../checks/types.ts'
import type { Judgement, RpoMeasure } from '../policy/objectives.ts'
import type { PhaseTiming } from './phases.ts'

export type DrillVerdict = 'passed' | 'failed' | 'check-failed' | 'objective-missed'

/** Everything a drill measured: printed, written to --report, and appended to the history. */
export interface DrillResult {
  /** ISO-8601 UTC; when the drill started. */
  at: string
  dryRun: boolean
  artifact: string | null
  path: string | null
  /** The artifact's own createdAt: the recovery point it restores to. */
  artifactCreatedAt: string | null
  sourceDatabase: string | null
  /** Where the drill restored to; null for a dry run or an artifact without a dump. */
  scratchDatabase: string | null
  kept: boolean
  phases: PhaseTiming[]
  /** Wall time from start until the checks passed; null for a dry run or when they never passed. */
  rtoMs: number | null
  rpo: RpoMeasure
  windowMs: number
  targets: { rtoMs?: number; rpoMs?: number }
  judgement: Judgement
  checks: CheckResult[]
  verdict: DrillVerdict
  /** Why a failed drill failed, one line. */
  error: string | null
}
