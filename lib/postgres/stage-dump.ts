import { open, rm, stat, statfs, type FileHandle } from 'node:fs/promises'
import { dirname } from 'node:path'
import { changedAfterVerification } from '../artifact/verified-file.ts'
import { runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine } from '../cli/redact.ts'
import { toolWriteErrno } from '../cli/system-errors.ts'
import { parseSwitch } from '../cli/switches.ts'
import { DigestMismatch, verifiedBytes } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { writeAll } from '../pipeline/write-all.ts'
import { followFile } from '../pipeline/follow-file.ts'
import { BlockWalker, offsetPatches, readTocLayout, type TocLayout } from './dump-offsets.ts'
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
export function canStage(source: DumpSource, wanted: boolean): boolean {
  return source.compression === 'zstd' && !source.encrypted && wanted
}

/** RESTORE_STAGE_DUMP: on unless set to false; a typo is refused (exit 2). Read by the scripts, before anything runs. */
export function stagingWanted(env: NodeJS.ProcessEnv): boolean {
  const raw = env.RESTORE_STAGE_DUMP
  return raw === undefined || raw.trim() === '' || parseSwitch(raw, 'RESTORE_STAGE_DUMP')
}

const GiB = 1024 * 1024 * 1024
/** zstd -3 on pg_dump output: rarely under 3× (7× on the benchmark); staging is not tried without room for that much, twice. */
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

/**
 * Pure: whether staging may go on with `staged` bytes written and `free`
 * left. The restored database will need about as much again, on this very
 * file system when it holds the server's data directory too, so the room
 * left must cover the reserve plus what has been staged.
 */
export function roomToGoOn(free: number, reserve: number, staged: number): boolean {
  return free >= reserve + staged
}

/** tmpfs: its free space is RAM (or swap); a whole dump there breaks flat memory. */
const TMPFS_MAGIC = 0x01021994

async function freeAndReserve(dir: string): Promise<{ free: number; reserve: number; memory: boolean }> {
  const s = await statfs(dir)
  return { free: s.bavail * s.bsize, reserve: stagingReserve(s.blocks * s.bsize), memory: s.type === TMPFS_MAGIC }
}

/** A staging file system that filled up or refused to grow (in zstd's words, or SIGXFSZ): stream instead. */
const NO_ROOM = new Set(['ENOSPC', 'EDQUOT', 'EFBIG'])

export interface StageOptions {
  onProgress?: (bytes: number) => void
  /** RESTORE_STAGING_DIR was set: the operator chose this file system, tmpfs included. */
  chosen?: boolean
  /** Free and reserved bytes of the file system, and whether it is memory (tmpfs); tests shrink it. */
  room?: (dir: string) => Promise<{ free: number; reserve: number; memory?: boolean }>
}

/**
 * Decompresses the verified dump into `path` (a new 0600 file in a private
 * directory), hashing the stored bytes on the way; `path` is complete and
 * the bytes matched their checksum when this resolves 'staged'. When the
 * file system runs short of room (see stagingReserve) it stops, removes
 * the file and resolves 'no-room' ('memory' when the directory is a tmpfs
 * nobody chose), and the caller streams instead: nothing has been touched
 * either way. Changed or undecodable bytes reject.
 */
