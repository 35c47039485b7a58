// Shared by the benchmarks: GNU time around a command, from the same starting state each time.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { $ } from 'zx'
import { runtimeError, usageError } from '../lib/cli/errors.ts'

export interface Timed {
  seconds: number
  maxRssKiB: number
  stdout: string
}

/** The last lines of a child's stderr, stack frames left out: they push the message itself off the end. */
export const tail = (text: string, lines = 6) =>
  text.trim().split('\n').filter((l) => l.trim() !== '' && !/^\s+at /.test(l)).slice(-lines).join(' | ') || '(no stderr)'

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/**
 * Wall seconds and peak RSS of the whole command, children included. Every
 * step starts from the same state: a checkpoint and a sync first, so no step
 * pays for the writes the previous one left behind.
 */
export async function timeCommand(work: string, seq: number, step: string, cmd: string[], env: Record<string, string>): Promise<Timed> {
  const sh = $({ quiet: true, nothrow: true, env })
  await sh`psql -XAtqd postgres -c CHECKPOINT`
  await sh`sync`
  const timeFile = join(work, `time-${seq}.txt`)
  const p = await sh`/usr/bin/time -f '%e %M' -o ${timeFile} ${cmd}`
  if (p.exitCode !== 0) {
    throw runtimeError(`bench step "${step}" failed (exit ${p.exitCode}): ${tail(p.stderr || p.stdout)}`, 'see the step above; its work files were removed')
  }
  const last = (await readFile(timeFile, 'utf8')).trim().split('\n').pop() ?? ''
  const [seconds, rss] = last.split(' ').map(Number)
  if (!Number.isFinite(seconds) || !Number.isFinite(rss)) throw runtimeError(`bench step "${step}": cannot read /usr/bin/time output "${last}"`)
  return { seconds: seconds!, maxRssKiB: rss!, stdout: p.stdout }
}

/** --megabytes N (default 1024, at least 16) and --runs N (default 1): the same in every benchmark. */
export function benchSize(flags: Record<string, unknown>): { megabytes: number; runs: number } {
  const megabytes = Number(flags.megabytes ?? 1024)
  const runs = Number(flags.runs ?? 1)
  if (!Number.isInteger(megabytes) || megabytes < 16) throw usageError('--megabytes must be a whole number, at least 16')
  if (!Number.isInteger(runs) || runs < 1) throw usageError('--runs must be a whole number, at least 1')
  return { megabytes, runs }
}
