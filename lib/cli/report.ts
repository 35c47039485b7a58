import { Chalk, type ChalkInstance } from 'chalk'
import type { DrError } from './errors.ts'
import { escapeControl, escapeJson } from './escape.ts'

/**
 * Every text goes through escapeControl on its way out: names and child
 * output can hold newlines or escape sequences, and one message must stay
 * one line.
 *
 * Two audiences: an operator at a terminal (colour, progress, prose) and
 * cron (`--json`: exactly one JSON document on stdout, nothing else there).
 */
export interface Reporter {
  readonly json: boolean
  /** A line of the plan or of what happened; human mode only. */
  line(text: string): void
  heading(text: string): void
  warn(text: string): void
  /** Throttled in-place byte counter; only ever drawn on a terminal. */
  progress(label: string, bytes: number): void
  endProgress(): void
  /** Final outcome; in JSON mode this is the document cron parses. */
  result(summary: Record<string, unknown>, humanLine: string): void
  failure(err: DrError): void
}

export interface ReporterStreams {
  stdout: NodeJS.WriteStream
  stderr: NodeJS.WriteStream
  env: NodeJS.ProcessEnv
}

export function colourFor(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): ChalkInstance {
  const enabled = Boolean(stream.isTTY) && env.NO_COLOR === undefined && env.TERM !== 'dumb'
  return new Chalk({ level: enabled ? 1 : 0 })
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`
}

export function createReporter(json: boolean, io: ReporterStreams): Reporter {
  const out = colourFor(io.stdout, io.env)
  const err = colourFor(io.stderr, io.env)
  const showProgress = !json && Boolean(io.stderr.isTTY)
  let lastDraw = 0
  let drawn = false
  // Rate and elapsed time are per step: a new label starts a new clock.
  let progressLabel = ''
  let progressStart = 0
  const say = (text: string) => {
    if (!json) io.stdout.write(text + '\n')
  }
  const clean = escapeControl
  const emit = (doc: Record<string, unknown>) => io.stdout.write(escapeJson(JSON.stringify(doc)) + '\n')
  return {
    json,
    line: (text) => say(`  ${clean(text)}`),
    heading: (text) => say(out.bold(clean(text))),
    warn: (text) => {
      io.stderr.write(`${err.yellow('warning:')} ${clean(text)}\n`)
    },
    progress: (label, bytes) => {
      if (!showProgress) return
      const now = Date.now()
      if (label !== progressLabel) {
        progressLabel = label
        progressStart = now
      }
      if (now - lastDraw < 200) return
      lastDraw = now
      drawn = true
      const seconds = (now - progressStart) / 1000
      const rate = seconds > 0 ? `${formatBytes(Math.round(bytes / seconds))}/s` : '—'
      io.stderr.write(`\r\x1b[K  ${clean(label)}: ${formatBytes(bytes)}, ${rate}, ${seconds.toFixed(0)} s`)
    },
    endProgress: () => {
      if (drawn) io.stderr.write('\r\x1b[K')
      drawn = false
    },
    result: (summary, humanLine) => {
      if (json) emit({ ok: true, ...summary })
      else say(out.green(clean(humanLine)))
    },
    failure: (e) => {
      if (json) emit({ ...e.details, ok: false, exitCode: e.exitCode, error: e.message, fix: e.fix })
      io.stderr.write(`${err.red('error:')} ${clean(e.line)}\n`)
    },
  }
}
