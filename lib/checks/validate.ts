import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { validateCheckFile } from './check-file.ts'
import { shownUrlText, urlWithoutCredentials } from './names.ts'
import type { CheckSpec } from './types.ts'

/** A URL as an error message may show it: without userinfo, or not at all when it does not parse (it may hold a password). */
function urlInMessage(text: string): string {
  const shown = shownUrlText(text)
  if (shown !== undefined) return quoteValue(shown)
  return text.includes('@') ? '(not shown: it may contain a password)' : quoteValue(text)
}

/** Ports the fetch standard blocks (https://fetch.spec.whatwg.org/#port-blocking), as Node 20.20's fetch refuses them: probed, every port 1-11000 (earlier Node 20 releases lack 4190 and 6679). */
const FETCH_BAD_PORTS = new Set([
  1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137,
  139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723,
  2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
])

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
    if (!url) throw usageError(`--check-url ${urlInMessage(text)} is not a valid URL`, 'use e.g. --check-url http://127.0.0.1:8080/health')
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw usageError(`--check-url ${urlInMessage(text)} must start with http:// or https://`, 'use e.g. --check-url http://127.0.0.1:8080/health')
    }
    if (url.port !== '' && FETCH_BAD_PORTS.has(Number(url.port))) {
      throw usageError(
        `--check-url ${urlInMessage(text)} uses port ${url.port}, which Node's fetch never connects to (a "bad port" of the fetch standard)`,
        `serve the health endpoint on another port, or check it with --check-cmd 'curl -fsS URL'`,
      )
    }
  }
}
