import { createWriteStream, type WriteStream } from 'node:fs'
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { changedAfterVerification, type VerifiedFile } from '../artifact/verified-file.ts'
import { DrError, runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine, redact } from '../cli/redact.ts'
import { DigestMismatch, readRange, streamOf, verifiedBytes } from '../pipeline/checksum.ts'
import { spawnTool, type Tool } from '../pipeline/spawn.ts'
import { decoder, needsDecoding, type Decoding } from '../pipeline/decode.ts'
import { writeAll } from '../pipeline/write-all.ts'
import { failed, notFound } from './client.ts'
import { clientCommand } from './client-path.ts'
import { conninfoQuote, type PgConnection } from './connection.ts'

/** How the dump file is stored: formatVersion 2 compresses with zstd, 1 relies on pg_dump's own zlib. */
export type DumpCompression = 'zstd' | undefined

/** A verified dump file, and how to turn its bytes back into pg_dump's archive. */
export interface DumpSource extends Decoding {
  file: VerifiedFile
  compression: DumpCompression
  /** Stored as age ciphertext; `identity` is set when the key is at hand (never in a dry run). */
  encrypted: boolean
}

const pgRestore = (conn: PgConnection, args: string[], stdin: 'pipe' | 'ignore' = 'pipe') =>
  spawnTool(clientCommand('pg_restore', conn.env), args, { env: conn.env, stdin, stdout: 'ignore', missing: notFound('pg_restore') })

/** zstd ended by our own SIGTERM/SIGKILL (its reader had what it needed, or we stopped it) is not a damaged dump. */
const killedByUs = (exit: number) => exit === 128 + 15 || exit === 128 + 9

/**
 * Feeds `bytes` (the file's, as read) into `sink`, through zstd when the
 * dump is compressed, and through `taps` (which see the archive's bytes)
 * on the way. One pipeline per hop, so a sink that goes away (pg_restore
 * exiting) tears the whole chain down instead of stalling it. Resolves with
 * the error that stopped the feed, if any, once every process of the
 * chain has ended; rejects never.
 */
async function feed(
  source: DumpSource,
  bytes: AsyncIterable<Buffer>,
  sink: NodeJS.WritableStream,
  env: NodeJS.ProcessEnv,
  unzip?: Tool,
  taps: Transform[] = [],
): Promise<unknown> {
  const settle = (p: Promise<unknown>) => p.then(() => undefined, (err: unknown) => err)
  if (!needsDecoding(source)) return settle(pipeline([streamOf(bytes), ...taps, sink]))
  const z = unzip ?? decoder(source, env)
  const [inErr, outErr, exit] = await Promise.all([
    settle(pipeline(streamOf(bytes), z.stdin!)),
    settle(pipeline([z.stdout!, ...taps, sink])),
    z.exited.catch((err: unknown) => err),
  ])
  // zstd that never ran (not installed) explains everything downstream of it.
  if (typeof exit !== 'number') return exit
  if (inErr) return inErr
  return decodeDamage(z, exit) ?? outErr
}

/**
 * Bytes whose checksum matched but do not decompress (or decrypt): damaged
 * before they were checksummed, or not ours. Not when the decoder was
 * stopped by us or died of its reader going away (pg_restore failed
 * first, for its own reason, which is then the one to report).
 */
function decodeDamage(z: Tool, exit: number): DrError | undefined {
  if (exit === 0 || killedByUs(exit) || exit === 128 + 13) return undefined
  const why = oneLine(z.stderr())
  if (/broken pipe/i.test(why)) return undefined
  const step = why.startsWith('age:') ? 'decrypted' : 'decompressed'
  return verificationError(`the dump cannot be ${step} (${why || `exit status ${exit}`})`, 'the artifact is damaged; use another backup')
}

/** A damaged dump explains pg_restore's failure (it read a cut or garbled archive): report the damage (exit 4). */
const isDamage = (err: unknown): err is DrError => err instanceof DrError && err.kind === 'verification'

/**
 * Reads the archive's table of contents with the pg_restore that will do
 * the restore: a dump from a newer pg_dump, or one damaged before its
 * checksum was taken, fails here, before the database is touched. It is
 * fed from the verified handle; pg_restore stops reading after the table
 * of contents, so this costs little however large the dump.
 */
export async function checkArchive(conn: PgConnection, source: DumpSource): Promise<{ tocBytes: number }> {
  const list = pgRestore(conn, ['--list', '--file=/dev/null'])
  const unzip = needsDecoding(source) ? decoder(source, conn.env) : undefined
  const counter = new ByteCounter()
  const fed = feed(source, readRange(source.file.handle, source.file.digest.size), list.stdin!, conn.env, unzip, [counter])
  const exitCode = await list.exited
  unzip?.kill() // pg_restore has what it needs; the rest of the stream is not wanted
  const feedError = await fed
  // pg_restore saw a short or garbled archive because zstd could not run or decompress: say that instead.
  if (exitCode !== 0 && feedError instanceof DrError) throw feedError
  if (exitCode !== 0) {
    throw verificationError(
      `the dump cannot be read by this pg_restore: ${oneLine(redact(list.stderr(), conn.secrets))}`,
      'use a pg_restore at least as new as the pg_dump named in manifest.json, or another backup',
    )
  }
  // pg_restore had read the whole table of contents before it exited: what we fed it is an upper bound.
  return { tocBytes: counter.bytes }
}

