import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { validateCheckFile } from './check-file.ts'
import { urlWithoutCredentials } from './names.ts'
import type { CheckSpec } from './types.ts'

/** A URL as an error message may show it: without userinfo, or not at all when it does not parse (it may hold a password). */
function shownUrl(text: string): string {
  const url = urlWithoutCredentials(text)
  if (url) return quoteValue(url.href)
  return text.includes('@') ? '(not shown: it may contain a password)' : quoteValue(text)
}

/**
 * Turns away what cannot work before a restore starts: a typo in a
 * check must cost seconds, not an hour-long restore followed by a
 * failed check. It cannot tell whether a command or URL will pass.
 */
export function validateCheckSpec(spec: CheckSpec): void {
  if (!Number.isFinite(spec.timeoutMs) || spec.timeoutMs <= 0) {
    throw usageError('the check timeout must be a positive duration', 'e.g. --check-timeout 5m')
  }
  for (const file of spec.sql) validateCheckFile(file)
  for (const cmd of spec.cmd) {
    if (cmd.trim() === '') throw usageError('--check-cmd is empty', "give a shell command, e.g. --check-cmd './smoke.sh'")
    if (cmd.includes('\0')) throw usageError('--check-cmd contains a NUL byte', 'remove it')
  }
  for (const text of spec.url) {
    const url = urlWithoutCredentials(text)
    if (!url) throw usageError(`--check-url ${shownUrl(text)} is not a valid URL`, 'use e.g. --check-url http://127.0.0.1:8080/health')
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw usageError(`--check-url ${shownUrl(text)} must start with http:// or https://`, 'use e.g. --check-url http://127.0.0.1:8080/health')
    }
  }
}
