import { notFound } from '../postgres/client.ts'
import type { PgConnection } from '../postgres/connection.ts'
import { quoteValue } from '../cli/escape.ts'
import { redact } from '../cli/redact.ts'
import { readCheckFile } from './check-file.ts'
import { checkName } from './names.ts'
import { runInGroup } from './process.ts'
import { detailLine, formatMs, outputTail, timed } from './result.ts'
import type { CheckResult } from './types.ts'

/**
 * Reads psql's rows as they stream past, keeping only a count and the
 * first row that is not `t`: a check that selects a million rows by
 * mistake must fail, not fill memory. -0 ends each row with a NUL, so a
 * value with a newline in it stays one row.
 */
class RowJudge {
  rows = 0
  offending: { row: number; value: string } | undefined
  private partial = ''

  push(chunk: string): void {
    const parts = (this.partial + chunk).split('\0')
    this.partial = parts.pop() ?? ''
    // Only the head of a runaway row is worth keeping.
    if (this.partial.length > 1024) this.partial = this.partial.slice(0, 1024)
    for (const value of parts) this.judge(value)
  }

  end(): void {
    // Output not ended by a NUL is not a row: \echo and similar print lines of their own.
    if (this.partial !== '') this.judge(this.partial)
    this.partial = ''
  }

  private judge(value: string): void {
    this.rows++
    if (value !== 't' && !this.offending) this.offending = { row: this.rows, value }
  }
}

/** The line of psql's stderr that says what went wrong (ERROR:, FATAL:), not the NOTICEs before it. */
function errorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim())
  return lines.find((l) => /\b(ERROR|FATAL|PANIC):/.test(l)) ?? lines.find((l) => !/\b(NOTICE|WARNING|INFO|DETAIL|HINT|LOG):/.test(l)) ?? lines[0] ?? ''
}

export async function checkSql(file: string, conn: PgConnection, timeoutMs: number): Promise<CheckResult> {
  return timed(checkName('sql', file, conn.secrets), 'sql', conn.secrets, async () => {
    const sql = await readCheckFile(file)
    const judge = new RowJudge()
    const run = await runInGroup('psql', ['-X', '-A', '-t', '-q', '-w', '-0', '-v', 'ON_ERROR_STOP=1'], {
      env: conn.env,
      timeoutMs,
      input: sql,
      onStdout: (chunk) => judge.push(chunk),
      stopSignal: 'SIGINT',
      missing: notFound('psql'),
    })
    judge.end()
    const output = outputTail(run.stderr, conn.secrets)
    if (run.timedOut) return { ok: false, detail: `timed out after ${formatMs(timeoutMs)}; query cancelled`, output }
    if (run.exitCode !== 0) {
      const why = errorLine(run.stderr) || `psql exit status ${run.exitCode}`
      return { ok: false, detail: detailLine(why, conn.secrets), output }
    }
    if (judge.offending) {
      const { row, value } = judge.offending
      const shown = value === '' ? 'NULL or empty' : quoteValue(redact(value, conn.secrets), 80)
      return { ok: false, detail: `row ${row} is ${shown}, expected t (true)`, output }
    }
    const detail = judge.rows === 0 ? 'ran without error; no rows returned' : `${judge.rows} of ${judge.rows} rows true`
    return { ok: true, detail }
  })
}
