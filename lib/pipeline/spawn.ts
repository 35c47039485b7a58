import { spawn, type ChildProcess } from 'node:child_process'
import { constants } from 'node:os'
import type { Readable, Writable } from 'node:stream'
import type { DrError } from '../cli/errors.ts'
import { onInterrupt } from '../cli/signals.ts'

export interface Tool {
  readonly process: ChildProcess
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  /** Exit status; a death by signal N reads as 128 + N, as in a shell. */
  readonly exited: Promise<number>
  /** The last few KiB of stderr: enough to explain a failure, bounded memory. */
  stderr(): string
  kill(signal?: NodeJS.Signals): void
}

export interface ToolOptions {
  env: NodeJS.ProcessEnv
  /** A Readable here is another child's stdout: the two are joined by the OS, not copied through us. */
  stdin: 'pipe' | 'ignore' | Readable
  /** A number is an open file descriptor the child writes to (a staged file), not through us. */
  stdout: 'pipe' | 'ignore' | number
  /** The error to report when `cmd` is not installed. */
  missing: DrError
  /** Every piece of stderr as it arrives, for tools whose warnings are part of the result (tar). */
  onStderr?: (text: string) => void
}

/**
 * A child process of the data pipeline (pg_dump, pg_restore, later tar,
 * zstd, age). While it runs, an interrupt kills it: a dump must not keep
 * holding locks, and a restore must not go on to commit behind our back.
 */
export function spawnTool(cmd: string, args: readonly string[], opts: ToolOptions): Tool {
  const child = spawn(cmd, [...args], { env: opts.env, stdio: [opts.stdin, opts.stdout, 'pipe'] })
  // Our copy of a pipe handed to the child must go, or the writer never sees the reader leave.
  if (typeof opts.stdin === 'object') opts.stdin.destroy()
  let tail = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-16 * 1024)
    opts.onStderr?.(chunk)
  })
  const release = onInterrupt(() => {
    child.kill('SIGTERM')
  })
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) => {
      release()
      reject(err.code === 'ENOENT' ? opts.missing : err)
    })
    child.on('close', (code, signal) => {
      release()
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0))
    })
  })
  // A pipe closed by a child that exited early is reported through its exit status, not as EPIPE.
  child.stdin?.on('error', () => {})
  return {
    process: child,
    stdin: child.stdin,
    stdout: child.stdout,
    exited,
    stderr: () => tail,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    },
  }
}
