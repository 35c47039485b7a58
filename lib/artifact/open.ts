import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { DrError, inputError, verificationError } from '../cli/errors.ts'
import { fromSystemError } from '../cli/system-errors.ts'

/** How a caller words the ways a file can fail to open: the checks are the same, the blame is the caller's. */
export interface OpenFailures {
  notRegular(kind: string): DrError
  /** Any error from open(2) or fstat(2). */
  other(err: unknown): DrError
}

/**
 * Opens a file for reading, refusing anything but a regular file.
 * O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
 * writer, and the type is checked with fstat on the opened descriptor, so
 * a file swapped in after a check cannot slip through. Every later step
 * reads through this handle, never by path again.
 */
export async function openRegularWith(path: string, failures: OpenFailures): Promise<FileHandle> {
  let handle: FileHandle
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (err) {
    throw failures.other(err)
  }
  try {
    const st = await handle.stat()
    if (!st.isFile()) throw failures.notRegular(kindOf(st))
    return handle
  } catch (err) {
    await handle.close()
    throw err instanceof DrError ? err : failures.other(err)
  }
}

/** A file inside an artifact: when it will not open, the artifact is at fault, not the operator's command. */
export function openRegular(path: string, what: string): Promise<FileHandle> {
  return openRegularWith(path, {
    notRegular: (kind) => verificationError(`${what} is not a regular file (${kind})`, 'the artifact is damaged or tampered with; use another backup'),
    other: (err) => artifactFileError(err, what),
  })
}

function kindOf(st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a named pipe'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  return 'not a file'
}

function artifactFileError(err: unknown, what: string): DrError {
  const code = (err as NodeJS.ErrnoException)?.code
  if (code === 'ENOENT') return verificationError(`${what} is missing from the artifact`, 'the artifact is incomplete or damaged; use another backup')
  if (code === 'EACCES' || code === 'EPERM') return inputError(`${what} is not readable`, 'run as a user that can read the backups')
  if (code === 'ELOOP' || code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENXIO' || code === 'ENAMETOOLONG') {
    return verificationError(`${what} cannot be opened as a file (${code})`, 'the artifact is damaged or tampered with; use another backup')
  }
  return fromSystemError(err) ?? verificationError(`${what} cannot be read`, 'use another backup')
}

/**
 * Reads a small file (manifest, checksum line) whole, but never more than
 * `limit` bytes: a manifest replaced by a link to /dev/zero or a huge file
 * must fail fast, not fill memory.
 */
export async function readSmall(path: string, what: string, limit: number): Promise<Buffer> {
  const handle = await openRegular(path, what)
  try {
    const buf = Buffer.alloc(limit + 1)
    let filled = 0
    while (filled < buf.length) {
      const { bytesRead } = await handle.read(buf, filled, buf.length - filled, filled)
      if (bytesRead === 0) break
      filled += bytesRead
    }
    if (filled > limit) {
      throw verificationError(`${what} is larger than ${limit} bytes`, 'the artifact is damaged or not a Conductor backup; use another backup')
    }
    return buf.subarray(0, filled)
  } catch (err) {
    throw err instanceof DrError ? err : artifactFileError(err, what)
  } finally {
    await handle.close()
  }
}
