import { constants } from 'node:fs'
import { open, rename, stat } from 'node:fs/promises'

/** fsync a directory so that entries created or renamed in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY)
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** Small files only (manifests): written, flushed, then visible. */
export async function writeFileSynced(path: string, data: string): Promise<void> {
  const handle = await open(path, 'wx', 0o600)
  try {
    await handle.writeFile(data)
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Publishes a finished directory under its final name. rename(2) is
 * atomic, and it refuses to replace a non-empty directory, so a finished
 * artifact can never be overwritten by a later run.
 */
export async function publishDir(from: string, to: string, parent: string): Promise<void> {
  await fsyncDir(from)
  await rename(from, to)
  await fsyncDir(parent)
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
    throw err
  }
}
