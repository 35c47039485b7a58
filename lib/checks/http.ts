import { checkName, shownUrl, shownUrlText, urlSecrets, urlWithoutCredentials } from './names.ts'
import { detailLine, formatMs, outputTail, timed, timerMs } from './result.ts'
import type { CheckResult } from './types.ts'

const BODY_LIMIT = 4 * 1024

/** The head of a failing response's body (often the health endpoint's explanation); the rest is dropped unread. */
async function bodyHead(res: Response): Promise<string> {
  if (!res.body) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    while (size < BODY_LIMIT) {
      const { done, value } = await reader.read()
      if (done) break
      chunks.push(value)
      size += value.length
    }
  } catch {
    // A body cut short still explains what it can.
  } finally {
    await reader.cancel().catch(() => {})
  }
  return Buffer.concat(chunks).subarray(0, BODY_LIMIT).toString('utf8')
}

/** fetch says only "fetch failed"; the cause says refused, unknown host, reset, bad certificate. */
function whyFailed(err: unknown, timeoutMs: number): string {
  const e = err as Error & { cause?: { code?: string; message?: string } }
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `timed out after ${formatMs(timeoutMs)}`
  const cause = e?.cause
  if (cause?.code === 'ECONNREFUSED') return 'connection refused (ECONNREFUSED)'
  if (cause?.code === 'ENOTFOUND') return 'host not found (ENOTFOUND)'
  if (cause?.code) return `${cause.message ?? 'request failed'} (${cause.code})`
  return cause?.message ?? e?.message ?? String(err)
}

/**
 * fetch refuses URLs with credentials, so user:password@ becomes a Basic
 * Authorization header (which fetch drops on a redirect to another origin).
 */
export async function checkUrl(text: string, secrets: readonly string[], timeoutMs: number): Promise<CheckResult> {
  let parsed: URL | undefined
  try {
    parsed = new URL(text)
  } catch {
    // validateCheckSpec turns this away before a restore; never echo it, it may hold a password.
  }
  const user = parsed ? decoded(parsed.username) : ''
  const password = parsed ? decoded(parsed.password) : ''
  const url = urlWithoutCredentials(text)
  const hidden = [...secrets, ...(password ? [password, parsed!.password] : []), ...(url ? urlSecrets(url) : [])]
  return timed(checkName('url', url ? shownUrl(url) : '(not a valid URL)', hidden), 'url', hidden, async () => {
    if (!url) return { ok: false, detail: 'not a valid URL' }
    const headers: Record<string, string> = {}
    if (user || password) headers.authorization = `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`
    let res: Response
    try {
      res = await fetch(url, { headers, redirect: 'follow', signal: AbortSignal.timeout(timerMs(timeoutMs)) })
    } catch (err) {
      return { ok: false, detail: detailLine(whyFailed(err, timeoutMs), hidden) }
    }
    const status = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`
    const via = res.redirected ? ` (redirected to ${shownUrlText(res.url) ?? 'another URL'})` : ''
    if (res.ok) {
      await res.body?.cancel().catch(() => {})
      return { ok: true, detail: detailLine(`${status}${via}`, hidden) }
    }
    const body = await bodyHead(res)
    return { ok: false, detail: detailLine(`${status}${via}`, hidden), output: outputTail(body, hidden) }
  })
}

function decoded(part: string): string {
  try {
    return decodeURIComponent(part)
  } catch {
    return part
  }
}
