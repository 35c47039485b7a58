import { lstat, mkdir, readdir, rename, rm, rmdir } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { fsyncDir } from '../artifact/durable.ts'
import { runtimeError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import type { RootPlan } from './restore-plan.ts'

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
      keptAside = await moveAside(plan.destination, plan.keepAside)
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
    if (keptAside) await rename(keptAside, plan.destination).catch(() => {})
    throw runtimeError(`cannot move the restored ${quoteValue(plan.destination)} into place (${(err as NodeJS.ErrnoException).code ?? 'error'}); the previous content was put back`, 'check permissions on its parent directory')
  }
  await rmdir(plan.staging).catch(() => {})
  await fsyncDir(dirname(plan.destination))
  return { destination: plan.destination, keptAside }
}

/**
 * Renames `path` to `name`, or to `name-2`, `name-3`… when that is taken:
 * a kept copy is never replaced, not even one an earlier restore made in
 * the same second. The name is claimed with an empty directory first
 * (mkdir fails if it exists) and `path` renamed over it, which rename(2)
 * allows only onto an empty directory; a file or symlink, which cannot
 * replace a directory, is renamed only after checking the name is free.
 */
async function moveAside(path: string, name: string): Promise<string> {
  const isDir = (await lstat(path)).isDirectory()
  for (let n = 1; n <= 1000; n++) {
    const candidate = n === 1 ? name : `${name}-${n}`
    if (isDir) {
      try {
        await mkdir(candidate, { mode: 0o700 })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue
        throw err
      }
      try {
        await rename(path, candidate)
      } catch (err) {
        await rmdir(candidate).catch(() => {})
        throw err
      }
      return candidate
    }
    if (await lstat(candidate).then(() => true, () => false)) continue
    await rename(path, candidate)
    return candidate
  }
  throw Object.assign(new Error('no free name'), { code: 'EEXIST' })
}

/** Removes staging directories of a restore that did not finish; safe to call on ones that never existed. */
export async function discardStaging(plans: readonly RootPlan[]): Promise<void> {
  for (const plan of plans) await rm(plan.staging, { recursive: true, force: true })
}

/** Leftover `.NAME.restoring-STAMP` directories beside a destination, from interrupted restores. */
export async function leftoverStaging(plan: RootPlan): Promise<string[]> {
  const prefix = `.${basename(plan.destination)}.restoring-`
  try {
    return (await readdir(dirname(plan.destination))).filter((n) => n.startsWith(prefix)).map((n) => join(dirname(plan.destination), n))
  } catch {
    return []
  }
}
