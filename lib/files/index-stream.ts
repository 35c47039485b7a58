import { createInterface } from 'node:readline'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { changedAfterVerification, type VerifiedFile } from '../artifact/verified-file.ts'
import { decodeFailure } from '../crypto/decrypt-check.ts'
import { DigestMismatch, streamOf, verifiedBytes } from '../pipeline/checksum.ts'
import { decoder, needsDecoding, type Decoding } from '../pipeline/decode.ts'
import { readIndex, type IndexEntry } from './file-index.ts'

/**
 * The index's entries, one at a time, decrypted on the fly from the
 * verified file: memory holds one line whatever the number of files, and
 * no plaintext copy is written. The last 256 KiB are held back until the
 * whole file matched its checksum, so a changed index fails before its
 * last entries are used.
 */
export async function* indexEntries(file: VerifiedFile, decoding: Decoding, env: NodeJS.ProcessEnv): AsyncGenerator<IndexEntry> {
  let stopDecoder = () => {}
  const bytes = verifiedBytes(file.handle, file.digest, () => stopDecoder())
  let plain: Readable
  let finished: Promise<void>
  if (needsDecoding(decoding)) {
    const tool = decoder(decoding, env)
    stopDecoder = () => tool.kill('SIGKILL')
    plain = tool.stdout!
    const fed = pipeline(streamOf(bytes), tool.stdin!).then(
      () => undefined,
      (err: unknown) => err,
    )
    finished = (async () => {
      const [feedError, exit] = await Promise.all([fed, tool.exited])
      if (feedError instanceof DigestMismatch) throw changedAfterVerification(file.name)
      if (exit !== 0) throw decodeFailure(tool.stderr(), file.name, decoding, exit)
      if (feedError) throw feedError
    })()
  } else {
    plain = streamOf(bytes)
    finished = new Promise((resolve, reject) => {
      plain.on('end', resolve)
      plain.on('error', (err) => reject(err instanceof DigestMismatch ? changedAfterVerification(file.name) : err))
    })
  }
  finished.catch(() => {}) // surfaced below, after the lines
  const lines = createInterface({ input: plain, crlfDelay: Infinity })
  let complete = false
  try {
    yield* readIndex(lines)
    complete = true
  } catch (err) {
    // A decoding or checksum failure explains a short or garbled index better than the parse error does:
    // let the rest flow (and be hashed) to learn which it was.
    lines.close()
    plain.resume()
    const cause = await finished.then(
      () => null,
      (e: unknown) => e,
    )
    throw cause ?? err
  } finally {
    lines.close()
    // The consumer stopped early: nobody reads the rest.
    if (!complete) stopDecoder()
  }
  await finished
}
