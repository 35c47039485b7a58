import { readdir } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { verificationError } from '../cli/errors.ts'
import type { Reporter } from '../cli/report.ts'
import { formatBytes } from '../cli/report.ts'
import { digestHandle, identityOf, sameFile, type Digest, type FileIdentity } from '../pipeline/checksum.ts'
import type { Manifest } from './manifest.ts'
import { isArtifactName, MANIFEST_FILE, MANIFEST_SUM_FILE } from './naming.ts'
import { openRegular } from './open.ts'
import { readTrustedManifest } from './read-manifest.ts'
import type { VerifiedFile } from './verified-file.ts'

/** A digest taken while the file was written, and the file it vouches for. */
export interface KnownDigest extends Digest {
  written: FileIdentity
}

export interface VerifiedArtifact {
  manifest: Manifest
  /** Every file the manifest lists, open on the exact inode whose bytes were verified. */
  files: Map<string, VerifiedFile>
  close(): Promise<void>
}

/**
 * Proves the artifact is whole before anything is touched: the manifest
 * matches its checksum and every listed file matches its size and
 * SHA-256. The files stay open so that what is applied later is what was
 * verified here, whatever happens to the paths meanwhile.
 *
 * `known` holds digests taken while this run wrote the files into its own
 * staging directory (a download): a file still the very one written
 * (same inode, ctime unmoved) is checked against the manifest by that
 * digest, not read a second time; any other is hashed. Every step that
 * applies bytes hashes them again as it reads (verifiedBytes).
 */
export async function verifyArtifact(dir: string, reporter: Reporter, known?: ReadonlyMap<string, KnownDigest>): Promise<VerifiedArtifact> {
  const manifest = await readTrustedManifest(dir)
  if (isArtifactName(basename(dir)) && manifest.artifact !== basename(dir)) {
    reporter.warn(`artifact directory ${basename(dir)} was renamed; its manifest names ${manifest.artifact}`)
  }
  const listed = new Set([MANIFEST_FILE, MANIFEST_SUM_FILE, ...manifest.files.map((f) => f.path.split('/')[0])])
  const unlisted = (await readdir(dir)).filter((name) => !listed.has(name))
  if (unlisted.length > 0) {
    reporter.warn(`not in the manifest, ignored: ${unlisted.join(', ')} (something other than the backup wrote into the artifact)`)
  }

  const files = new Map<string, VerifiedFile>()
  const close = async () => {
    await Promise.all([...files.values()].map((f) => f.handle.close().catch(() => {})))
  }
  try {
    for (const file of manifest.files) {
      const handle = await openRegular(join(dir, ...file.path.split('/')), file.path)
      files.set(file.path, { name: file.path, handle, digest: { sha256: file.sha256, size: file.size } })
      const { size } = await handle.stat()
      if (size !== file.size) {
        throw verificationError(`${file.path} is ${size} bytes, manifest says ${file.size}`, 'the artifact is damaged; use another backup')
      }
      const written = known?.get(file.path)
      const asWritten = written !== undefined && sameFile(written.written, identityOf(await handle.stat({ bigint: true })))
      const digest = asWritten ? written : await digestHandle(handle, file.size, (bytes) => reporter.progress(`verifying ${file.path}`, bytes))
      reporter.endProgress()
      if (digest.size !== file.size || digest.sha256 !== file.sha256) {
        throw verificationError(`${file.path} failed its SHA-256 check`, 'the artifact is damaged; use another backup')
      }
      reporter.line(`verified ${file.path} (${formatBytes(file.size)}, sha256 ok${asWritten ? ', as downloaded' : ''})`)
    }
  } catch (err) {
    await close()
    throw err
  }
  return { manifest, files, close }
}