export async function stageDump(
  source: DumpSource,
  path: string,
  env: NodeJS.ProcessEnv,
  { onProgress, chosen = false, room = freeAndReserve }: StageOptions = {},
): Promise<'staged' | 'no-room' | 'memory'> {
  const dir = dirname(path)
  const start = await room(dir)
  if (start.memory && !chosen) return 'memory'
  // Room for the dump at its least expansion, and as much again for the database (see roomToGoOn).
  if (!roomToGoOn(start.free, start.reserve, 2 * source.file.digest.size * MIN_EXPANSION)) return 'no-room'
  // Read and write: the staged copy is read back as it grows to find its data blocks (dump-offsets.ts).
  const out = await open(path, 'wx+', 0o600)
  let short = false
  /** We killed zstd ourselves (no room, a failed or changed feed): its exit status then says nothing. */
  let killed = false
  const stop = () => {
    killed = true
    zstd.kill('SIGKILL')
  }
  const zstd = (() => {
    try {
      return spawnTool('zstd', ['-d', '-q', '-c'], { env, stdin: 'pipe', stdout: out.fd, missing: runtimeError('zstd not found on PATH', 'install it (apt-get install zstd)') })
    } catch (err) {
      out.close().catch(() => {})
      throw err
    }
  })()
  // Once staging is stopped (no room, a failed feed) the rest of the file is not worth reading.
  const offsets = locateBlocks(out.fd, zstd.exited, () => killed)
  offsets.catch(() => {}) // awaited once zstd is done; a failure here only means no offsets
  const watch = setInterval(() => {
    Promise.all([room(dir), stat(path)]).then(
      ([{ free, reserve }, st]) => {
        if (roomToGoOn(free, reserve, st.size)) return
        short = true
        stop()
      },
      () => {},
    )
  }, ROOM_CHECK_MS)
  try {
    let feedError: unknown
    try {
      for await (const chunk of verifiedBytes(source.file.handle, source.file.digest, stop, onProgress)) {
        // A write that fails means zstd went away: its exit status tells why (below), the broken pipe does not.
        const wrote = await writeAll(zstd.stdin!, chunk).then(
          () => true,
          (err: unknown) => {
            feedError = err
            return false
          },
        )
        if (!wrote) break
      }
      if (feedError === undefined) zstd.stdin!.end()
    } catch (err) {
      // Reading the artifact failed (or its bytes changed): that is the story, zstd is stopped.
      feedError = err
      stop()
    }
    const exit = await zstd.exited
    if (feedError instanceof DigestMismatch) throw changedAfterVerification(source.file.name, 'nothing was restored')
    const why = oneLine(zstd.stderr())
    if (short || NO_ROOM.has(toolWriteErrno(why, exit) ?? '')) {
      await rm(path, { force: true })
      return 'no-room'
    }
    // zstd's own failure explains a feed cut short (EPIPE): decide from it first, unless we killed it.
    if (exit !== 0 && !killed) {
      if (exit > 128) {
        throw runtimeError(`zstd was killed by signal ${exit - 128} while staging the dump (out of memory, or stopped from outside)`, 'run the restore again, or set RESTORE_STAGE_DUMP=false to stream')
      }
      if (/write error/i.test(why)) throw runtimeError(`cannot write the staged dump in ${dir}: ${why}`, 'check that file system (RESTORE_STAGING_DIR), or set RESTORE_STAGE_DUMP=false to stream')
      throw verificationError(`the dump cannot be decompressed (${why || `exit status ${exit}`})`, 'the artifact is damaged; use another backup')
    }
    // Past this point zstd either succeeded or was stopped by us, which only a feed error or no room does.
    if (feedError !== undefined) throw feedError
    // Finding the offsets is an optimisation: a failure there means none, not a failed restore.
    await writeOffsets(out, await offsets.catch(() => null))
    return 'staged'
  } catch (err) {
    await rm(path, { force: true })
    throw err
  } finally {
    clearInterval(watch)
    await offsets.catch(() => {}) // done reading before the descriptor goes
    await out.close().catch(() => {})
  }
}

/** A table of contents bigger than this (tens of thousands of objects) is not worth holding: no offsets. */
const MAX_TOC = 64 * 1024 * 1024

/**
 * Follows the staged copy as zstd writes it and finds each data block
 * (dump-offsets.ts): the table of contents first, then the blocks. Null
 * when the layout is not one it knows, or the walk did not add up; the
 * restore then runs without offsets, as pg_dump wrote it.
 */
async function locateBlocks(
  fd: number,
  exited: Promise<number>,
  stopped: () => boolean,
): Promise<{ layout: TocLayout; blocks: Map<number, number> } | null> {
  let head: Buffer[] = []
  let headBytes = 0
  // The table of contents is parsed again only once the bytes held have doubled: linear,
  // however big it is (one entry per large object makes it tens of MiB).
  let nextTry = 0
  let layout: TocLayout | null = null
  let walker: BlockWalker | null = null
  let gaveUp = false
  const tryLayout = () => {
    nextTry = 2 * headBytes
    const found = readTocLayout(Buffer.concat(head))
    if (found === 'more') return
    gaveUp = found === null
    if (found === null) head = []
    else {
      layout = found
      walker = new BlockWalker(found, 0)
      for (const part of head) walker.push(part)
      head = []
    }
  }
  await followFile(
    fd,
    exited,
    (chunk) => {
      if (gaveUp) return
      if (walker) return walker.push(chunk)
      head.push(Buffer.from(chunk)) // the read buffer is reused
      headBytes += chunk.length
      if (headBytes > MAX_TOC) {
        gaveUp = true
        head = []
      } else if (headBytes >= nextTry) tryLayout()
    },
    { stop: () => gaveUp || stopped() },
  )
  if (!walker && !gaveUp && head.length > 0) tryLayout() // the whole dump is in `head`: one last try
  const blocks = walker ? (walker as BlockWalker).result() : null
  return layout && blocks ? { layout, blocks } : null
}

/** Only the offset fields of the table of contents change; a failure to write them is a failure to stage. */
async function writeOffsets(out: FileHandle, found: { layout: TocLayout; blocks: Map<number, number> } | null): Promise<void> {
  if (!found) return
  for (const { at, bytes } of offsetPatches(found.layout, found.blocks)) await out.write(bytes, 0, bytes.length, at)
}
