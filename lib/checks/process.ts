import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import type { DrError } from '../cli/errors.ts'
import { onInterrupt } from '../cli/signals.ts'
import { timerMs } from './result.ts'

export interface GroupRun {
  /** Exit status; a death by signal N reads as 128 + N, as in a shell. */
  exitCode: number
  timedOut: boolean
  /** The last few KiB of stdout and stderr, interleaved as they arrived (unless stdout goes to onStdout). */
  output: string
  /** stderr alone, its last few KiB. */
  stderr: string
}

export interface GroupOptions {
  env: NodeJS.ProcessEnv
  timeoutMs: number
  /** Written to stdin, which is then closed; without it stdin is /dev/null, so a check never waits on the terminal. */
  input?: string
  /** Receives stdout instead of the output tail, for callers that must see every byte (psql rows). */
  onStdout?: (chunk: string) => void
  /**
   * The first signal on timeout or interrupt. psql turns SIGINT into a
   * cancel request, so the server stops the query too; SIGKILL follows
   * after a grace period either way.
   */
  stopSignal?: NodeJS.Signals
  /** The error to report when `cmd` is not installed. */
  missing: DrError
}

// Raw tails are kept longer than the report's limit so redaction runs on whole secrets before the cut.
const TAIL = 16 * 1024
const GRACE_MS = 2000

/**
 * Runs a check's process in a process group of its own (detached), so a
 * timeout or an interrupt can kill everything it started, not just the
 * shell: `sleep 30` under `sh -c` must not outlive the check. Whatever
 * is left in the group when the leader exits is killed too: a check must
 * not leave processes behind on the machine being recovered.
 */
export function runInGroup(cmd: string, args: readonly string[], opts: GroupOptions): Promise<GroupRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...args], {
      env: opts.env,
      detached: true,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    })
    let output = ''
    let stderr = ''
    let timedOut = false
    let exitCode: number | undefined
    let killTimer: NodeJS.Timeout | undefined
    let settled = false

    const signalGroup = (signal: NodeJS.Signals) => {
      if (child.pid === undefined) return
      try {
        process.kill(-child.pid, signal)
      } catch {
        // ESRCH: the group is already gone
      }
    }
    const stop = () => {
      signalGroup(opts.stopSignal ?? 'SIGTERM')
      killTimer ??= setTimeout(() => signalGroup('SIGKILL'), GRACE_MS)
    }

    const timer = setTimeout(() => {
      timedOut = true
      stop()
    }, timerMs(opts.timeoutMs))
    const release = onInterrupt(
      () =>
        new Promise<void>((done) => {
          stop()
          child.once('exit', () => done())
          if (child.exitCode !== null || child.signalCode !== null) done()
        }),
    )
    const finish = () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      clearTimeout(killTimer)
      release()
      resolve({ exitCode: exitCode ?? 1, timedOut, output, stderr })
    }

    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (chunk: string) => {
      if (opts.onStdout) opts.onStdout(chunk)
      else output = (output + chunk).slice(-TAIL)
    })
    child.stderr!.setEncoding('utf8')
    child.stderr!.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-TAIL)
      output = (output + chunk).slice(-TAIL)
    })
    if (child.stdin) {
      // A check that exits without reading its input is judged by its exit status, not by EPIPE.
      child.stdin.on('error', () => {})
      child.stdin.end(opts.input)
    }

    child.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      clearTimeout(killTimer)
      release()
      reject(err.code === 'ENOENT' ? opts.missing : err)
    })
    child.on('exit', (code, signal) => {
      exitCode = code ?? 128 + (signal ? constants.signals[signal] : 0)
      // Leftovers (a backgrounded server, a stuck pipe writer) would also hold our pipes open.
      signalGroup('SIGTERM')
      clearTimeout(killTimer)
      killTimer = setTimeout(() => {
        signalGroup('SIGKILL')
        // Even SIGKILL cannot reach a process that left the group with setsid: stop waiting for its pipes.
        setTimeout(() => {
          child.stdout?.destroy()
          child.stderr?.destroy()
          finish()
        }, 200)
      }, GRACE_MS)
    })
    child.on('close', finish)
  })
}
