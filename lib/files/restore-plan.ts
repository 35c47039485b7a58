import { lstat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
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
  /** What the destination held before, kept under this name (or, when it is taken by then, this name plus -2, -3…). */
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

/**
 * Pure: the names for each root. `nonce` (random, per run) makes the
 * staging directory this run's own: two restores started in the same
 * second must never extract into, or clean up, each other's.
 */
export function planRoots(section: FilesystemSection, target: string | undefined, now: Date, nonce: string): Omit<RootPlan, 'existing' | 'mountPoint'>[] {
  const stamp = restoreStamp(now)
  return section.roots.map((root) => {
    const member = memberRoot(root)
    const destination = target === undefined ? root : join(target, member)
    return {
      root,
      member,
      destination,
      staging: join(dirname(destination), `.${basename(destination)}.restoring-${stamp}-${nonce}`),
      keepAside: `${destination}.pre-restore-${stamp}`,
    }
  })
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

export async function inspectRoots(plans: Omit<RootPlan, 'existing' | 'mountPoint'>[]): Promise<RootPlan[]> {
  const out: RootPlan[] = []
  for (const plan of plans) {
    const found = await inspect(plan.destination)
    // The name the plan (and a dry run) shows: the first one still free. placeRoot claims it, or the next.
    const keepAside = found.existing === 'none' ? plan.keepAside : await freeName(plan.keepAside)
    out.push({ ...plan, keepAside, ...found })
  }
  return out
}

/** `name`, or `name-2`, `name-3`…: the first that nothing has. */
export async function freeName(name: string, from = 1): Promise<string> {
  for (let n = from; ; n++) {
    const candidate = n === 1 ? name : `${name}-${n}`
    if (!(await lstat(candidate).then(() => true, () => false))) return candidate
  }
}
