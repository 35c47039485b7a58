import { escapeControl } from '../cli/escape.ts'
import { redact } from '../cli/redact.ts'

/** A check's name as the report shows it: redacted (a command line may carry a token), one line, bounded. */
export function checkName(prefix: string, value: string, secrets: readonly string[], max = 200): string {
  const shown = escapeControl(redact(value, secrets))
  return `${prefix}:${shown.length > max ? `${shown.slice(0, max - 1)}…` : shown}`
}

/** A URL without its userinfo, for names and messages; undefined when it does not parse. */
export function urlWithoutCredentials(text: string): URL | undefined {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return undefined
  }
  url.username = ''
  url.password = ''
  return url
}

/**
 * A URL as names, reports and messages show it: no userinfo, and every
 * query value masked (a health URL often carries `?token=…`), parameter
 * names kept so an operator still sees which URL it was.
 */
export function shownUrl(url: URL): string {
  if (!url.search && !url.hash) return url.href
  const shown = new URL(url.href)
  // A bare key (`?s3cr3t`) may be the token itself.
  shown.search = [...url.searchParams].map(([k, v]) => (v === '' ? '***' : `${encodeURIComponent(k)}=***`)).join('&')
  if (url.hash) shown.hash = '***'
  return shown.href
}

/** `shownUrl` of a URL given as text; undefined when it does not parse. */
export function shownUrlText(text: string): string | undefined {
  const url = urlWithoutCredentials(text)
  return url && shownUrl(url)
}

/** What a URL's query and fragment may carry, to scrub from a response body or a redirect that echoes it: values of 4 characters or more, raw and decoded. */
export function urlSecrets(url: URL): string[] {
  const found = [...url.searchParams].flatMap(([k, v]) => (v === '' ? [k] : [v]))
  if (url.hash.length > 1) found.push(url.hash.slice(1))
  return [...new Set(found.flatMap((v) => [v, encodeURIComponent(v)]))].filter((v) => v.length >= 4)
}
