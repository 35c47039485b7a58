import { createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { VerifiedFile } from '../artifact/verified-file.ts'
import { runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine, redact } from '../cli/redact.ts'
import { DigestMismatch, readRange, verifiedBytes } from '../pipeline/checksum.ts'
import { spawnTool, type Tool } from '../pipeline/spawn.ts'
import { decompressor } from '../pipeline/zstd.ts'
import { failed, notFound } from './client.ts'
import { conninfoQuote, type PgConnection } from './connection.ts'

/** How the dump file is stored: formatVersion 2 compresses with zstd, 1 relies on pg_dump's own zlib. */
export type DumpCompression = 'zstd' | undefined

/** A verified dump file, and how to turn its bytes back into pg_dump's archive. */
export interface DumpSource {
  file: VerifiedFile
  compression: DumpCompression
}

const pgRestore = (conn: PgConnection, args: string[], stdin: 'pipe' | 'ignore' = 'pipe') =>
  spawnTool('pg_restore', args, { env: conn.env, stdin, stdout: 'ignore', missing: notFound('pg_restore') })

const changedAfterVerification = (name: string, undo: string) =>
  verificationError(
    `${name} changed after it was verified; ${undo}`,
    'something is writing into the backup directory; stop it, then verify and restore again',
  )

/**
 * Feeds `bytes` (the file's, as read) into `sink`, through zstd when the
 * dump is compressed. Resolves with the error that stopped the feed, if
 * any, once every process of the chain has ended; rejects never.
 */
async function feed(source: DumpSource, bytes: AsyncIterable<Buffer>, sink: NodeJS.WritableStream, env: NodeJS.ProcessEnv, unzip?: Tool): Promise<unknown> {
  const settle = (p: Promise<unknown>) => p.then(() => undefined, (err: unknown) => err)
  if (source.compression !== 'zstd') return settle(pipeline(Readable.from(bytes), sink))
  const z = unzip ?? decompressor(env)
  const [inErr, outErr, exit] = await Promise.all([
    settle(pipeline(Readable.from(bytes), z.stdin!)),
    settle(pipeline(z.stdout!, sink)),
    z.exited.catch((err: unknown) => err),
  ])
  if (inErr) return inErr
  if (typeof exit !== 'number') return exit
  if (exit !== 0) return runtimeError(`zstd could not decompress the dump: ${oneLine(z.stderr()) || `exit status ${exit}`}`, 'the artifact may be damaged; use another backup')
  return outErr
}

/**
 * Reads the archive's table of contents with the pg_restore that will do
 * the restore: a dump from a newer pg_dump, or one damaged before its
 * checksum was taken, fails here, before the database is touched. It is
 * fed from the verified handle; pg_restore stops reading after the table
 * of contents, so this costs little however large the dump.
 */
export async function checkArchive(conn: PgConnection, source: DumpSource): Promise<void> {
  const list = pgRestore(conn, ['--list', '--file=/dev/null'])
  const unzip = source.compression === 'zstd' ? decompressor(conn.env) : undefined
  const fed = feed(source, readRange(source.file.handle, source.file.digest.size), list.stdin!, conn.env, unzip)
  const exitCode = await list.exited
  unzip?.kill() // pg_restore has what it needs; the rest of the stream is not wanted
  await fed
  if (exitCode !== 0) {
    throw verificationError(
      `the dump cannot be read by this pg_restore: ${oneLine(redact(list.stderr(), conn.secrets))}`,
      'use a pg_restore at least as new as the pg_dump named in manifest.json, or another backup',
    )
  }
}

/**
 * Writes pg_dump's archive, decompressed, to `dest` for a parallel
 * pg_restore (which needs a seekable file), re-hashing the verified bytes
 * on the way: a file changed since verification never becomes a staged
 * dump. `dest` lives in a private (0700) directory of ours.
 */
export async function stageDump(conn: PgConnection, source: DumpSource, dest: string, onProgress?: (bytes: number) => void): Promise<void> {
  const unzip = source.compression === 'zstd' ? decompressor(conn.env) : undefined
  const bytes = verifiedBytes(source.file.handle, source.file.digest, () => unzip?.kill('SIGKILL'), onProgress)
  const err = await feed(source, bytes, createWriteStream(dest, { flags: 'wx', mode: 0o600 }), conn.env, unzip)
  if (err instanceof DigestMismatch) throw changedAfterVerification(source.file.name, 'nothing was restored')
  if ((err as NodeJS.ErrnoException)?.code === 'ENOSPC') {
    throw runtimeError(`no space left to stage the uncompressed dump in ${dest}`, 'set RESTORE_STAGING_DIR to a file system with room for it')
  }
  if (err) throw err
}

/**
 * pg_restore -j into a database we just created: the fast path. It is
 * not one transaction, which is why it only ever targets a new database
 * that nothing else uses; the caller swaps it in once it is complete.
 */
export async function restoreParallel(conn: PgConnection, staged: string, database: string, jobs: number): Promise<void> {
  const restore = pgRestore(
    conn,
    [`--jobs=${jobs}`, '--exit-on-error', '--no-password', `--dbname=${conninfoQuote('dbname', database)}`, staged],
    'ignore',
  )
  const exitCode = await restore.exited
  if (exitCode !== 0) {
    throw failed(conn, 'pg_restore', { exitCode, stderr: restore.stderr() }, 'the half-restored new database was dropped and the target left as it was; fix the cause and re-run')
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
export async function restoreInPlace(
  conn: PgConnection,
  source: DumpSource,
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
  const unzip = source.compression === 'zstd' ? decompressor(conn.env) : undefined
  const stop = () => {
    restore.kill('SIGKILL')
    unzip?.kill('SIGKILL')
  }
  const bytes = verifiedBytes(source.file.handle, source.file.digest, stop, onProgress)
  const [exitCode, feedError] = await Promise.all([restore.exited, feed(source, bytes, restore.stdin!, conn.env, unzip)])
  if (feedError instanceof DigestMismatch) {
    throw changedAfterVerification(source.file.name, 'pg_restore was stopped and its transaction rolled back, nothing was restored')
  }
  if (exitCode !== 0) {
    throw failed(conn, 'pg_restore', { exitCode, stderr: restore.stderr() }, 'the database was left unchanged (single transaction); fix the cause and re-run')
  }
  if (feedError) {
    throw runtimeError(`pg_restore finished before reading the whole of ${source.file.name}`, 'the dump may not be a complete pg_dump archive; check the database and restore again')
  }
}
