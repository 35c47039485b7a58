/** A drill's phases, in order; each is timed, and RTO is measured across them. */
export const PHASES = ['locate', 'verify', 'restore', 'checks', 'cleanup'] as const
export type PhaseName = (typeof PHASES)[number]

export interface PhaseTiming {
  name: PhaseName
  status: 'ok' | 'failed' | 'skipped'
  ms: number
}

/** Times phases against one clock so that the sum and the RTO agree. */
export class PhaseClock {
  readonly startedAt: number
  readonly phases: PhaseTiming[] = []
  private readonly now: () => number

  constructor(now: () => number = () => performance.now()) {
    this.now = now
    this.startedAt = now()
  }

  async run<T>(name: PhaseName, work: () => Promise<T>): Promise<T> {
    const begin = this.now()
    try {
      const value = await work()
      this.phases.push({ name, status: 'ok', ms: Math.round(this.now() - begin) })
      return value
    } catch (err) {
      this.phases.push({ name, status: 'failed', ms: Math.round(this.now() - begin) })
      throw err
    }
  }

  skip(name: PhaseName): void {
    this.phases.push({ name, status: 'skipped', ms: 0 })
  }

  elapsed(): number {
    return Math.round(this.now() - this.startedAt)
  }
}
