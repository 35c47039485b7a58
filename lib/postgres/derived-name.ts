import { artifactName, ARTIFACT_PREFIX } from '../artifact/naming.ts'
import type { PgConnection } from './connection.ts'
import { databaseExists } from './server.ts'

/** PostgreSQL truncates identifiers at 63 bytes; a truncated name could collide with a real database. */
const MAX_IDENTIFIER_BYTES = 63

/**
 * A database named after another: `<source>_<tag>_<UTC stamp>`, so it
 * sorts beside its source and says when and why it was made (a drill's
 * scratch copy, a restore in progress, the database a restore replaced).
 * The source part is shortened, never the stamp, to stay within 63 bytes.
 */
export type DerivedTag = 'drill' | 'restoring' | 'pre_restore'

export function derivedDatabaseName(source: string, tag: DerivedTag, now: Date, attempt = 1): string {
  const stamp = artifactName(now).slice(ARTIFACT_PREFIX.length).toLowerCase()
  const suffix = `_${tag}_${stamp}${attempt > 1 ? `_${attempt}` : ''}`
  let head = source
  while (Buffer.byteLength(head + suffix) > MAX_IDENTIFIER_BYTES) head = [...head].slice(0, -1).join('')
  return head + suffix
}

/** The first derived name not in use: two restores in one second must not collide. */
export async function unusedDerivedName(conn: PgConnection, source: string, tag: DerivedTag, now: Date): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    const name = derivedDatabaseName(source, tag, now, attempt)
    if (!(await databaseExists(conn, name))) return name
  }
}
