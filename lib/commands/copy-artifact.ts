import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import { Writable, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ManifestFile } from '../artifact/manifest.ts'
import { DrError, runtimeError, verificationError } from '../cli/errors.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { onInterrupt } from '../cli/signals.ts'
import { digestBuffer, DigestStream } from '../pipeline/checksum.ts'
import { MANIFEST_FILE } from '../artifact/naming.ts'
import type { Store } from '../storage/store.ts'

export interface CopyResult {
  url: string
  bytes: number
  /** Every file was read back from the copy and matched its checksum. */
  verified: boolean
  /** Milliseconds from claiming the name to the manifest written: the upload alone, without the read-back (bench:s3 compares it with the bare SDK). */
  uploadMs: number
}

/** pipeline, not pipe: a body cut short must fail the read-back, not leave it waiting on a stream that never ends. */
async function digestOf(stream: Readable): Promise<{ sha256: string; size: number }> {
  const digest = new DigestStream()
  await pipeline(stream, digest, new Writable({ write: (_chunk, _enc, done) => done() }))
  return digest.digest()
}

/**
 * Copies a just-published local artifact to another store (an off-site
 * bucket): data files first, hashed again on the way out so that only the
 * bytes the manifest describes are sent; the manifest last, which makes the
 * copy complete; then every file is read back from the copy and checked
 * against the manifest. A copy that fails part-way is removed.
 */
export async function copyArtifact(
  dir: string,
  name: string,
  manifestText: string,
  sumText: string,
  files: readonly ManifestFile[],
  to: Store,
  reporter: Reporter,
): Promise<CopyResult> {
  const started = Date.now()
  const writer = await to.create(name)
  if (!writer) throw runtimeError(`${name} already exists in ${to.url}; it was not overwritten`, 'another backup used the same name there; check the bucket')
  const release = onInterrupt(() => writer.discard())
  let bytes = 0
  try {
    for (const file of files) {
      const sent = new DigestStream((n) => reporter.progress(`copying ${file.path} to ${to.url}`, bytes + n))
      const local = createReadStream(join(dir, file.path), { highWaterMark: 1024 * 1024 })
      local.once('error', (err) => sent.destroy(err)) // pipe() does not pass a read error on
      await writer.writeFile(file.path, local.pipe(sent), file.size)
      const d = sent.digest()
      if (d.sha256 !== file.sha256 || d.size !== file.size) {
        throw verificationError(`${file.path} changed on disk before it was copied to ${to.url}`, 'the local artifact is damaged; nothing was left in the bucket; back up again')
      }
      bytes += file.size
    }
    reporter.endProgress()
    await writer.publish(manifestText, sumText)
    release()
  } catch (err) {
    reporter.endProgress()
    release()
    await writer.discard()
    throw err
  }
  const uploadMs = Date.now() - started
  // Read back: the copy is trusted only once the store has returned the same bytes.
  for (const file of [...files, { path: MANIFEST_FILE, ...digestBuffer(manifestText) }]) {
    let got
    try {
      got = await digestOf(await to.read(name, file.path))
    } catch (err) {
      if (err instanceof DrError) throw err
      throw runtimeError(
        `reading back the copy of ${file.path} from ${to.url}/${name} failed: ${(err as Error)?.message ?? String(err)}`,
        'check the bucket and the network, then copy again; the local artifact is intact',
      )
    }
    if (got.sha256 !== file.sha256 || got.size !== file.size) {
      throw verificationError(`the copy of ${file.path} in ${to.url}/${name} does not read back as written`, 'check the bucket (and its server); the local artifact is intact')
    }
  }
  reporter.line(`copied to ${to.url}/${name} (${formatBytes(bytes)}) and read back: every checksum matches`)
  return { url: `${to.url}/${name}`, bytes, verified: true, uploadMs }
}
