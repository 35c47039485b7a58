/**
 * Work to undo if the run is interrupted (Ctrl-C, SIGTERM from cron or
 * systemd): kill children that hold locks or transactions, remove partial
 * files. Registered by whoever starts such work, run once by the CLI.
 */
type Cleanup = () => Promise<void> | void
const cleanups = new Set<Cleanup>()

export function onInterrupt(fn: Cleanup): () => void {
  cleanups.add(fn)
  return () => cleanups.delete(fn)
}

/** Runs every cleanup, newest first, and never waits longer than `deadlineMs` for all of them. */
export async function runCleanups(deadlineMs: number): Promise<void> {
  const all = [...cleanups].reverse().map(async (fn) => {
    try {
      await fn()
    } catch {
      // best effort: we are already exiting
    }
  })
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, deadlineMs)
  })
  await Promise.race([Promise.all(all), deadline])
  clearTimeout(timer)
}

let interruptedBy: NodeJS.Signals | undefined
let criticalDepth = 0
let criticalDone: Array<() => void> = []
let criticalNotes: string[] = []

/** Set by the CLI's signal handler; long work checks it before a step that cannot be undone. */
export function markInterrupted(signal: NodeJS.Signals): void {
  interruptedBy = signal
}

/** An interrupt has arrived: long work checks this before it starts something new. */
export function interrupted(): boolean {
  return interruptedBy !== undefined
}

/** What irreversible steps finished while an interrupt waited for them, for the final message. */
export function completedDuringInterrupt(): string[] {
  return criticalNotes
}

let doneNotes: string[] = []

/**
 * A result that stands whatever happens next (a published backup, before
 * its copies and pruning): an interrupt's message names it, so "its
 * partial work was removed" is not read as "no backup was made".
 */
export function noteDone(what: string): void {
  doneNotes.push(what)
}

export function doneBeforeInterrupt(): string[] {
  return doneNotes
}

/**
 * A step that must not be cut in half: the database swap, publishing an
 * artifact, dropping the database a restore replaced. It does not start
 * once an interrupt has arrived, and an interrupt that arrives during it
 * waits for it to finish before the cleanups run (which would otherwise
 * undo half of it, e.g. drop the database just swapped in).
 */
export async function critical<T>(what: string, work: () => Promise<T>, { undone = false }: { undone?: boolean } = {}): Promise<T> {
  if (interruptedBy) throw new InterruptedBeforeCritical(what)
  criticalDepth++
  try {
    const value = await work()
    // `undone`: a cleanup registered by `work` takes it back, so it is not reported as completed.
    if (interruptedBy && !undone) criticalNotes.push(what)
    return value
  } finally {
    criticalDepth--
    if (criticalDepth === 0) {
      const waiting = criticalDone
      criticalDone = []
      for (const resolve of waiting) resolve()
    }
  }
}

export function whenNotCritical(): Promise<void> {
  return criticalDepth === 0 ? Promise.resolve() : new Promise((resolve) => criticalDone.push(resolve))
}

/** Thrown into the main flow when an interrupt arrived first; the signal handler owns the exit. */
export class InterruptedBeforeCritical extends Error {
  constructor(what: string) {
    super(`interrupted before: ${what}`)
  }
}
