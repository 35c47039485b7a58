import { escapeControl } from '../cli/escape.ts'
import { oneLine, redact } from '../cli/redact.ts'
import { DrError } from '../cli/errors.ts'
import type { CheckResult } from './types.ts'

/** What the report keeps of a failing check's output: enough to explain it, not a log. */
export const OUTPUT_LIMIT = 4 * 1024

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`
}

/** A detail line: redacted first (a cut could split a secret and hide it from redaction), then one line. */
export function detailLine(text: string, secrets: readonly string[], max = 300): string {
  return escapeControl(oneLine(redact(text, secrets), max))
}

/**
 * Output for the report: redacted, the last OUTPUT_LIMIT characters, and
 * with control characters escaped (except newline and tab) so that a
 * check cannot drive the operator's terminal.
 */
export function outputTail(text: string, secrets: readonly string[]): string | undefined {
  let out = redact(text, secrets)
  if (out.length > OUTPUT_LIMIT) out = '…' + out.slice(-OUTPUT_LIMIT)
  out = out.replace(/[^\n\t]+/g, (part) => escapeControl(part)).trimEnd()
  return out || undefined
}

/**
 * Times one check. An expected failure (a DrError: psql missing, check
 * file gone) becomes a failed result, so the other checks still run and
 * the report is complete; anything else is a bug and propagates.
 */
export async function timed(
  name: string,
  kind: CheckResult['kind'],
  secrets: readonly string[],
  body: () => Promise<Pick<CheckResult, 'ok' | 'detail' | 'output'>>,
): Promise<CheckResult> {
  const start = performance.now()
  let outcome: Pick<CheckResult, 'ok' | 'detail' | 'output'>
  try {
    outcome = await body()
  } catch (err) {
    if (!(err instanceof DrError)) throw err
    outcome = { ok: false, detail: detailLine(err.line, secrets) }
  }
  const result: CheckResult = { name, kind, ok: outcome.ok, durationMs: Math.round(performance.now() - start), detail: outcome.detail }
  if (!outcome.ok && outcome.output) result.output = outcome.output
  return result
}

/** Node timers overflow past 2^31-1 ms (about 24 days) and fire at once: a huge --check-timeout must mean "long", not "now". */
export const timerMs = (ms: number): number => Math.min(Math.max(1, ms), 2 ** 31 - 1)
