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
