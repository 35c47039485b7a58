import { artifactName, ARTIFACT_PREFIX } from '../artifact/naming.ts'

/** PostgreSQL truncates identifiers at 63 bytes; a truncated name could collide with a real database. */
const MAX_IDENTIFIER_BYTES = 63

/**
 * The scratch database a drill restores into: `<source>_drill_<UTC stamp>`,
 * so it sorts beside its source and says when it was made. The source
 * part is shortened, never the stamp, to stay within 63 bytes.
 */
export function scratchDatabaseName(source: string, now: Date): string {
  const stamp = artifactName(now).slice(ARTIFACT_PREFIX.length).toLowerCase()
  const suffix = `_drill_${stamp}`
  let head = source
  while (Buffer.byteLength(head + suffix) > MAX_IDENTIFIER_BYTES) head = [...head].slice(0, -1).join('')
  return head + suffix
}
