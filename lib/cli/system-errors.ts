import { DrError, inputError, runtimeError, usageError } from './errors.ts'
import { quoteValue } from './escape.ts'
import { constants } from 'node:os'

/**
 * Errors from the OS that an operator or a damaged disk can cause, each
 * turned into one line with a fix. Anything with an errno code lands
 * here rather than as "internal error": a bug is code we wrote, not a
 * path the kernel refused.
 */
/** The same conditions in the words of a child that wrote a file itself (zstd, age quote strerror). */
const TOOL_WORDS: [RegExp, string][] = [
  [/No space left on device/i, 'ENOSPC'],
  [/Disk quota exceeded/i, 'EDQUOT'],
  [/File too large/i, 'EFBIG'],
  // The disk or the mount failing under a write that had begun (glibc's words; age, in Go, writes them in lower case).
  [/Input\/output error/i, 'EIO'],
  [/Read-only file system/i, 'EROFS'],
  [/Stale (NFS )?file handle/i, 'ESTALE'],
]

/** Pure: the errno a child's failure to write a file amounts to, from its words or its death by SIGXFSZ (a file-size limit). */
export function toolWriteErrno(stderr: string, exit: number): string | undefined {
  return exit === 128 + constants.signals.SIGXFSZ ? 'EFBIG' : TOOL_WORDS.find(([re]) => re.test(stderr))?.[1]
}

/** A child process that failed writing `path` for one of the reasons above, as our own one line; or undefined. */
export function fromToolWriteFailure(stderr: string, exit: number, path: string): DrError | undefined {
  const code = toolWriteErrno(stderr, exit)
  return code ? fromSystemError(Object.assign(new Error(code), { code, path })) : undefined
}

export function fromSystemError(err: unknown): DrError | undefined {
  const e = err as NodeJS.ErrnoException
  if (!e || typeof e.code !== 'string' || e.code.startsWith('ERR_')) return undefined
  const where = e.path ? ` (${quoteValue(e.path)})` : ''
  switch (e.code) {
    case 'ENOSPC':
      return runtimeError(`no space left on device${where}`, 'free space or choose another destination')
    case 'EDQUOT':
      return runtimeError(`disk quota exceeded${where}`, 'free space or choose another destination')
    case 'EFBIG':
      return runtimeError(`file too large for this file system${where}`, 'choose a destination on a file system without a small file-size limit')
    case 'EACCES':
    case 'EPERM':
      return inputError(`permission denied${where}`, 'run as a user that may read and write it')
    case 'EROFS':
      return inputError(`read-only file system${where}`, 'choose a writable destination')
    case 'ENOENT':
      return inputError(`no such file or directory${where}`, 'check the path')
    case 'ENOTDIR':
      return inputError(`a component of the path is not a directory${where}`, 'check the path')
    case 'EISDIR':
      return inputError(`is a directory where a file was expected${where}`, 'check the path')
    case 'ENAMETOOLONG':
      return usageError(`a file name or path is too long${where}`, 'use names under 255 bytes and paths under 4096 bytes')
    case 'ELOOP':
      return inputError(`too many levels of symbolic links${where}`, 'a symlink points to itself or in a circle; fix or remove it')
    case 'ENXIO':
    case 'ENODEV':
      return inputError(`not a usable file (a device or socket?)${where}`, 'point it at a regular file or directory')
    case 'EEXIST':
    case 'ENOTEMPTY':
      return runtimeError(`already exists${where}`, 'another run may be using the same name; run again')
    case 'EMFILE':
    case 'ENFILE':
      return runtimeError('too many open files', 'raise the open-file limit (ulimit -n) and run again')
    case 'EIO':
      return runtimeError(`I/O error${where}`, 'check the disk; do not trust this destination')
    case 'ESTALE':
      return runtimeError(`stale network file handle${where}`, 'remount the network file system and run again')
    case 'EXDEV':
      return runtimeError(`cannot rename across file systems${where}`, 'keep the destination on one file system')
    default:
      return runtimeError(`system error ${e.code}${where}`, 'check the path and the disk, then run again')
  }
}
