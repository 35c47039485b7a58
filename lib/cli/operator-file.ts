import { accessSync, constants, statSync } from 'node:fs'
import { readSmall } from '../artifact/open.ts'
import { inputError, type DrError } from './errors.ts'
import { quoteValue } from './escape.ts'

/**
 * Why a file the operator named (a --check-sql file, a recipients file,
 * an age identity) cannot be used, or undefined if it can. Worded as the
 * operator's to fix: readSmall's own wording blames an artifact.
 */
export function operatorFileProblem(path: string, limit: number): string | undefined {
  if (path.includes('\0')) return 'contains a NUL byte'
  let st
  try {
    st = statSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return 'does not exist'
    if (code === 'ENOTDIR') return 'does not exist (a component of the path is not a directory)'
    if (code === 'EACCES' || code === 'EPERM') return 'is not accessible (permission denied)'
    if (code === 'ELOOP') return 'is a symbolic link loop'
    return `cannot be examined (${code ?? 'unknown error'})`
  }
  if (st.isDirectory()) return 'is a directory, not a file'
  if (!st.isFile()) return 'is not a regular file (a pipe, socket or device?)'
  if (st.size > limit) return `is larger than ${limit} bytes`
  try {
    accessSync(path, constants.R_OK)
  } catch {
    return 'is not readable (permission denied)'
  }
  return undefined
}

export interface OperatorFile {
  /** How messages name it: `--check-sql file`, `BACKUP_AGE_RECIPIENTS_FILE`. */
  what: string
  fix: string
  limit: number
}

export function operatorFileError(path: string, file: OperatorFile, why: string): DrError {
  return inputError(`${file.what} ${quoteValue(path)} ${why}`, file.fix)
}

export function validateOperatorFile(path: string, file: OperatorFile): void {
  const why = operatorFileProblem(path, file.limit)
  if (why) throw operatorFileError(path, file, why)
}

/** The file's bytes, read with readSmall's guarantees (no FIFO, no device, bounded). */
export async function readOperatorFile(path: string, file: OperatorFile): Promise<Buffer> {
  try {
    return await readSmall(path, file.what, file.limit)
  } catch {
    throw operatorFileError(path, file, operatorFileProblem(path, file.limit) ?? 'cannot be read')
  }
}
