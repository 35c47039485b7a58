import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { isSafeRelativePath } from '../artifact/manifest.ts'
import { MANIFEST_FILE, MANIFEST_SUM_FILE } from '../artifact/naming.ts'
import { runtimeError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { onInterrupt } from '../cli/signals.ts'
import type { S3Store } from './s3.ts'
import { formatBytes } from '../cli/report.ts'
import { MAX_PARTS, partSizeFor } from './part-size.ts'
import { MultipartUpload, PartBuffers } from './multipart.ts'
import { isPreconditionFailed } from './s3-client.ts'
import type { ArtifactWriter } from './store.ts'

/** An empty object that reserves an artifact name while its run uploads (see S3Store.create). */
export const CLAIM_FILE = '.claim'

/** One upload in flight, and a promise that settles once both its pipeline and the upload have. */
interface Active {
  upload: MultipartUpload
  settled: Promise<unknown>
  cancelled: boolean
}

/**
 * One artifact being written to a bucket: data files as streamed
 * multipart uploads (aborted on failure or interrupt), then the sidecar
 * and the manifest, each only if its key is free.
 */
export class S3Writer implements ArtifactWriter {
  private readonly written = new Set<string>()
  private readonly active = new Set<Active>()
  private published = false
  private discarded = false
  /** Publishing found the name taken: the objects under it may be another run's now, so discard leaves them. */
  private conflicted = false
  /** Part buffers, kept from file to file while the part size stays the same. */
  private buffers: PartBuffers | null = null

  constructor(
    private readonly store: S3Store,
    private readonly name: string,
    private readonly key: string,
    private readonly partSize: number,
    private readonly queueSize: number,
    /** S3's limit; smaller only in tests. */
    private readonly maxParts: number = MAX_PARTS,
  ) {}

  get location(): string {
    return `${this.store.url}/${this.name}`
  }

  async writeFile(file: string, source: Readable, expectedBytes?: number): Promise<void> {
    if (!isSafeRelativePath(file) || file === MANIFEST_FILE || file === MANIFEST_SUM_FILE) throw new Error(`not a data file name: ${file}`)
    if (this.discarded || this.published) throw new Error(`artifact ${this.name} is already ${this.published ? 'published' : 'discarded'}`)
    const key = this.key + file
    const url = `s3://${this.store.bucket}/${key}`
    const partSize = partSizeFor(this.partSize, expectedBytes)
    if (this.buffers?.size !== partSize) this.buffers = new PartBuffers(partSize)
    const upload = new MultipartUpload({
      client: this.store.client,
      bucket: this.store.bucket,
      key,
      contentType: 'application/octet-stream',
      buffers: this.buffers,
      queueSize: this.queueSize,
      maxParts: this.maxParts,
      tooLarge: () =>
        runtimeError(
          `${quoteValue(url)} grew past ${formatBytes(partSize * this.maxParts)}, the most S3's ${this.maxParts.toLocaleString('en')} parts of ${formatBytes(partSize)} can hold`,
          'set S3_PART_SIZE to a larger part size (e.g. 64MiB; memory grows to about 4 times it) and run again',
        ),
    })
    this.written.add(key)
    // pipeline settles with the first failure: the source's own (pg_dump
    // died), the upload's, or the cancel; the other side is stopped.
    let failure: unknown
    const piping = pipeline(source, upload).catch((err) => {
      failure = err
    })
    const active: Active = { upload, settled: Promise.all([piping, upload.settled]), cancelled: false }
    this.active.add(active)
    const release = onInterrupt(() => this.cancel(active))
    try {
      await active.settled
    } finally {
      release()
      this.active.delete(active)
    }
    if (failure === undefined && !active.cancelled) return
    // The upload aborts itself; this is the backstop for an abort that failed too.
    await this.abortUploadsOf(key).catch(() => undefined)
    if (active.cancelled) throw runtimeError(`upload of ${quoteValue(url)} was cancelled`, 'run the backup again')
    if (failure === upload.requestError) throw this.store.fail(failure, url)
    throw failure
  }

  /** Stops one upload: destroys it (pipeline stops its source), then waits for the multipart upload to be aborted. */
  private async cancel(active: Active): Promise<void> {
    active.cancelled = true
    active.upload.destroy(new Error('upload cancelled'))
    await active.settled
  }

  private async abortUploadsOf(key: string): Promise<void> {
    for (const upload of await this.store.listUploads(key)) if (upload.key === key) await this.store.abortUpload(upload)
  }

  async publish(manifestText: string, sumText: string): Promise<void> {
    if (this.discarded) throw new Error(`artifact ${this.name} was discarded`)
    if (this.published) throw new Error(`artifact ${this.name} is already published`)
    if (this.active.size > 0) throw new Error(`artifact ${this.name} still has uploads in flight`)
    // The sidecar first, the manifest last: a manifest is only ever seen with its checksum already there.
    await this.putNew(MANIFEST_SUM_FILE, sumText, 'text/plain; charset=utf-8')
    await this.putNew(MANIFEST_FILE, manifestText, 'application/json')
    this.published = true
    // The manifest holds the name from now on; the claim is no part of the artifact.
    await this.store.deleteKeys([this.key + CLAIM_FILE]).catch(() => {})
  }

  /** A small object, written only if nothing has that key (If-None-Match: *), with Content-MD5. */
  private async putNew(file: string, text: string, contentType: string): Promise<void> {
    const key = this.key + file
    try {
      await this.store.client.send(
        new PutObjectCommand({ Bucket: this.store.bucket, Key: key, Body: text, ContentType: contentType, IfNoneMatch: '*' }),
      )
      this.written.add(key)
    } catch (err) {
      if (isPreconditionFailed(err)) {
        // Our own first attempt, stored before its answer was lost (the SDK retried): done.
        if (await this.store.holds(key, text)) {
          this.written.add(key)
          return
        }
        this.conflicted = true
        throw runtimeError(`artifact ${this.name} already exists in ${this.store.url}`, 'another backup used the same name; run again')
      }
      this.written.add(key) // it may have been stored before the answer was lost
      throw this.store.fail(err, `s3://${this.store.bucket}/${key}`)
    }
  }

  async discard(): Promise<void> {
    if (this.published) return
    this.discarded = true
    await Promise.all([...this.active].map((a) => this.cancel(a)))
    const keys = [...this.written, this.key + CLAIM_FILE]
    for (const key of keys) await this.abortUploadsOf(key)
    if (this.conflicted) return
    if (keys.length > 0) await this.store.deleteKeys(keys)
    this.written.clear()
  }
}
