import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { join } from 'node:path'

/**
 * Private scratch directories (a staged dump, a downloaded artifact) that a
 * SIGKILL or a power cut can leave behind, each as large as a backup. Every
 * one records its owner (host and pid); a later run removes those whose
 * owner is gone, as pgBackRest clears its spool. Only directories of this
 * user, on this host, whose process no longer exists are removed: one in
 * use, another user's, a link, or one without an owner record is left.
 */
const OWNER_FILE = '.owner'

interface Owner {
  host: string
  pid: number
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // exists, another user's
  }
}

/** Removes the abandoned `prefix*` directories under `parent`; what cannot be read or removed is left alone. */
export async function removeAbandoned(parent: string, prefix: string): Promise<string[]> {
  const removed: string[] = []
  const names = await readdir(parent).catch(() => [] as string[])
  for (const name of names) {
    if (!name.startsWith(prefix)) continue
    const dir = join(parent, name)
    const st = await lstat(dir).catch(() => null)
    if (!st?.isDirectory() || st.uid !== process.getuid?.()) continue
    const owner = await readFile(join(dir, OWNER_FILE), 'utf8')
      .then((text) => JSON.parse(text) as Partial<Owner>)
      .catch(() => null)
    if (!owner || owner.host !== hostname() || !Number.isSafeInteger(owner.pid) || owner.pid === process.pid || alive(owner.pid!)) continue
    await rm(dir, { recursive: true, force: true }).then(
      () => removed.push(dir),
      () => {},
    )
  }
  return removed
}

/** A new private (0700) directory `parent/prefixXXXXXX` with its owner recorded, after clearing abandoned ones. */
export async function makeScratchDir(parent: string, prefix: string): Promise<string> {
  await removeAbandoned(parent, prefix)
  const dir = await mkdtemp(join(parent, prefix))
  await writeFile(join(dir, OWNER_FILE), JSON.stringify({ host: hostname(), pid: process.pid } satisfies Owner), { mode: 0o600 })
  return dir
}
