import { lstat, realpath } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { inputError, usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { nestedRoot, within } from './safe-paths.ts'

/**
 * The application paths to back up: every --path, then every entry of
 * BACKUP_PATHS (colon-separated, like PATH), made absolute and normalised.
 * Pure: the file system is consulted by checkRoots.
 */
export function parseRoots(flagPaths: readonly string[], envPaths: string | undefined, cwd: string): string[] {
  const given = [...flagPaths.map((p) => ({ p, from: '--path' })), ...(envPaths ?? '').split(':').filter((p) => p !== '').map((p) => ({ p, from: 'BACKUP_PATHS' }))]
  const roots: string[] = []
  for (const { p, from } of given) {
    if (p === '') throw usageError(`${from} is empty`, 'give a file or directory to back up')
    if (p.includes('\0')) throw usageError(`${from} holds a NUL byte`, 'give a plain path')
    const abs = resolve(cwd, p)
    if (abs === '/') throw usageError(`${from} ${quoteValue(p)} is the whole file system`, 'name the application\'s own directories (configuration, uploads, keys)')
    if (roots.includes(abs)) continue
    roots.push(abs)
  }
  const nested = nestedRoot(roots)
  if (nested) throw usageError(`${quoteValue(nested.inner)} is inside ${quoteValue(nested.outer)}, which is already backed up`, `leave out ${quoteValue(nested.inner)}`)
  return roots
}

/** Each root must exist and be a directory or a regular file, not a symlink: the dry run and the real run check alike. */
export async function checkRoots(roots: readonly string[]): Promise<void> {
  for (const root of roots) {
    let st
    try {
      st = await lstat(root)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') throw inputError(`${quoteValue(root)} does not exist`, 'fix --path or BACKUP_PATHS')
      if (code === 'EACCES' || code === 'EPERM') throw inputError(`${quoteValue(root)} is not accessible (permission denied)`, 'run as a user that can read it')
      throw fromSystemError(err) ?? err
    }
    if (st.isSymbolicLink()) {
      throw inputError(`${quoteValue(root)} is a symlink; backing it up would save the link, not what it points to`, 'give the path it points to (realpath PATH)')
    }
    if (!st.isDirectory() && !st.isFile()) throw inputError(`${quoteValue(root)} is not a directory or a regular file`, 'back up directories and regular files')
  }
}

/** The physical path of `path`, through symlinks in its existing part; the missing rest appended as given. */
async function physical(path: string): Promise<string> {
  try {
    return await realpath(path)
  } catch {
    const parent = dirname(path)
    return parent === path ? path : join(await physical(parent), basename(path))
  }
}

/**
 * A backup written into a backed-up path (or the path itself) would
 * archive its own partial artifact and every earlier backup, growing each
 * night. Compared physically, so a symlinked parent does not hide it. An
 * output that merely holds a backed-up path (--output /srv --path
 * /srv/app) is fine: artifacts land beside the path, not in it.
 */
export async function checkOutsideRoots(dir: string, what: string, roots: readonly string[]): Promise<void> {
  const out = await physical(dir)
  for (const root of roots) {
    if (within(out, await physical(root))) {
      throw usageError(`${what} ${quoteValue(dir)} is inside ${quoteValue(root)}, which is backed up: each backup would hold the ones before it`, 'write the backups outside the backed-up paths')
    }
  }
}
