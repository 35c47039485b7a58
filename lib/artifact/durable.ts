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

/**
 * Appends to a log-like file (a drill report, its JSONL history), created
 * 0600 if missing. Only a regular file is accepted, checked on the opened
 * descriptor; O_NONBLOCK keeps a FIFO planted at that path from hanging us.
 */
export async function appendSynced(path: string, text: string): Promise<void> {
  const handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600)
  try {
    if (!(await handle.stat()).isFile()) {
      const err = new Error(`${path} is not a regular file`) as NodeJS.ErrnoException
      err.code = 'EISDIR'
      err.path = path
      throw err
    }
    await handle.appendFile(text)
    await handle.sync()
  } finally {
    await handle.close()
  }
}
