import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { DrError, inputError, verificationError } from '../cli/errors.ts'
import { fromSystemError } from '../cli/system-errors.ts'

/**
 * Opens a file of an artifact for reading, refusing anything but a
 * regular file. O_NONBLOCK makes opening a FIFO return at once instead of
 * waiting for a writer, and the type is checked with fstat on the opened
 * descriptor, so a file swapped in after a check cannot slip through.
 * Every later step reads through this handle, never by path again.
 */
export async function openRegular(path: string, what: string): Promise<FileHandle> {
  let handle: FileHandle
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (err) {
    throw artifactFileError(err, what)
  }
  try {
    const st = await handle.stat()
    if (!st.isFile()) {
      throw verificationError(`${what} is not a regular file (${kindOf(st)})`, 'the artifact is damaged or tampered with; use another backup')
    }
    return handle
  } catch (err) {
    await handle.close()
    throw err instanceof DrError ? err : artifactFileError(err, what)
  }
}

function kindOf(st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isDirectory()) return 'a directory'
  if (st.isFIFO()) return 'a named pipe'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  return 'not a file'
}

/** Errors opening a file that belongs inside an artifact: the artifact is at fault, not the operator's command. */
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
