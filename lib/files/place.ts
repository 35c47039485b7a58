import { chmod, lstat, mkdir, open, readdir, rename, rm, rmdir, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { fsyncDir } from '../artifact/durable.ts'
import { runtimeError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { keepAsideNames, stagingPrefix, type RootPlan } from './restore-plan.ts'

export interface Placed {
  destination: string
  /** Where the previous content now is; null when there was none. */
  keptAside: string | null
}

/**
 * Moves one verified root from its staging directory into place: the
 * current content is renamed aside first (kept, never deleted), then the
 * restored tree renamed in. Both are renames within one directory, so
 * each step is atomic; if the second fails the first is undone.
 */
export async function placeRoot(plan: RootPlan): Promise<Placed> {
  const staged = join(plan.staging, basename(plan.member))
  let keptAside: string | null = null
  if (plan.existing !== 'none') {
    try {
      keptAside = await moveAside(plan.destination, plan.keepAsideBase)
    } catch (err) {
      throw runtimeError(
        `cannot move ${quoteValue(plan.destination)} aside to ${quoteValue(plan.keepAside)} (${(err as NodeJS.ErrnoException).code ?? 'error'}); it was left as it was`,
        'check permissions on its parent directory (a mount point cannot be moved: restore with --target), then restore again',
      )
    }
  }
  try {
    await rename(staged, plan.destination)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error'
    // Something took the destination between the check and the move: another restore, or a process.
    const appeared = code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOTDIR' || code === 'EISDIR'
    const why = appeared ? `something appeared at it while the restore ran (${code})` : code
    if (keptAside === null) {
      throw runtimeError(
        `cannot move the restored ${quoteValue(plan.destination)} into place: ${why}; nothing was there before, and nothing there was replaced`,
        appeared ? 'see what is there now (another restore?), move it away, then restore again' : 'check permissions on its parent directory, then restore again',
      )
    }
    const back = await rename(keptAside, plan.destination).then(() => true, () => false)
    throw runtimeError(
      `cannot move the restored ${quoteValue(plan.destination)} into place: ${why}; ${back ? 'the previous content was put back' : `the previous content is kept as ${quoteValue(keptAside)}`}`,
      back ? 'check permissions on its parent directory, then restore again' : `see what is at ${quoteValue(plan.destination)} now, move ${quoteValue(keptAside)} back by hand, then restore again`,
    )
  }
  await rmdir(plan.staging).catch(() => {})
  await fsyncDir(dirname(plan.destination))
  return { destination: plan.destination, keptAside }
}

/**
 * Renames `path` to the first free kept-copy name of `base`: a kept copy
 * is never replaced, not even one another restore made in the same
 * second. Each name is claimed first, atomically (mkdir, or an exclusive
 * create for a file, both fail if it exists), and `path` renamed over the
 * claim: rename(2) replaces an empty directory with a directory and a
 * file with a file.
 */
async function moveAside(path: string, base: string): Promise<string> {
  const isDir = (await lstat(path)).isDirectory()
  let tries = 0
  for (const candidate of keepAsideNames(base)) {
    if (++tries > 1000) break
    try {
      if (isDir) await mkdir(candidate, { mode: 0o700 })
      else await (await open(candidate, 'wx', 0o600)).close()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
      throw err
    }
    try {
      await rename(path, candidate)
    } catch (err) {
      await (isDir ? rmdir(candidate) : unlink(candidate)).catch(() => {})
      throw err
    }
    return candidate
  }
  throw Object.assign(new Error('no free name'), { code: 'EEXIST' })
}

/**
 * Removes staging directories of a restore that did not finish; safe to
 * call on ones that never existed. Never throws, so a cleanup cannot hide
 * the failure that called for it: returns the ones it could not remove.
 * tar restores directories with their recorded modes, and a 0555 one
 * stops rm for a user who is not root: such directories are made
 * writable (only inside the staging directory, links not followed) and
 * the removal tried again.
 */
export async function discardStaging(plans: readonly RootPlan[]): Promise<string[]> {
  const left: string[] = []
  for (const plan of plans) {
    try {
      await rm(plan.staging, { recursive: true, force: true })
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      const removed = (code === 'EACCES' || code === 'EPERM') && (await makeWritable(plan.staging).then(() => rm(plan.staging, { recursive: true, force: true })).then(() => true, () => false))
      if (!removed) left.push(plan.staging)
    }
  }
  return left
}

/** chmod u+rwx on every directory under `dir` (itself included), never through a symlink; names as bytes (they need not be UTF-8). */
async function makeWritable(dir: string | Buffer): Promise<void> {
  const st = await lstat(dir)
  if (!st.isDirectory()) return
  await chmod(dir, (st.mode & 0o7777) | 0o700)
  const base = typeof dir === 'string' ? Buffer.from(dir) : dir
  for (const name of await readdir(dir, { encoding: 'buffer' })) await makeWritable(Buffer.concat([base, Buffer.from('/'), name]))
}

/** Leftover `.NAME.restoring-STAMP` directories beside a destination, from interrupted restores. */
export async function leftoverStaging(plan: RootPlan): Promise<string[]> {
  const prefix = stagingPrefix(plan.destination)
  try {
    return (await readdir(dirname(plan.destination))).filter((n) => n.startsWith(prefix)).map((n) => join(dirname(plan.destination), n))
  } catch {
    return []
  }
}
