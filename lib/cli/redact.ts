/**
 * Child-process stderr and our own messages pass through here before an
 * operator or a log sees them: passwords must never leak into cron mail.
 */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)[^@\s]*@/gi, '$1***@')
  out = out.replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, '$1***')
  for (const secret of secrets) {
    // Very short "secrets" would shred ordinary words; they are also not worth hiding.
    if (secret.length >= 3) out = out.split(secret).join('***')
  }
  return out
}

/** Child stderr condensed to the single line the error format allows. */
export function oneLine(text: string, max = 400): string {
  const line = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .join(' | ')
  if (line.length <= max) return line
  // Keep both ends: a tool names the object first and the cause last ("tar: PATH: Cannot open: File
  // name too long"), and a long path must not push the cause out.
  const head = Math.ceil((max - 1) / 2)
  return line.slice(0, head) + '…' + line.slice(line.length - (max - 1 - head))
}
