import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import { pipeline } from 'node:stream/promises'

export interface Digest {
  sha256: string
  size: number
}

/**
 * Hashes and counts bytes as they flow past, so a dump is checksummed in
 * the same pass that writes it: one read of the data, flat memory.
 */
export class DigestStream extends Transform {
  private readonly hash: Hash = createHash('sha256')
  private bytes = 0
  private readonly onProgress?: (bytes: number) => void

  constructor(onProgress?: (bytes: number) => void) {
    super()
    this.onProgress = onProgress
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk)
    this.bytes += chunk.length
    this.onProgress?.(this.bytes)
    done(null, chunk)
  }

  digest(): Digest {
    return { sha256: this.hash.digest('hex'), size: this.bytes }
  }
}

export async function digestFile(
  path: string,
  onProgress?: (bytes: number) => void,
): Promise<Digest> {
  const digester = new DigestStream(onProgress)
  await pipeline(createReadStream(path), digester, async (source: AsyncIterable<Buffer>) => {
    for await (const _ of source) {
      // drain: only the digest is wanted
    }
  })
  return digester.digest()
}

export function digestBuffer(data: Buffer | string): Digest {
  const buf = typeof data === 'string' ? Buffer.from(data) : data
  return { sha256: createHash('sha256').update(buf).digest('hex'), size: buf.length }
}
