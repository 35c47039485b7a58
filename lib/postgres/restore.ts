import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine, redact } from '../cli/redact.ts'
import type { VerifiedFile } from '../artifact/verified-file.ts'
import { DigestMismatch, readRange, verifiedBytes } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { failed, notFound } from './client.ts'
import { conninfoQuote, type PgConnection } from './connection.ts'


const pgRestore = (conn: PgConnection, args: string[]) =>
  spawnTool('pg_restore', args, { env: conn.env, stdin: 'pipe', stdout: 'ignore', missing: notFound('pg_restore') })

/**
 * Reads the archive's table of contents with the pg_restore that will do
 * the restore: a dump from a newer pg_dump, or one damaged before its
 * checksum was taken, fails here, before the database is touched. It is
 * fed from the verified handle; pg_restore stops reading after the table
 * of contents, so this costs little however large the dump.
 */
export async function checkArchive(conn: PgConnection, dump: VerifiedFile): Promise<void> {
  const list = pgRestore(conn, ['--list', '--file=/dev/null'])
  const fed = pipeline(Readable.from(readRange(dump.handle, dump.digest.size)), list.stdin!).catch(() => {})
  const exitCode = await list.exited
  await fed
  if (exitCode !== 0) {
    throw verificationError(
      `the dump cannot be read by this pg_restore: ${oneLine(redact(list.stderr(), conn.secrets))}`,
      'use a pg_restore at least as new as the pg_dump named in manifest.json, or another backup',
    )
  }
}

/**
 * Replaces, inside `database`, every object the dump contains (drop then
 * recreate), in one transaction: a failure part-way leaves the database
 * as it was. Objects that are not in the dump are left alone.
 *
 * pg_restore reads the dump from a pipe that we feed from the verified
 * handle, hashing again as it goes and holding back the last chunk until
 * the whole dump has matched. pg_restore cannot commit without that last
 * chunk (the end of the last data block), so bytes changed after
 * verification end in a killed pg_restore and a rolled-back transaction.
 */
export async function restoreDatabase(
  conn: PgConnection,
  dump: VerifiedFile,
  database: string,
  onProgress?: (bytes: number) => void,
): Promise<void> {
  const restore = pgRestore(conn, [
    '--clean',
    '--if-exists',
    '--single-transaction',
    '--exit-on-error',
    '--no-password',
    `--dbname=${conninfoQuote('dbname', database)}`,
  ])
  const bytes = verifiedBytes(dump.handle, dump.digest, () => restore.kill('SIGKILL'), onProgress)
  const fed = pipeline(Readable.from(bytes), restore.stdin!).then(
    () => undefined,
    (err: unknown) => err,
  )
  const [exitCode, feedError] = await Promise.all([restore.exited, fed])
  if (feedError instanceof DigestMismatch) {
    throw verificationError(
      `${dump.name} changed after it was verified; pg_restore was stopped and its transaction rolled back, nothing was restored`,
      'something is writing into the backup directory; stop it, then verify and restore again',
    )
  }
  if (exitCode !== 0) {
    throw failed(conn, 'pg_restore', { exitCode, stderr: restore.stderr() }, 'the database was left unchanged (single transaction); fix the cause and re-run')
  }
  if (feedError) {
    throw runtimeError(
      `pg_restore finished before reading the whole of ${dump.name}`,
      'the dump may not be a complete pg_dump archive; check the database and restore again',
    )
  }
}
