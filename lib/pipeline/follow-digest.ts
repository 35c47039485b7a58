import { createHash } from 'node:crypto'
import { fdatasync, read } from 'node:fs'
import { promisify } from 'node:util'
import { READ_CHUNK, type Digest } from './checksum.ts'

const readAt = promisify(read)
const datasync = promisify(fdatasync)

/** How long to wait for the writer when every byte so far is hashed: short next to a 1 MiB chunk at zstd's speed. */
const POLL_MS = 10
/** Write-back is started every this many bytes, so the fsync before publishing has little left to do. */
export const FLUSH_EVERY = 64 * 1024 * 1024

/**
 * Hashes a file that a child process (zstd, age) is writing through its
 * own descriptor, by reading it back from the page cache as it grows:
 * the stored bytes never pass through a pipe to this process, and what is
 * hashed is exactly what is in the file. Measured on the 1 GiB benchmark
 * database, reading zstd's output through a pipe here cost ~0.25 s of a
 * 3 s backup, because zstd waited on this process's event loop.
 *
 * `written` settles when the writer is gone (its exit checked): after
 * that one more read finds the last bytes. While it runs, write-back is
 * started every FLUSH_EVERY bytes (fdatasync, one at a time, off the
 * main thread), so the disk works while zstd does. Rejects with the
 * writer's failure, without waiting for the rest of the file.
 */
export async function followDigest(fd: number, written: Promise<unknown>, onProgress?: (bytes: number) => void): Promise<Digest> {
  let settled = false
  let failure: { error: unknown } | null = null
  let wake: (() => void) | null = null
  written.then(
    () => {
      settled = true
      wake?.()
    },
    (error: unknown) => {
      settled = true
      failure = { error }
      wake?.()
    },
  )
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(READ_CHUNK)
  let pos = 0
  let flushedAt = 0
  let flushing: Promise<void> | null = null
  try {
    for (;;) {
      // Read after seeing the writer gone: then an empty read means the end.
      const wasSettled = settled
      if (failure) throw (failure as { error: unknown }).error
      const { bytesRead: n } = await readAt(fd, buf, 0, buf.length, pos)
      if (n > 0) {
        hash.update(buf.subarray(0, n))
        pos += n
        onProgress?.(pos)
        if (pos - flushedAt >= FLUSH_EVERY && !flushing) {
          flushedAt = pos
          flushing = datasync(fd).finally(() => (flushing = null))
        }
        continue
      }
      if (wasSettled) break
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      wake = null
    }
  } finally {
    // Never leave a flush running on a descriptor the caller is about to close.
    await (flushing as Promise<void> | null)?.catch(() => {})
  }
  return { sha256: hash.digest('hex'), size: pos }
}
