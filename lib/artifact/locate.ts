import { stat } from 'node:fs/promises'
import { basename, join, resolve, sep } from 'node:path'
import { inputError, usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { isPartialName } from './naming.ts'

/**
 * The guide names artifacts relative to BACKUP_BASE; a path (anything
 * with a slash) is accepted too so that an artifact copied elsewhere can
 * be restored without inventing a BACKUP_BASE for it.
 */
export function resolveArtifactPath(arg: string | undefined, backupBase: string | undefined): string {
  if (arg === undefined || arg === '') {
    throw usageError('missing artifact name', 'run: BACKUP_BASE=/path/to/backups restore.sh conductor-backup-YYYYMMDDTHHMMSSZ')
  }
  if (arg.includes('\0') || backupBase?.includes('\0')) throw usageError('the artifact path holds a NUL byte', 'pass the name as listed by ls')
  const isPath = arg.includes('/') || arg.includes(sep)
  let path: string
  if (isPath) {
    path = resolve(arg)
  } else {
    if (!backupBase) {
      throw usageError('BACKUP_BASE is not set', `set BACKUP_BASE to the backup directory, or pass a path such as ./${arg}`)
    }
    if (arg === '.' || arg === '..') throw usageError(`${quoteValue(arg)} is not an artifact name`)
    path = join(resolve(backupBase), arg)
  }
  if (Buffer.byteLength(basename(path)) > 255) {
    throw usageError(`artifact name is too long (${Buffer.byteLength(basename(path))} bytes)`, 'names are at most 255 bytes; artifact names look like conductor-backup-YYYYMMDDTHHMMSSZ')
  }
  if (Buffer.byteLength(path) > 4095) {
    throw usageError(`artifact path is too long (${Buffer.byteLength(path)} bytes)`, 'paths are at most 4095 bytes; use a shorter BACKUP_BASE or path')
  }
  if (isPartialName(basename(path))) {
    throw inputError(`${basename(path)} is an incomplete backup from an interrupted run and cannot be restored`, 'choose a completed artifact')
  }
  return path
}

/** The artifact must be a directory we can read; each way it is not gets its own line and fix. */
export async function checkArtifactDir(path: string, backupBase: string | undefined): Promise<void> {
  let isDir: boolean
  try {
    isDir = (await stat(path)).isDirectory()
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') {
      if (backupBase && !(await stat(backupBase).catch(() => undefined))) {
        throw inputError(`BACKUP_BASE ${quoteValue(backupBase)} does not exist`, 'set BACKUP_BASE to the directory that holds the backups')
      }
      throw inputError(`artifact not found: ${quoteValue(path)}`, `list the available ones with: ls ${backupBase ?? '<backup dir>'}`)
    }
    if (code === 'EACCES') throw inputError(`artifact is not readable: ${quoteValue(path)}`, 'run as a user that can read the backups')
    if (code === 'ENOTDIR') throw inputError(`${quoteValue(path)}: a component of the path is not a directory`, 'check BACKUP_BASE and the name')
    throw fromSystemError(err) ?? err
  }
  if (!isDir) throw inputError(`${quoteValue(path)} is not a backup artifact (not a directory)`, 'pass an artifact directory')
}
