import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'

/**
 * Where an operator says artifacts live (--output, BACKUP_BASE): a local
 * directory, or `s3://bucket[/prefix]` for an S3-compatible bucket.
 *
 * - The scheme is matched case-insensitively (`S3://` is `s3://`, as URL
 *   schemes are); bucket and prefix are taken literally: no %-decoding, and
 *   `?` or `#` are part of the prefix, as in the aws CLI.
 * - Any other `scheme://` (http://, gs://, file://…) is refused, never taken
 *   as a relative directory named `gs:`: a typo must not send a backup to
 *   the wrong place. So is `s3:` without the two slashes.
 * - The prefix loses its leading and trailing slashes; an empty segment
 *   (`a//b`), `.` or `..` anywhere in it, and control characters, are
 *   refused rather than normalised away, because S3 would store them
 *   literally and the operator would not find the artifacts where expected.
 */
export type Location = { kind: 'local'; path: string } | { kind: 's3'; bucket: string; prefix: string; url: string }

const SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i
/** C0, DEL, C1 and the Unicode line separators: the same set escapeControl shows as escapes. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/
/** Object keys are at most 1024 bytes; leave room for `/<artifact-name>/<file>`. */
const MAX_PREFIX_BYTES = 900

export function parseLocation(text: string, what: string): Location {
  const shown = `${what} ${quoteValue(text)}`
  if (text === '') throw usageError(`${what} is empty`, 'pass a directory or s3://bucket/prefix')
  // ' s3://b/p' would otherwise be a local directory named ' s3:', and 's3://b/p ' a prefix ending in a space: a quoting slip.
  if (text.trim() !== text && (SCHEME.test(text.trim()) || /^s3:/i.test(text.trim()))) {
    throw usageError(`${shown} has spaces around it`, 'remove them (check the quoting in the cron line or runbook)')
  }
  const scheme = SCHEME.exec(text)
  if (scheme) {
    if (scheme[1]!.toLowerCase() !== 's3') {
      throw usageError(
        `${shown} uses an unsupported scheme ${scheme[1]}://`,
        'use s3://bucket/prefix for S3 or an S3-compatible store (endpoint in AWS_ENDPOINT_URL), or a plain local directory path',
      )
    }
    return parseS3(text.slice(scheme[0].length), shown)
  }
  if (/^s3:/i.test(text)) throw usageError(`${shown} is neither a local path nor an S3 location`, 'write s3://bucket/prefix, or ./s3:… for a local directory')
  if (text.includes('\0')) throw usageError(`${what} holds a NUL byte`, 'pass the directory as a plain path')
  return { kind: 'local', path: text }
}

function parseS3(rest: string, shown: string): Location {
  if (CONTROL.test(rest)) throw usageError(`${shown} holds a control character`, 'write the bucket and prefix as plain text')
  const slash = rest.indexOf('/')
  const bucket = slash === -1 ? rest : rest.slice(0, slash)
  const rawPrefix = slash === -1 ? '' : rest.slice(slash + 1)
  if (bucket === '') throw usageError(`${shown} names no bucket`, 'write s3://bucket or s3://bucket/prefix')
  const bad = bucketProblem(bucket)
  if (bad) throw usageError(`${shown}: bucket name ${quoteValue(bucket)} ${bad}`, 'S3 bucket names are 3-63 lower-case letters, digits, dots and hyphens')
  const prefix = rawPrefix.replace(/^\/+/, '').replace(/\/+$/, '')
  if (prefix !== '') {
    const segments = prefix.split('/')
    if (segments.includes('')) throw usageError(`${shown} has an empty path segment (//)`, 'write the prefix with single slashes')
    if (segments.some((s) => s === '.' || s === '..')) throw usageError(`${shown} has a . or .. segment`, 'write the prefix without . or ..')
    if (Buffer.byteLength(prefix) > MAX_PREFIX_BYTES) throw usageError(`${shown} has a prefix longer than ${MAX_PREFIX_BYTES} bytes`, 'use a shorter prefix')
  }
  return { kind: 's3', bucket, prefix, url: prefix ? `s3://${bucket}/${prefix}` : `s3://${bucket}` }
}

/**
 * Why `name` is not a valid S3 bucket name (the rules for general purpose
 * buckets, which S3-compatible servers also apply), or null. Legacy
 * us-east-1 names with capitals or underscores are refused: no current
 * store creates them, and RGW refuses them by default.
 */
export function bucketProblem(name: string): string | null {
  if (name.length < 3 || name.length > 63) return 'must be 3 to 63 characters long'
  if (!/^[a-z0-9.-]+$/.test(name)) return 'may hold only lower-case letters, digits, dots and hyphens'
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return 'must begin and end with a letter or digit'
  if (name.includes('..')) return 'must not hold two dots in a row'
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return 'must not look like an IP address'
  if (/^(xn--|sthree-|amzn-s3-demo-)/.test(name)) return 'must not begin with xn--, sthree- or amzn-s3-demo-'
  if (/(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$/.test(name)) return 'must not end with a suffix S3 reserves (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)'
  return null
}
