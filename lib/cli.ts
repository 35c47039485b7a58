import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { DrError, ExitCode, inputError, runtimeError } from './errors.ts'
import { createReporter, type Reporter } from './report.ts'

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

type Cleanup = () => Promise<void> | void
const cleanups = new Set<Cleanup>()

/** Work to undo if the run is interrupted (Ctrl-C, SIGTERM from cron or systemd). */
export function onInterrupt(fn: Cleanup): () => void {
  cleanups.add(fn)
  return () => cleanups.delete(fn)
}

/** Errors from the OS that are the operator's to fix, in one line. */
export function fromSystemError(err: unknown): DrError | undefined {
  const e = err as NodeJS.ErrnoException
  if (!e || typeof e.code !== 'string') return undefined
  const where = e.path ? ` (${e.path})` : ''
  switch (e.code) {
    case 'ENOSPC':
      return runtimeError(`no space left on device${where}`, 'free space or choose another destination')
    case 'EDQUOT':
      return runtimeError(`disk quota exceeded${where}`, 'free space or choose another destination')
    case 'EACCES':
    case 'EPERM':
      return inputError(`permission denied${where}`, 'run as a user that may read and write it')
    case 'EROFS':
      return inputError(`read-only file system${where}`, 'choose a writable destination')
    case 'ENOENT':
      return inputError(`no such file or directory${where}`)
    case 'ENOTDIR':
      return inputError(`not a directory${where}`)
    case 'EIO':
      return runtimeError(`I/O error${where}`, 'check the disk; do not trust this destination')
    default:
      return undefined
  }
}

export interface CliContext {
  argv: string[]
  env: NodeJS.ProcessEnv
  reporter: Reporter
}

/**
 * The one place that turns outcomes into exit codes. Expected failures
 * print one line; only genuine bugs may show a stack, and only on request.
 */
export async function runCli(argv: string[], main: (ctx: CliContext) => Promise<void>): Promise<never> {
  const json = argv.includes('--json')
  const reporter = createReporter(json, { stdout: process.stdout, stderr: process.stderr, env: process.env })
  let interrupted = false
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted) return
    interrupted = true
    reporter.endProgress()
    void (async () => {
      for (const fn of cleanups) {
        try {
          await fn()
        } catch {
          // best effort: we are already exiting
        }
      }
      reporter.failure(
        new DrError('interrupted', `interrupted by ${signal} before finishing`, 'its partial work was stopped and removed; run it again'),
      )
      process.exit(ExitCode.interrupted)
    })()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    await main({ argv, env: process.env, reporter })
    reporter.endProgress()
    process.exit(ExitCode.ok)
  } catch (err) {
    reporter.endProgress()
    if (interrupted) await new Promise(() => {}) // the signal handler owns the exit
    const known = err instanceof DrError ? err : fromSystemError(err)
    if (known) {
      reporter.failure(known)
      process.exit(known.exitCode)
    }
    const bug = runtimeError(
      `internal error: ${(err as Error)?.message ?? String(err)}`,
      'this is a bug in the tool; re-run with DEBUG=1 for details and report it',
    )
    reporter.failure(bug)
    if (process.env.DEBUG) process.stderr.write(`${(err as Error)?.stack ?? ''}\n`)
    process.exit(ExitCode.runtime)
  }
}
