import { readOperatorFile, validateOperatorFile, type OperatorFile } from '../cli/operator-file.ts'

/** A check file is a handful of queries; anything bigger is the wrong file. */
export const CHECK_FILE_LIMIT = 1024 * 1024

const CHECK_FILE: OperatorFile = {
  what: '--check-sql file',
  fix: 'check the --check-sql path; it must be a readable regular file',
  limit: CHECK_FILE_LIMIT,
}

export function validateCheckFile(path: string): void {
  validateOperatorFile(path, CHECK_FILE)
}

export async function readCheckFile(path: string): Promise<string> {
  return (await readOperatorFile(path, CHECK_FILE)).toString('utf8')
}
