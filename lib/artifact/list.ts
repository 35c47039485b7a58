import { lstat, readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { DrError, inputError, usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { ARTIFACT_PREFIX, artifactName, isArtifactName, isPartialName } from './naming.ts'
import type { Manifest } from './manifest.ts'
import { readTrustedManifest } from './read-manifest.ts'


export interface ArtifactEntry {
  /** As found on disk; may hold any byte a file name can, so it is escaped on output, never put in a command. */
  name: string
  path: string
  kind: 'complete' | 'partial' | 'damaged'
  /** The RPO point: the manifest's createdAt when it could be trusted, otherwise the name's stamp. */
  createdAt: Date | null
  completedAt: Date | null
  /** Sum of the sizes the manifest lists; null when there is no trusted manifest. */
  bytes: number | null
  database: string | null
  /** Why a damaged artifact is damaged, as one line; null otherwise. */
  problem: string | null
  /** The directory's mtime: for a partial, when the run last wrote to it (still running, or abandoned?). */
  modifiedAt: Date | null
}

const STAMP_RE = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/

/**
 * The UTC time in an artifact name, or in its hidden `.NAME.partial` form.
 * Null for anything else, including impossible dates like month 13: the
 * stamp must read back to exactly the same name.
 */
export function parseArtifactStamp(name: string): Date | null {
  const bare = isPartialName(name) ? name.slice(1, -'.partial'.length) : name
  if (!isArtifactName(bare)) return null
  const m = STAMP_RE.exec(bare.slice(ARTIFACT_PREFIX.length))
  if (!m) return null
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number]
  const when = new Date(Date.UTC(y, mo - 1, d, h, mi, s))
  return artifactName(when) === bare ? when : null
}

/** `.conductor-backup-….partial`; isPartialName alone would also match other tools' hidden work. */
function isArtifactPartial(name: string): boolean {
  return isPartialName(name) && name.startsWith(`.${ARTIFACT_PREFIX}`)
}


/** One line for whatever went wrong with one artifact; a listing never stops for it. */
function describeProblem(err: unknown): string {
  if (err instanceof DrError) return err.message
  return fromSystemError(err)?.message ?? `cannot be read: ${(err as Error)?.message ?? String(err)}`
}

/**
 * Directories only; null for anything else, or for a name that vanished
 * meanwhile. A symbolic link named like an artifact is damaged, never
 * complete: prune would otherwise delete the manifest of whatever it
 * points at (the newest backup, or one archived elsewhere).
 */
async function directoryMtime(path: string): Promise<Date | null | Error> {
  try {
    if ((await lstat(path)).isSymbolicLink()) {
      return inputError('is a symbolic link, not an artifact directory', 'replace the link with the artifact directory itself, or remove the link')
    }
    const st = await stat(path)
    return st.isDirectory() ? st.mtime : null
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    // Gone (a backup published or discarded its partial) or a dangling link: not an artifact.
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return null
    return err as Error
  }
}

/**
 * When a run last wrote into a partial: the newest mtime of the directory
 * and the files in it. A dump streaming into one large file for hours
 * never touches the directory's own mtime, and must not look abandoned.
 */
async function newestWrite(dir: string, dirMtime: Date): Promise<Date> {
  let newest = dirMtime
  try {
    for (const name of await readdir(dir)) {
      const st = await lstat(join(dir, name)).catch(() => null)
      if (st && st.mtime > newest) newest = st.mtime
    }
  } catch {
    // Unreadable: the directory's own time is all there is.
  }
  return newest
}

async function readEntry(base: string, name: string): Promise<ArtifactEntry | null> {
  const partial = isArtifactPartial(name)
  if (!partial && !isArtifactName(name)) return null
  const path = join(base, name)
  const stamp = parseArtifactStamp(name)
  const blank = { name, path, createdAt: stamp, completedAt: null, bytes: null, database: null, problem: null, modifiedAt: null }
  const mtime = await directoryMtime(path)
  if (mtime === null) return null
  if (mtime instanceof Error) {
    // An unreadable partial is still a partial; a link named like one is no run's work (DrError: see directoryMtime).
    return partial && !(mtime instanceof DrError) ? { ...blank, kind: 'partial' } : { ...blank, kind: 'damaged', problem: describeProblem(mtime) }
  }
  if (partial) return { ...blank, kind: 'partial', modifiedAt: await newestWrite(path, mtime) }
  try {
    return { ...blank, ...completeEntry(await readTrustedManifest(path)), modifiedAt: mtime }
  } catch (err) {
    return { ...blank, kind: 'damaged', problem: describeProblem(err), modifiedAt: mtime }
  }
}

/** What a trusted manifest says of its artifact in a listing, whatever store it came from. */
export function completeEntry(manifest: Manifest): Pick<ArtifactEntry, 'kind' | 'createdAt' | 'completedAt' | 'bytes' | 'database'> {
  return {
    kind: 'complete',
    createdAt: new Date(manifest.createdAt),
    completedAt: new Date(manifest.completedAt),
    bytes: manifest.files.reduce((sum, f) => sum + f.size, 0),
    database: manifest.postgres.status === 'dumped' ? manifest.postgres.database : null,
  }
}

/** Newest first; entries without a time (a partial with a garbled stamp) last; ties by name, also newest first. */
export function compareNewestFirst(a: ArtifactEntry, b: ArtifactEntry): number {
  const ta = a.createdAt?.getTime() ?? -Infinity
  const tb = b.createdAt?.getTime() ?? -Infinity
  if (ta !== tb) return tb - ta
  return a.name < b.name ? 1 : a.name > b.name ? -1 : 0
}

/** The backup directory itself must be readable; each way it is not is the operator's to fix. */
function baseError(base: string, err: unknown): DrError {
  const code = (err as NodeJS.ErrnoException)?.code
  const shown = quoteValue(base)
  const fix = 'set BACKUP_BASE (or pass the directory) to where backup.sh --output writes'
  if (code === 'ENOENT') return inputError(`backup directory ${shown} does not exist`, fix)
  if (code === 'ENOTDIR') return inputError(`backup directory ${shown} is not a directory`, fix)
  if (code === 'EACCES' || code === 'EPERM') return inputError(`backup directory ${shown} is not readable`, 'run as a user that can read the backups')
  return fromSystemError(err) ?? inputError(`backup directory ${shown} cannot be listed`, fix)
}

/**
 * Every artifact, partial and damaged artifact directly under `base`,
 * newest first. Anything else there (other files, other directories,
 * symlinks that do not lead to a directory) is ignored. One bad artifact
 * becomes a 'damaged' entry; only an unusable `base` throws.
 */
export async function listArtifacts(base: string): Promise<ArtifactEntry[]> {
  if (base.includes('\0')) throw usageError('the backup directory holds a NUL byte', 'pass the directory as a plain path')
  let names: string[]
  try {
    names = await readdir(base)
  } catch (err) {
    throw baseError(base, err)
  }
  const entries: ArtifactEntry[] = []
  // One at a time: two small reads each, and a directory of thousands of
  // artifacts must not run out of file descriptors.
  for (const name of names) {
    const entry = await readEntry(base, name)
    if (entry) entries.push(entry)
  }
  return entries.sort(compareNewestFirst)
}
