import { existsSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { makeScratchDir } from '../artifact/scratch-dir.ts'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { checkWritableDir } from '../artifact/destination.ts'
import { checkArtifactDir, resolveArtifactPath } from '../artifact/locate.ts'
import type { KnownDigest } from '../artifact/verify.ts'
import { isArtifactName, isPartialName } from '../artifact/naming.ts'
import { inputError, runtimeError, usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import type { Reporter } from '../cli/report.ts'
import { onInterrupt } from '../cli/signals.ts'
import { parseLocation } from '../storage/location.ts'
import { openStore } from '../storage/open.ts'
import type { DownloadedFile, S3Store } from '../storage/s3.ts'
import type { Store } from '../storage/store.ts'

/** The store BACKUP_BASE (or a positional directory) names: a local directory or an s3:// bucket. */
export function storeAt(base: string, what: string, env: NodeJS.ProcessEnv): Promise<Store> {
  const location = parseLocation(base, what)
  return openStore(location.kind === 'local' ? { kind: 'local', path: resolve(location.path) } : location, env)
}

/** An artifact ready to verify: a local directory, downloaded first when it lives in a bucket. */
export interface LocalArtifact {
  path: string
  /** Where it came from, for messages: the local path or its s3:// URL. */
  origin: string
  /** Removes a downloaded copy; nothing for a local artifact. */
  cleanup(): Promise<void>
  /** A downloaded copy's files, hashed as they were written into this run's private staging directory. */
  digests?: ReadonlyMap<string, KnownDigest>
}

/**
 * ARG names an artifact under a bucket's BACKUP_BASE: a bare name, or one
 * with a trailing slash when no such local directory exists (a path, with
 * a '/', is otherwise always local, as the guide says).
 */
function bucketName(arg: string): boolean {
  if (!arg.includes('/')) return true
  const bare = arg.replace(/\/+$/, '')
  return bare !== '' && !bare.includes('/') && !existsSync(arg)
}

function splitS3Artifact(url: string): { base: string; name: string } {
  const trimmed = url.replace(/\/+$/, '')
  const cut = trimmed.lastIndexOf('/')
  if (cut <= 'S3://'.length) throw usageError(`${quoteValue(url)} names a bucket, not an artifact`, 'append the artifact name: s3://bucket/prefix/conductor-backup-YYYYMMDDTHHMMSSZ')
  return { base: trimmed.slice(0, cut), name: trimmed.slice(cut + 1) }
}

/**
 * Resolves ARG (a name under BACKUP_BASE, a path, or an s3:// URL of one
 * artifact) to a local directory. From a bucket the artifact is downloaded
 * whole into a fresh directory under RESTORE_STAGING_DIR (or the system
 * temp dir) — it needs the artifact's size in free space there — and is
 * then verified like any local artifact before anything is touched.
 */
export async function localArtifact(
  arg: string | undefined,
  backupBase: string | undefined,
  env: NodeJS.ProcessEnv,
  stagingDir: string | undefined,
  reporter: Reporter,
): Promise<LocalArtifact> {
  let s3: { base: string; name: string } | null = null
  // Refuses unsupported schemes and `s3:` without its slashes, as every other command does.
  if (backupBase) parseLocation(backupBase, 'BACKUP_BASE')
  if (arg) parseLocation(arg, 'the artifact')
  if (arg !== undefined && /^[a-z][a-z0-9+.-]*:\/\//i.test(arg)) {
    parseLocation(arg, 'the artifact') // refuses unsupported schemes
    s3 = splitS3Artifact(arg)
  } else if (backupBase && /^[a-z][a-z0-9+.-]*:\/\//i.test(backupBase) && arg !== undefined && bucketName(arg)) {
    s3 = { base: backupBase, name: arg.replace(/\/+$/, '') }
  } else if (backupBase && /^[a-z][a-z0-9+.-]*:\/\//i.test(backupBase)) {
    parseLocation(backupBase, 'BACKUP_BASE')
    if (arg === undefined || arg === '') throw usageError('missing artifact name', `run: BACKUP_BASE=${backupBase} restore.sh conductor-backup-YYYYMMDDTHHMMSSZ`)
  }
  if (!s3) {
    const path = resolveArtifactPath(arg, backupBase)
    await checkArtifactDir(path, backupBase)
    return { path, origin: path, cleanup: async () => {} }
  }
  const store = (await storeAt(s3.base, 'BACKUP_BASE', env)) as S3Store
  if (isPartialName(s3.name)) throw inputError(`${s3.name} is an incomplete backup from an interrupted run and cannot be restored`, 'choose a completed artifact')
  if (!isArtifactName(s3.name)) throw usageError(`${quoteValue(s3.name)} is not an artifact name`, 'artifact names look like conductor-backup-YYYYMMDDTHHMMSSZ')
  const origin = `${store.url}/${s3.name}`
  const parent = stagingDir ?? tmpdir()
  if (stagingDir) await checkWritableDir(stagingDir, 'RESTORE_STAGING_DIR')
  const dir = await makeScratchDir(parent, 'cdr-fetch-')
  const cleanup = () => rm(dir, { recursive: true, force: true })
  const release = onInterrupt(cleanup)
  let downloaded: DownloadedFile[]
  try {
    reporter.line(`downloading ${origin} into ${dir} (verified before use)`)
    downloaded = await store.download(s3.name, join(dir, s3.name), { durable: false })
  } catch (err) {
    release()
    await cleanup()
    const code = (err as NodeJS.ErrnoException)?.code
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      throw runtimeError(
        `no room in ${quoteValue(parent)} to download ${origin} (${code === 'ENOSPC' ? 'file system full' : 'quota exceeded'}); the partial download was removed`,
        `${stagingDir ? 'free space in RESTORE_STAGING_DIR or point it' : 'free space there, or set RESTORE_STAGING_DIR'} at a directory with room for the whole artifact (status.sh shows its size)`,
      )
    }
    throw err
  }
  return {
    path: join(dir, s3.name),
    origin,
    cleanup: async () => {
      release()
      await cleanup()
    },
    digests: new Map(downloaded.map((f) => [f.path, { sha256: f.sha256, size: f.size, written: f.written }])),
  }
}
