import { accessSync, constants, statSync } from 'node:fs'
import { inputError, type DrError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { readSmall } from '../artifact/open.ts'

/** A check file is a handful of queries; anything bigger is the wrong file. */
export const CHECK_FILE_LIMIT = 1024 * 1024

const FIX = 'check the --check-sql path; it must be a readable regular file'

/**
 * Why `path` cannot serve as a --check-sql file, or undefined if it can.
 * Shared by the up-front validation and by the read after the restore,
 * so that both say the same thing about the operator's file (readSmall's
 * own wording blames an artifact).
 */
function problem(path: string): string | undefined {
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
  if (st.size > CHECK_FILE_LIMIT) return `is larger than ${CHECK_FILE_LIMIT} bytes`
  try {
    accessSync(path, constants.R_OK)
  } catch {
    return 'is not readable (permission denied)'
  }
  return undefined
}

function checkFileError(path: string, why: string): DrError {
  return inputError(`--check-sql file ${quoteValue(path)} ${why}`, FIX)
}

export function validateCheckFile(path: string): void {
  const why = problem(path)
  if (why) throw checkFileError(path, why)
}

/** The file's text, read with readSmall's guarantees (no FIFO, no device, bounded), errors in the operator's terms. */
export async function readCheckFile(path: string): Promise<string> {
  let buf: Buffer
  try {
    buf = await readSmall(path, 'check file', CHECK_FILE_LIMIT)
  } catch {
    throw checkFileError(path, problem(path) ?? 'cannot be read')
  }
  return buf.toString('utf8')
}