/** What a failed restore into a new database leaves (restore-new.ts drops it), for either way of restoring. */
const NEW_DATABASE_FIX = 'the half-restored new database was dropped and the target left as it was; fix the cause and re-run'

/** Margin over the measured table of contents: the head file must never end inside it. */
const TOC_MARGIN = 1024 * 1024

/**
 * The streamed restore into a new, empty database, when the dump cannot be
 * staged (stage-dump.ts: encrypted, formatVersion 1, too little room, or
 * RESTORE_STAGE_DUMP=false), in two runs of pg_restore:
 *
 * 1. the schema and the data (`--section=pre-data --section=data`),
 *    streamed from the verified file through zstd, hashed again on the
 *    way, holding back its last 256 KiB until it matched;
 * 2. indexes, constraints and the rest (`--section=post-data`) with
 *    `--jobs`, which needs a seekable archive but no data: it reads a
 *    copy of just the archive's head (its table of contents), written
 *    from the same verified stream.
 *
 * Nothing is staged but that head, so it needs no scratch space the size
 * of the database; the price is a data section in one backend.
 * It is not one transaction, which is why it only ever targets a new
 * database that nothing else uses; the caller swaps it in when complete.
 */
export async function restoreStreamed(
  conn: PgConnection,
  source: DumpSource,
  database: string,
  opts: { tocBytes: number; jobs: number; headPath: string; onProgress?: (bytes: number) => void },
): Promise<void> {
  const dbname = `--dbname=${conninfoQuote('dbname', database)}`
  const loadArgs = ['--section=pre-data', '--section=data', '--exit-on-error', '--no-password', dbname]
  const head = new HeadCopy(opts.headPath, opts.tocBytes + TOC_MARGIN)
  const { exitCode, stderr, feedError } =
    needsDecoding(source) ? await loadDecoded(conn, source, loadArgs, head, opts.onProgress) : await loadPlain(conn, source, loadArgs, head, opts.onProgress)
  await head.headWritten().catch((err: unknown) => {
    throw (err as NodeJS.ErrnoException)?.code === 'ENOSPC'
      ? runtimeError(`no space left for the archive's table of contents in ${opts.headPath}`, 'set RESTORE_STAGING_DIR to a file system with a little room')
      : err
  })
  if (feedError instanceof DigestMismatch) throw changedAfterVerification(source.file.name, 'nothing was restored')
  if (isDamage(feedError)) throw feedError
  const fix = NEW_DATABASE_FIX
  if (exitCode !== 0) throw failed(conn, 'pg_restore (schema and data)', { exitCode, stderr }, fix)
  if (feedError) throw feedError

  const post = pgRestore(conn, [`--jobs=${opts.jobs}`, '--section=post-data', '--exit-on-error', '--no-password', dbname, opts.headPath], 'ignore')
  const postExit = await post.exited
  if (postExit !== 0) throw failed(conn, 'pg_restore (indexes and constraints)', { exitCode: postExit, stderr: post.stderr() }, fix)
}

/**
 * The whole restore by one `pg_restore --jobs` from a staged, verified,
 * uncompressed dump (stage-dump.ts): schema, data and indexes all in
 * parallel. Not one transaction either; the caller's new database is what
 * makes it all-or-nothing.
 */
export async function restoreStaged(conn: PgConnection, path: string, database: string, jobs: number): Promise<void> {
  const dbname = `--dbname=${conninfoQuote('dbname', database)}`
  const run = pgRestore(conn, [`--jobs=${jobs}`, '--exit-on-error', '--no-password', dbname, path], 'ignore')
  const exitCode = await run.exited
  if (exitCode !== 0) {
    throw failed(conn, 'pg_restore', { exitCode, stderr: run.stderr() }, NEW_DATABASE_FIX)
  }
}

interface Loaded {
  exitCode: number
  stderr: string
  feedError: unknown
}

/** formatVersion 1: pg_dump compressed the archive itself, so the bytes are few and pass through us. */
async function loadPlain(conn: PgConnection, source: DumpSource, args: string[], head: HeadCopy, onProgress?: (bytes: number) => void): Promise<Loaded> {
  const load = pgRestore(conn, args)
  const bytes = verifiedBytes(source.file.handle, source.file.digest, () => load.kill('SIGKILL'), onProgress)
  const [exitCode, feedError] = await Promise.all([load.exited, feed(source, bytes, load.stdin!, conn.env, undefined, [head])])
  return { exitCode, stderr: load.stderr(), feedError }
}

/**
 * formatVersion 2: the verified compressed bytes go to `zstd -d`, whose
 * output reaches pg_restore through an OS pipe: the uncompressed archive
 * (often several times the file) never passes through this process. A
 * second `zstd -d`, fed the same verified bytes only until the head copy is
 * full, produces the table of contents for the post-data run.
 */
