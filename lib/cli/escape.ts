/**
 * Anything that reaches an operator or a log may carry bytes from a
 * hostile name, a damaged manifest or a child's stderr. One message must
 * stay one line, and must not drive the terminal: control characters
 * (C0, DEL, C1) and Unicode line separators are shown as escapes.
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' }

export function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => NAMED[c] ?? `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** JSON.stringify already escapes C0; C1 and U+2028/9 pass through it raw, which some log pipelines split on. */
export function escapeJson(json: string): string {
  return json.replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/**
 * An operator-supplied value quoted inside a message: escaped, and cut
 * short so that a 5000-byte path does not become a 5000-byte error line.
 */
export function quoteValue(value: string, max = 160): string {
  const shown = value.length > max ? `${value.slice(0, max - 1)}…` : value
  return `'${escapeControl(shown)}'`
}

/**
 * A value as one word an operator can paste into a shell (a database name
 * in a `dropdb` hint): bare when it is plain, else single-quoted, or
 * $'…' quoted when it holds control characters, so the line stays one line.
 */
export function shellWord(value: string): string {
  if (/^[A-Za-z0-9_.,:@%+=/-]+$/.test(value)) return value
  if (!new RegExp(CONTROL.source).test(value)) return `'${value.replace(/'/g, `'\\''`)}'`
  return `$'${escapeControl(value.replace(/\\/g, '\\\\').replace(/'/g, "\\'"))}'`
}
