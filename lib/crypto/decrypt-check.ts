import { pipeline } from 'node:stream/promises'
import { changedAfterVerification, type VerifiedFile } from '../artifact/verified-file.ts'
import { verificationError, type DrError } from '../cli/errors.ts'
import { oneLine } from '../cli/redact.ts'
import { DigestMismatch, streamOf, verifiedBytes } from '../pipeline/checksum.ts'
import { decoder, type Decoding } from '../pipeline/decode.ts'
import { decryptionFailure } from './age.ts'

/**
 * Decodes a whole verified file (age -d, zstd -d as needed) and hands the
 * plain bytes to `onChunk`; resolves when every byte matched its checksum
 * and decoded cleanly. A failure is worded for the operator: a wrong or
 * unreadable identity (exit 3), damaged ciphertext (exit 4).
 */
export async function decodeVerified(file: VerifiedFile, decoding: Decoding, env: NodeJS.ProcessEnv, onChunk: (chunk: Buffer) => void): Promise<void> {
  const tool = decoder(decoding, env)
  const bytes = verifiedBytes(file.handle, file.digest, () => tool.kill('SIGKILL'))
  const settle = (p: Promise<unknown>) => p.then(() => undefined, (err: unknown) => err)
  const drained = (async () => {
    try {
      for await (const chunk of tool.stdout!) onChunk(chunk as Buffer)
    } catch (err) {
      tool.kill('SIGKILL') // nobody reads its output any more
      throw err
    }
  })()
  const [fed, read, exit] = await Promise.all([settle(pipeline(streamOf(bytes), tool.stdin!)), settle(drained), tool.exited])
  if (fed instanceof DigestMismatch) throw changedAfterVerification(file.name)
  if (exit !== 0) throw decodeFailure(tool.stderr(), file.name, decoding, exit)
  if (read) throw read
  if (fed) throw fed
}

export function decodeFailure(stderr: string, name: string, decoding: Decoding, exit: number): DrError {
  if (decoding.identity !== undefined && stderr.startsWith('age:')) return decryptionFailure(stderr, name, decoding.identity)
  return verificationError(`${name} cannot be decoded (${oneLine(stderr) || `exit status ${exit}`})`, 'the artifact is damaged; use another backup')
}

/** A small encrypted file (roles, a file index) read whole, at most `limit` plain bytes. */
export async function readDecoded(file: VerifiedFile, decoding: Decoding, env: NodeJS.ProcessEnv, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  await decodeVerified(file, decoding, env, (chunk) => {
    size += chunk.length
    if (size > limit) throw verificationError(`${file.name} is larger than ${limit} bytes once decoded`, 'the artifact is damaged; use another backup')
    chunks.push(chunk)
  })
  return Buffer.concat(chunks)
}

/**
 * Before a restore touches anything: can this identity decrypt this
 * artifact? Every file of an artifact is encrypted to the same recipients
 * in one run, so decrypting its smallest encrypted file whole proves the
 * key (and finds a tampered small file) at the cost of a few KiB.
 */
export async function checkIdentity(files: readonly VerifiedFile[], identity: string, env: NodeJS.ProcessEnv, artifact: string): Promise<void> {
  const smallest = [...files].sort((a, b) => a.digest.size - b.digest.size)[0]
  if (!smallest) return
  // Messages name the artifact: the key is wrong for all of it, not for one file.
  await decodeVerified({ ...smallest, name: `${artifact} (${smallest.name})` }, { compression: undefined, identity }, env, () => {})
}
