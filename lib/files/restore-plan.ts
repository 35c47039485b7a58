import { createHash } from 'node:crypto'
import { lstat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, relative, sep } from 'node:path'
import type { FilesystemSection } from '../artifact/manifest-tree.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { memberRoot } from './safe-paths.ts'

/** Where one backed-up path goes, and the names used on the way. */
export interface RootPlan {
  /** As backed up: /etc/conductor. */
  root: string
  /** As in the archive: etc/conductor. */
  member: string
  /** Where it is restored: the root itself, or under --target. */
  destination: string
  /** Extracted and verified here first: beside the destination, so the final move is a rename on one file system. */
  staging: string
  /** What the destination held before is kept as `${keepAsideBase}` or, when that is taken, `-2`, `-3`… appended. */
  keepAsideBase: string
  /** The first of those names free when the plan was made: what the plan shows (placeRoot claims it, or the next free one). */
  keepAside: string
  /** What is at the destination now. */
  existing: 'none' | 'directory' | 'file' | 'symlink' | 'other'
  /** The destination is a mount point: it cannot be renamed aside. */
  mountPoint: boolean
}

/** `20240315T120000Z`: the restore's own time, in the names it leaves behind. */
export function restoreStamp(now: Date): string {
  return now.toISOString().slice(0, 19).replace(/[-:]/g, '') + 'Z'
}

/** The longest file name Linux file systems take (NAME_MAX), in bytes. */
const NAME_MAX = 255

/**
 * Pure: `name` cut to at most `bytes` bytes of UTF-8, on a character
 * boundary. The restore's own names (staging, kept copies) add a suffix
 * to a backed-up name that may itself be close to NAME_MAX.
 */
function fitName(name: string, bytes: number): string {
  if (Buffer.byteLength(name) <= bytes) return name
  let out = ''
  let used = 0
  for (const ch of name) {
    const n = Buffer.byteLength(ch)
    if (used + n > bytes) break
    out += ch
    used += n
  }
  return out
}

/**
 * Pure: `name` as it appears inside one of the restore's own names, in at
 * most `bytes` bytes: whole when it fits, else cut and marked with a hash
 * of the whole name (`~` and 8 hex digits), so two long names that share
 * their beginning (two backed-up paths beside each other) stay apart.
 */
export function shortName(name: string, bytes: number): string {
  if (Buffer.byteLength(name) <= bytes) return name
  return `${fitName(name, bytes - 9)}~${createHash('sha256').update(name).digest('hex').slice(0, 8)}`
}

/** `.NAME.restoring-`: how a destination's staging directories begin (NAME shortened so the whole name fits NAME_MAX). */
export function stagingPrefix(destination: string): string {
  // The rest: STAMP (16) '-' NONCE (8).
  return `.${shortName(basename(destination), NAME_MAX - '..restoring-'.length - 25)}.restoring-`
}

/** `NAME.pre-restore-STAMP` beside the destination, NAME shortened so that it, and a `-NNN` after it, fit NAME_MAX. */
function keepAsideBaseOf(destination: string, stamp: string): string {
  const suffix = `.pre-restore-${stamp}`
  return join(dirname(destination), shortName(basename(destination), NAME_MAX - suffix.length - 5) + suffix)
}

/**
 * Pure: the names for each root. `nonce` (random, per run) makes the
 * staging directory this run's own: two restores started in the same
 * second must never extract into, or clean up, each other's.
 */
export function planRoots(section: FilesystemSection, target: string | undefined, now: Date, nonce: string): Omit<RootPlan, 'existing' | 'mountPoint' | 'keepAside'>[] {
  const stamp = restoreStamp(now)
  return section.roots.map((root) => {
    const member = memberRoot(root)
    const destination = target === undefined ? root : join(target, member)
    return {
      root,
      member,
      destination,
      staging: join(dirname(destination), `${stagingPrefix(destination)}${stamp}-${nonce}`),
      keepAsideBase: keepAsideBaseOf(destination, stamp),
    }
  })
}

/**
 * The first directory between `target` and `destination` (both excluded)
 * that is a symlink, or null. Under --target every such component comes
 * from the archive's paths, and one that is a link (a container's
 * var/run -> /run, or one planted there) would carry the restore out of
 * the directory the operator chose. Stops at the first that is missing:
 * the restore creates the rest as real directories.
 */
export async function linkUnderTarget(target: string, destination: string): Promise<string | null> {
  const rel = relative(target, dirname(destination))
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) return null
  let path = target
  for (const part of rel.split(sep)) {
    path = join(path, part)
    let st
    try {
      st = await lstat(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT' || code === 'ENOTDIR') return null
      throw fromSystemError(err) ?? err
    }
    if (st.isSymbolicLink()) return path
  }
  return null
}

async function inspect(path: string): Promise<Pick<RootPlan, 'existing' | 'mountPoint'>> {
  let st
  try {
    st = await lstat(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'ENOENT') return { existing: 'none', mountPoint: false }
    throw fromSystemError(err) ?? err
  }
  if (st.isSymbolicLink()) return { existing: 'symlink', mountPoint: false }
  if (st.isFile()) return { existing: 'file', mountPoint: false }
  if (!st.isDirectory()) return { existing: 'other', mountPoint: false }
  const parent = await lstat(dirname(path)).catch(() => null)
  return { existing: 'directory', mountPoint: parent !== null && parent.dev !== st.dev }
}

export async function inspectRoots(plans: Omit<RootPlan, 'existing' | 'mountPoint' | 'keepAside'>[]): Promise<RootPlan[]> {
  const out: RootPlan[] = []
  for (const plan of plans) {
    const found = await inspect(plan.destination)
    const keepAside = found.existing === 'none' ? plan.keepAsideBase : await firstFree(plan.keepAsideBase)
    out.push({ ...plan, keepAside, ...found })
  }
  return out
}

/** The kept-copy names in the order they are tried: `base`, `base-2`, `base-3`… */
export function* keepAsideNames(base: string): Generator<string> {
  yield base
  for (let n = 2; ; n++) yield `${base}-${n}`
}

async function firstFree(base: string): Promise<string> {
  for (const name of keepAsideNames(base)) if (!(await lstat(name).then(() => true, () => false))) return name
  throw new Error('unreachable')
}
