import { open, rm, statfs } from 'node:fs/promises'
import { dirname } from 'node:path'
import { changedAfterVerification } from '../artifact/verified-file.ts'
import { runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine } from '../cli/redact.ts'
import { DigestMismatch, verifiedBytes } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { writeAll } from '../pipeline/write-all.ts'
import type { DumpSource } from './restore.ts'

/**
 * Staging: the verified dump decompressed into a private file, so that one
 * `pg_restore --jobs` loads the data in parallel too (a streamed archive
 * can only be read by one pg_restore, whose data section then runs in one
 * backend). Measured on the 1 GiB benchmark database on 2 cores: the data
 * section was ~8 s in one backend; staging costs one sequential write of
 * about 7 times the artifact's size.
 *
 * Only for zstd dumps stored in the clear: a decrypted dump must not be
 * written to a disk, and formatVersion 1 dumps keep the streamed path.
 */
export function canStage(source: DumpSource, env: NodeJS.ProcessEnv): boolean {
  return source.compression === 'zstd' && !source.encrypted && env.RESTORE_STAGE_DUMP?.trim().toLowerCase() !== 'false'
}

const GiB = 1024 * 1024 * 1024
/** zstd -3 on pg_dump output: rarely under 3×; staging is not tried without room for that much. */
const MIN_EXPANSION = 3
/** How often the room is checked while staging: at ~1 GB/s, a quarter of a GB at most between checks. */
export const ROOM_CHECK_MS = 250

/**
 * Pure: the free bytes staging must leave on its file system. The database
 * server, its WAL, or other jobs may share it, so staging stops well
 * before it is full: at 1 GiB or 5% of the file system, whichever is more.
 */
export function stagingReserve(totalBytes: number): number {
  return Math.max(GiB, Math.ceil(totalBytes * 0.05))
}

async function freeAndReserve(dir: string): Promise<{ free: number; reserve: number }> {
  const s = await statfs(dir)
  return { free: s.bavail * s.bsize, reserve: stagingReserve(s.blocks * s.bsize) }
}

/**
 * Decompresses the verified dump into `path` (a new 0600 file in a private
 * directory), hashing the stored bytes on the way; `path` is complete and
 * the bytes matched their checksum when this resolves 'staged'. When the
 * file system runs short of room (see stagingReserve) it stops, removes
 * the file and resolves 'no-room', and the caller streams instead: nothing
 * has been touched either way. Changed or undecodable bytes reject.
 */
export async function stageDump(
  source: DumpSource,
  path: string,
  env: NodeJS.ProcessEnv,
  onProgress?: (bytes: number) => void,
  /** Free and reserved bytes of the file system; tests shrink it. */
  room: (dir: string) => Promise<{ free: number; reserve: number }> = freeAndReserve,
): Promise<'staged' | 'no-room'> {
  const dir = dirname(path)
  const start = await room(dir)
  if (start.free - start.reserve < source.file.digest.size * MIN_EXPANSION) return 'no-room'
  const out = await open(path, 'wx', 0o600)
  let short = false
  const zstd = (() => {
    try {
      return spawnTool('zstd', ['-d', '-q', '-c'], { env, stdin: 'pipe', stdout: out.fd, missing: runtimeError('zstd not found on PATH', 'install it (apt-get install zstd)') })
    } finally {
      void out.close() // the child has its own copy of the descriptor
    }
  })()
  const watch = setInterval(() => {
    room(dir).then(
      ({ free, reserve }) => {
        if (free >= reserve) return
        short = true
        zstd.kill('SIGKILL')
      },
      () => {},
    )
  }, ROOM_CHECK_MS)
  try {
    let feedError: unknown
    try {
      for await (const chunk of verifiedBytes(source.file.handle, source.file.digest, () => zstd.kill('SIGKILL'), onProgress)) {
        await writeAll(zstd.stdin!, chunk)
      }
      zstd.stdin!.end()
    } catch (err) {
      feedError = err
      zstd.kill('SIGKILL')
    }
    const exit = await zstd.exited
    if (feedError instanceof DigestMismatch) throw changedAfterVerification(source.file.name, 'nothing was restored')
    const why = oneLine(zstd.stderr())
    if (short || /No space left/i.test(why)) {
      await rm(path, { force: true })
      return 'no-room'
    }
    if (feedError !== undefined) throw feedError
    if (exit !== 0) throw verificationError(`the dump cannot be decompressed (${why || `exit status ${exit}`})`, 'the artifact is damaged; use another backup')
    return 'staged'
  } catch (err) {
    await rm(path, { force: true })
    throw err
  } finally {
    clearInterval(watch)
  }
}
