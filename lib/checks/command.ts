import { runtimeError } from '../cli/errors.ts'
import type { PgConnection } from '../postgres/connection.ts'
import { checkName } from './names.ts'
import { runInGroup } from './process.ts'
import { detailLine, formatMs, outputTail, timed } from './result.ts'
import type { CheckResult } from './types.ts'

/**
 * DATABASE_URL for the restored database, for applications that read
 * only that. It never carries the password: a URL gets logged, echoed
 * and pasted; the password stays in PGPASSWORD, which libpq and most
 * drivers also read. A socket directory goes in ?host=, where libpq and
 * node-postgres both look for it.
 */
export function databaseUrlWithoutPassword(env: NodeJS.ProcessEnv): string {
  const host = env.PGHOST ?? ''
  const params = new URLSearchParams()
  let authority = ''
  if (env.PGUSER) authority += `${encodeURIComponent(env.PGUSER)}@`
  if (host.startsWith('/') || host.includes(',')) params.set('host', host)
  else if (host.includes(':')) authority += `[${host}]`
  else authority += encodeURIComponent(host)
  if (env.PGPORT) authority += `:${encodeURIComponent(env.PGPORT)}`
  if (env.PGSSLMODE) params.set('sslmode', env.PGSSLMODE)
  const query = params.toString() ? `?${params}` : ''
  return `postgresql://${authority}/${encodeURIComponent(env.PGDATABASE ?? '')}${query}`
}

/** The last line the command printed: usually the one that says what went wrong. */
function lastLine(text: string): string {
  const lines = text.split('\n').filter((l) => l.trim())
  return lines[lines.length - 1] ?? ''
}

export async function checkCommand(cmd: string, conn: PgConnection, timeoutMs: number): Promise<CheckResult> {
  return timed(checkName('cmd', cmd, conn.secrets), 'cmd', conn.secrets, async () => {
    const env = { ...conn.env, DATABASE_URL: databaseUrlWithoutPassword(conn.env) }
    // cwd is left alone: relative paths in the command mean what the operator meant.
    const run = await runInGroup('sh', ['-c', cmd], {
      env,
      timeoutMs,
      missing: runtimeError('sh not found on PATH', 'fix PATH'),
    })
    const output = outputTail(run.output, conn.secrets)
    if (run.timedOut) return { ok: false, detail: `timed out after ${formatMs(timeoutMs)}; killed`, output }
    if (run.exitCode !== 0) {
      const last = lastLine(run.output)
      return { ok: false, detail: detailLine(`exit status ${run.exitCode}${last ? `: ${last}` : ''}`, conn.secrets), output }
    }
    return { ok: true, detail: 'exit status 0' }
  })
}
