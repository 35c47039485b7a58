import { constants } from 'node:fs'
import { access, lstat, mkdir, rmdir, stat } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { inputError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { fsyncDir } from './durable.ts'

/**
 * Where a backup will be written: the deepest directory that exists and
 * the ones to create below it, outermost first. The dry run prints this
 * plan and the real run carries out exactly this plan, so a dry run that
 * says "ok" is a promise about the real run.
 */
export interface DestinationPlan {
  path: string
  existing: string
  create: string[]
}

const errorFor = (err: unknown) => fromSystemError(err) ?? err

export async function planDestination(output: string, what = '--output'): Promise<DestinationPlan> {
  const path = resolve(output)
  const create: string[] = []
  let probe = path
  for (;;) {
    let st
    try {
      st = await lstat(probe)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw errorFor(err)
      create.unshift(probe)
      const parent = dirname(probe)
      if (parent === probe) throw inputError(`${what} ${quoteValue(output)} has no existing parent`, 'choose a path on a mounted file system')
      probe = parent
      continue
    }
    if (st.isSymbolicLink()) {
      try {
        st = await stat(probe)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') {
          throw inputError(`${what} ${quoteValue(output)} goes through a dangling symlink (${quoteValue(probe)})`, `point ${what} at a real directory or fix the link`)
        }
        throw errorFor(err)
      }
    }
    if (!st.isDirectory()) {
      throw inputError(
        create.length === 0
          ? `${what} ${quoteValue(output)} is not a directory`
          : `cannot create ${what} ${quoteValue(output)}: ${quoteValue(probe)} is not a directory`,
        `choose a directory for ${what}`,
      )
    }
    break
  }
  try {
    await access(probe, constants.W_OK | constants.X_OK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EROFS') {
      throw inputError(`${what} ${quoteValue(output)} is on a read-only file system`, 'choose a writable destination')
    }
    throw inputError(`${what} ${quoteValue(output)} is not writable (${quoteValue(probe)})`, 'choose a writable directory or fix its permissions')
  }
  return { path, existing: probe, create }
}

/** A directory we will write into later (staging, reports): checked up front so a long run does not fail at its end. */
export async function checkWritableDir(dir: string, what: string): Promise<void> {
  let st
  try {
    st = await stat(dir)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') throw inputError(`${what} ${quoteValue(dir)} does not exist`, 'create it or point it elsewhere')
    throw errorFor(err)
  }
  if (!st.isDirectory()) throw inputError(`${what} ${quoteValue(dir)} is not a directory`, 'point it at a directory')
  try {
    await access(dir, constants.W_OK | constants.X_OK)
  } catch {
    throw inputError(`${what} ${quoteValue(dir)} is not writable`, 'choose a writable directory')
  }
}

/**
 * Creates the planned directories, private to the operator (0700), and
 * makes each new entry durable: a destination created just now must
 * survive a crash along with what goes in it. Each one made is added to
 * `created` at once, so a failure part-way can undo them (removeCreated).
 */
export async function createDestination(plan: DestinationPlan, created: string[] = []): Promise<string[]> {
  for (const dir of plan.create) {
    try {
      await mkdir(dir, { mode: 0o700 })
      created.push(dir)
    } catch (err) {
      // Created meanwhile by someone else: fine if it is a directory now.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !(await stat(dir)).isDirectory()) throw errorFor(err)
    }
    await fsyncDir(dirname(dir))
  }
  return created
}

/**
 * Undoes createDestination after a failed run: the directories it made,
 * deepest first, each only while still empty (anything put there since
 * is someone's and stays, with the directories above it).
 */
export async function removeCreated(created: readonly string[]): Promise<void> {
  for (const dir of [...created].reverse()) {
    try {
      await rmdir(dir)
    } catch (err) {
      // Gone already (someone removed it): the ones above may still be empty and ours.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return
    }
  }
}

/** A file that will be appended to at the end of a long run (a drill report): its directory must be writable and the file, if present, regular. */
export async function checkAppendable(path: string, what: string): Promise<void> {
  await checkWritableDir(dirname(resolve(path)), `the directory of ${what}`)
  let st
  try {
    st = await stat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw errorFor(err)
  }
  if (!st.isFile()) throw inputError(`${what} ${quoteValue(path)} is not a regular file`, 'point it at a file (it is created if missing)')
}
