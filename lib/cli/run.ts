import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { wantsJson } from './args.ts'
import { DrError, ExitCode, runtimeError } from './errors.ts'
import { createReporter, type Reporter } from './report.ts'
import { completedDuringInterrupt, doneBeforeInterrupt, markInterrupted, runCleanups, whenNotCritical } from './signals.ts'
import { fromSystemError } from './system-errors.ts'

/**
 * Arguments after the script itself. The scripts run under the zx CLI
 * (`node zx/cli.js script.ts ARGS`), so argv[1] is zx, not the script.
 */
export function scriptArgs(argv: readonly string[], scriptUrl: string): string[] {
  const script = fileURLToPath(scriptUrl)
  const index = argv.findIndex((arg, i) => {
    if (i === 0) return false
    try {
      return realpathSync(arg) === script
    } catch {
      return false
    }
  })
  return argv.slice(index === -1 ? 2 : index + 1)
}

export interface CliContext {
  argv: string[]
  env: NodeJS.ProcessEnv
  reporter: Reporter
}

/** Children get this long to die and partial files to go before we exit regardless. */
const CLEANUP_DEADLINE_MS = 10_000

/**
 * The one place that turns outcomes into exit codes. Expected failures
 * print one line; only genuine bugs may show a stack, and only on request.
 */
export async function runCli(argv: string[], main: (ctx: CliContext) => Promise<void>): Promise<never> {
  const reporter = createReporter(wantsJson(argv), { stdout: process.stdout, stderr: process.stderr, env: process.env })
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals) => {
    // A second Ctrl-C means "now": the operator has given up waiting for cleanup.
    if (interrupted) process.exit(ExitCode.interrupted)
    interrupted = true
    markInterrupted(signal)
    reporter.endProgress()
    void whenNotCritical()
      .then(() => runCleanups(CLEANUP_DEADLINE_MS))
      .then(() => {
        const done = completedDuringInterrupt()
        const before = doneBeforeInterrupt()
        reporter.failure(
          new DrError(
            'interrupted',
            `interrupted by ${signal} before finishing${done.length ? ` (completed first, as it cannot be cut in half: ${done.join('; ')})` : ''}${before.length ? `; ${before.join('; ')}` : ''}`,
            before.length ? 'the rest of its work was stopped and removed; run that again' : 'its partial work was stopped and removed; run it again',
          ),
        )
        void exitFlushed(ExitCode.interrupted)
      })
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  process.on('SIGHUP', onSignal)
  try {
    await main({ argv, env: process.env, reporter })
    reporter.endProgress()
    // Finished while an interrupt was being handled: the handler reports and exits.
    if (interrupted) await new Promise(() => {})
    return exitFlushed(ExitCode.ok)
  } catch (err) {
    reporter.endProgress()
    if (interrupted) await new Promise(() => {}) // the signal handler owns the exit
    const known = err instanceof DrError ? err : fromSystemError(err)
    if (known) {
      reporter.failure(known)
      return exitFlushed(known.exitCode)
    }
    const bug = runtimeError(
      `internal error: ${(err as Error)?.message ?? String(err)}`,
      'this is a bug in the tool; re-run with DEBUG=1 for details and report it',
    )
    reporter.failure(bug)
    if (process.env.DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`)
    return exitFlushed(ExitCode.runtime)
  }
}

/**
 * process.exit once stdout and stderr have been written out. On a pipe
 * whose reader is slower (| jq, | logger) a write past the pipe's 64 KiB
 * is queued, and exiting at once cut a --json document short. Bounded: a
 * reader that never reads does not hold the exit for more than 10 s.
 */
async function exitFlushed(code: number): Promise<never> {
  const flushed = (stream: NodeJS.WriteStream) =>
    new Promise<void>((resolve) => {
      if (stream.writableLength === 0 || stream.destroyed) return resolve()
      stream.write('', () => resolve())
      stream.once('error', () => resolve())
    })
  await Promise.race([Promise.all([flushed(process.stdout), flushed(process.stderr)]), new Promise((resolve) => setTimeout(resolve, 10_000).unref())])
  process.exit(code)
}