async function loadDecoded(conn: PgConnection, source: DumpSource, args: string[], head: HeadCopy, onProgress?: (bytes: number) => void): Promise<Loaded> {
  const unzip = decoder(source, conn.env)
  const load = spawnTool(clientCommand('pg_restore', conn.env), args, { env: conn.env, stdin: unzip.stdout!, stdout: 'ignore', missing: notFound('pg_restore') })
  const headUnzip = decoder(source, conn.env)
  const headDone = pipeline(headUnzip.stdout!, head, new Writable({ write: (_chunk, _enc, done) => done() })).catch(() => {})
  const stop = () => {
    load.kill('SIGKILL')
    unzip.kill('SIGKILL')
    headUnzip.kill('SIGKILL')
  }
  const bytes = verifiedBytes(source.file.handle, source.file.digest, stop, onProgress)
  const pump = async () => {
    let headOpen = true
    for await (const chunk of bytes) {
      await writeAll(unzip.stdin!, chunk)
      if (!headOpen) continue
      if (head.full) {
        headOpen = false
        headUnzip.kill() // it has produced the whole table of contents; the rest is not wanted
      } else {
        await writeAll(headUnzip.stdin!, chunk).catch(() => {
          headOpen = false
        })
      }
    }
    unzip.stdin!.end()
    if (headOpen) headUnzip.stdin!.end()
  }
  const feedError = await pump().then(
    () => undefined,
    (err: unknown) => {
      if (!(err instanceof DigestMismatch)) stop()
      return err
    },
  )
  const [exitCode, unzipExit] = await Promise.all([load.exited, unzip.exited, headUnzip.exited.catch(() => 0), headDone])
  const damage = feedError ? undefined : decodeDamage(unzip, unzipExit)
  if (damage) return { exitCode, stderr: load.stderr(), feedError: damage }
  if (!feedError && exitCode === 0 && unzipExit !== 0) {
    return { exitCode: 1, stderr: oneLine(unzip.stderr()) || `decoding failed with exit status ${unzipExit}`, feedError }
  }
  return { exitCode, stderr: load.stderr(), feedError }
}

/** Counts the bytes passing through. */
class ByteCounter extends Transform {
  bytes = 0
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.bytes += chunk.length
    done(null, chunk)
  }
}

/** Passes everything through and writes the first `limit` bytes to `path` (0600, new file) on the way. */
class HeadCopy extends Transform {
  private readonly out: WriteStream
  private left: number
  /** Everything wanted has been written: the rest of the stream may be dropped. */
  get full(): boolean {
    return this.left <= 0
  }
  private readonly done: Promise<void>

  constructor(path: string, limit: number) {
    super()
    this.left = limit
    this.out = createWriteStream(path, { flags: 'wx', mode: 0o600 })
    this.done = new Promise((resolve, reject) => {
      this.out.on('close', resolve)
      this.out.on('error', (err) => {
        reject(err)
        this.destroy(err) // a full disk must stop the restore, not stall it waiting for 'drain'
      })
    })
    this.done.catch(() => {}) // observed by headWritten(); an early failure must not count as unhandled
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, next: TransformCallback): void {
    if (this.left <= 0) return next(null, chunk)
    const part = chunk.subarray(0, this.left)
    this.left -= part.length
    // Pass the chunk on once its head part is written: simple backpressure that cannot miss a 'drain'.
    this.out.write(part, (err) => next(err ?? null, chunk))
    if (this.left <= 0) this.out.end()
  }

  override _flush(done: TransformCallback): void {
    if (!this.out.writableEnded) this.out.end()
    done()
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    if (!this.out.writableEnded) this.out.end()
    cb(err)
  }

  headWritten(): Promise<void> {
    return this.done
  }
}

/**
 * Replaces, inside `database`, every object the dump contains (drop then
 * recreate), in one transaction: a failure part-way leaves the database
 * as it was. Objects that are not in the dump are left alone.
 *
 * pg_restore reads the dump from a pipe that we feed from the verified
 * handle, hashing again as it goes and holding back its last 256 KiB until
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
  const unzip = needsDecoding(source) ? decoder(source, conn.env) : undefined
  const stop = () => {
    restore.kill('SIGKILL')
    unzip?.kill('SIGKILL')
  }
  const bytes = verifiedBytes(source.file.handle, source.file.digest, stop, onProgress)
  const [exitCode, feedError] = await Promise.all([restore.exited, feed(source, bytes, restore.stdin!, conn.env, unzip)])
  if (feedError instanceof DigestMismatch) {
    throw changedAfterVerification(source.file.name, 'pg_restore was stopped and its transaction rolled back, nothing was restored')
  }
  if (isDamage(feedError)) throw new DrError(feedError.kind, `${feedError.message}; the database was left unchanged (single transaction)`, feedError.fix)
  if (exitCode !== 0) {
    throw failed(conn, 'pg_restore', { exitCode, stderr: restore.stderr() }, 'the database was left unchanged (single transaction); fix the cause and re-run')
  }
  if (feedError) {
    throw runtimeError(`pg_restore finished before reading the whole of ${source.file.name}`, 'the dump may not be a complete pg_dump archive; check the database and restore again')
  }
}
