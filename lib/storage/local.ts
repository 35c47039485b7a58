import { close, createWriteStream, fsync, openSync } from 'node:fs'
import { promisify } from 'node:util'
import { lstat, mkdir, rm, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { listArtifacts, type ArtifactEntry } from '../artifact/list.ts'
import { exists, fsyncDir, fsyncFile, publishDir, writeFileSynced } from '../artifact/durable.ts'
import { MANIFEST_FILE, MANIFEST_SUM_FILE, partialName } from '../artifact/naming.ts'
import { runtimeError } from '../cli/errors.ts'
import { openRegular } from '../artifact/open.ts'
import { followDigest } from '../pipeline/follow-file.ts'
import type { ArtifactWriter, DirectFile, Store } from './store.ts'

const fsyncFd = promisify(fsync)
const closeFd = promisify(close)

/**
 * Artifacts as directories under one local directory. Work in progress is
 * a hidden `.NAME.partial` directory, renamed to NAME when complete:
 * rename(2) is atomic and refuses to replace a non-empty directory.
 */
export class LocalStore implements Store {
  readonly kind = 'local' as const

  constructor(readonly url: string) {}

  async create(name: string): Promise<ArtifactWriter | null> {
    const partial = join(this.url, partialName(name))
    if (await exists(join(this.url, name))) return null
    try {
      await mkdir(partial, { mode: 0o700 })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null
      throw err
    }
    return new LocalWriter(this.url, name, partial)
  }

  list(): Promise<ArtifactEntry[]> {
    return listArtifacts(this.url)
  }

  async read(name: string, file: string): Promise<Readable> {
    const handle = await openRegular(join(this.url, name, file), file)
    return handle.createReadStream({ highWaterMark: 1024 * 1024 })
  }

  async remove(entry: ArtifactEntry): Promise<void> {
    // Never through a link (one put there since the listing): its target is not this artifact.
    if ((await lstat(entry.path).catch(() => null))?.isSymbolicLink()) {
      throw runtimeError(`${entry.path} is a symbolic link, not an artifact directory; it was not removed`, 'replace the link with the artifact directory itself, or remove the link')
    }
    if (entry.kind !== 'partial') {
      // Manifest first: from this moment the artifact reads as damaged, never as complete.
      await unlink(join(entry.path, MANIFEST_FILE)).catch(ignoreMissing)
      await unlink(join(entry.path, MANIFEST_SUM_FILE)).catch(ignoreMissing)
      await fsyncDir(entry.path).catch(ignoreMissing)
    }
    await rm(entry.path, { recursive: true, force: true })
    await fsyncDir(this.url)
  }
}

function ignoreMissing(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ENOENT') throw err
}

class LocalWriter implements ArtifactWriter {
  private published = false

  constructor(
    private readonly base: string,
    private readonly name: string,
    private readonly partial: string,
  ) {}

  get location(): string {
    return join(this.base, this.name)
  }

  async writeFile(file: string, source: Readable): Promise<void> {
    const path = join(this.partial, file)
    await pipeline(source, createWriteStream(path, { flags: 'wx', mode: 0o600 }))
    await fsyncFile(path)
  }

  directFile(file: string): DirectFile {
    // Read and write: the same descriptor is read back to hash what the child wrote.
    const path = join(this.partial, file)
    const fd = openSync(path, 'wx+', 0o600)
    return {
      fd,
      path,
      finish: async (written, onProgress) => {
        try {
          const digest = await followDigest(fd, written, onProgress)
          await fsyncFd(fd)
          return digest
        } finally {
          await closeFd(fd).catch(() => {})
        }
      },
    }
  }

  async publish(manifestText: string, sumText: string): Promise<void> {
    await writeFileSynced(join(this.partial, MANIFEST_FILE), manifestText)
    await writeFileSynced(join(this.partial, MANIFEST_SUM_FILE), sumText)
    try {
      await publishDir(this.partial, this.location, this.base)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOTEMPTY' || code === 'EEXIST') {
        throw runtimeError(`artifact ${this.name} appeared in ${this.base} while this backup ran`, 'another backup used the same name; run again')
      }
      throw err
    }
    this.published = true
  }

  async discard(): Promise<void> {
    if (this.published) return
    await rm(this.partial, { recursive: true, force: true })
  }
}
