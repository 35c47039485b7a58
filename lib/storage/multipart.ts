import { Writable } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from '@aws-sdk/client-s3'

/**
 * Part buffers of one size, reused from part to part and file to file.
 *
 * Why not lib-storage's Upload: it gathers each part from the stream's
 * 64 KiB chunks and Buffer.concat()s them into a fresh buffer, so every
 * part allocates its size anew and the freed ones wait for the garbage
 * collector; on the 1 GiB bench that churn alone was ~80 MB of the
 * process's 158–169 MB peak. Here the stream is copied once into one of
 * (parts in flight + 1) buffers allocated up front, and memory stays at
 * that whatever the object's size (restic and minio-go pool the same way).
 */
export class PartBuffers {
  private readonly free: Buffer[] = []
  constructor(readonly size: number) {}

  take(): Buffer {
    // allocUnsafeSlow: outside Node's shared pool, not zeroed (every byte sent is written first).
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size)
  }

  give(buffer: Buffer): void {
    this.free.push(buffer)
  }
}

export interface MultipartTarget {
  client: S3Client
  bucket: string
  key: string
  contentType: string
  buffers: PartBuffers
  /** Parts sent at once. */
  queueSize: number
  /** Parts the object may have (S3's 10,000). */
  maxParts: number
  /** The error for a stream that outgrows maxParts × part size. */
  tooLarge: () => Error
}

/**
 * A streamed S3 upload as a Writable, for stream.pipeline(source, upload).
 * A stream that ends within one part is one PutObject; a longer one is a
 * multipart upload of fixed-size parts, at most queueSize in flight
 * (the writes wait: backpressure reaches the source). A failed part, a
 * failed source or destroy() aborts every request in flight and the
 * multipart upload, so nothing billed is left behind; `settled` resolves
 * once that is done. The part size is fixed, so the object is limited to
 * maxParts parts: one byte more fails with `tooLarge()`.
 */
export class MultipartUpload extends Writable {
  /** The S3 request that failed (as opposed to the source or tooLarge), for the caller's wording. */
  requestError: unknown = undefined
  /** Resolves once the upload is complete, or failed and cleaned up. */
  readonly settled: Promise<void>

  private current: Buffer | null = null
  private filled = 0
  /** The number of the part `current` holds. */
  private partNumber = 0
  private uploadId: string | undefined
  private readonly parts: CompletedPart[] = []
  private readonly inFlight = new Set<Promise<void>>()
  private readonly abort = new AbortController()
  private completed = false

  constructor(private readonly target: MultipartTarget) {
    super({ highWaterMark: 1024 * 1024 })
    this.settled = new Promise((resolve) => this.once('close', () => resolve()))
  }

  private get size(): number {
    return this.target.buffers.size
  }

  /** Options of every request but the final abort: destroy() cancels them. */
  private get request(): { abortSignal: AbortSignal } {
    return { abortSignal: this.abort.signal }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.take(chunk).then(() => done(), done)
  }

  private async take(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length; ) {
      if (this.current === null || this.filled === this.size) {
        // A full part is sent only once more bytes follow: a stream of exactly one part stays a single PUT.
        // One byte beyond maxParts full parts: refused before the last full part is even sent.
        if (this.partNumber + 1 > this.target.maxParts) throw this.target.tooLarge()
        if (this.current !== null) await this.dispatch(this.current, this.filled)
        this.current = await this.acquire()
        this.filled = 0
        this.partNumber += 1
      }
      const n = chunk.copy(this.current, this.filled, offset, Math.min(chunk.length, offset + this.size - this.filled))
      this.filled += n
      offset += n
    }
  }

  /** A free buffer once fewer than queueSize parts are in flight. */
  private async acquire(): Promise<Buffer> {
    while (this.inFlight.size >= this.target.queueSize) await Promise.race(this.inFlight)
    this.throwIfFailed()
    return this.target.buffers.take()
  }

  /** A failed request, or a destroy (cancel, failed source) while a write waited: no further part is started. */
  private throwIfFailed(): void {
    if (this.requestError !== undefined) throw this.requestError
    if (this.destroyed) throw new Error('upload stopped')
  }

  /** A request of ours whose failure the caller words as an S3 failure (store.fail), not as the source's. */
  private asRequest<T>(sending: Promise<T>): Promise<T> {
    return sending.catch((err: unknown) => {
      this.requestError ??= err
      throw err
    })
  }

  private async dispatch(buffer: Buffer, length: number): Promise<void> {
    const { bucket, key, contentType } = this.target
    if (this.uploadId === undefined) {
      // Tracked in flight, so that a destroy meanwhile waits for it to settle. A destroy aborts the
      // request, so an upload the server created anyway is left to the caller's backstop
      // (S3Writer lists and aborts the key's uploads after any failure, discard() too).
      const creating = this.asRequest(this.target.client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: contentType }), this.request)).then(
        (answer) => {
          this.uploadId = answer.UploadId
        },
      )
      const tracked = creating.catch(() => {})
      this.inFlight.add(tracked)
      try {
        await creating
      } finally {
        this.inFlight.delete(tracked)
      }
      this.throwIfFailed()
      if (!this.uploadId) {
        const err = new Error(`the server started no multipart upload for ${key} (no UploadId)`)
        this.requestError ??= err
        throw err
      }
    }
    const PartNumber = this.partNumber
    const sending = this.target.client.send(
      new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: this.uploadId, PartNumber, Body: buffer.subarray(0, length) }),
      this.request,
    ).then(
      (answer) => {
        if (!answer.ETag) throw new Error(`the server returned no ETag for part ${PartNumber} of ${key}`)
        this.parts.push({ PartNumber, ETag: answer.ETag })
        // Only now: until the server has answered, the SDK may still resend these bytes.
        this.target.buffers.give(buffer)
      },
    )
    const tracked = sending.catch((err) => this.fail(err)).finally(() => this.inFlight.delete(tracked))
    this.inFlight.add(tracked)
    this.current = null
  }

  /** The first failed request wins; it stops the rest and, through pipeline, the source. */
  private fail(err: unknown): void {
    if (this.requestError !== undefined || this.abort.signal.aborted) return
    this.requestError = err
    this.destroy(err instanceof Error ? err : new Error(String(err)))
  }

  override _final(done: (err?: Error | null) => void): void {
    this.finish().then(() => done(), done)
  }

  private async finish(): Promise<void> {
    const { bucket, key, contentType } = this.target
    if (this.uploadId === undefined) {
      const body = this.current === null ? Buffer.alloc(0) : this.current.subarray(0, this.filled)
      await this.asRequest(this.target.client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }), this.request))
    } else {
      if (this.current !== null) await this.dispatch(this.current, this.filled)
      await Promise.all(this.inFlight)
      this.throwIfFailed()
      const Parts = [...this.parts].sort((a, b) => a.PartNumber! - b.PartNumber!)
      await this.asRequest(this.target.client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: this.uploadId, MultipartUpload: { Parts } }), this.request))
    }
    this.completed = true
    if (this.current !== null) this.target.buffers.give(this.current)
    this.current = null
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (this.completed) return done(err)
    this.abort.abort()
    const { client, bucket, key } = this.target
    // The upload id is read once nothing is in flight: a CreateMultipartUpload answered meanwhile has set it.
    Promise.allSettled(this.inFlight)
      .then(() => (this.uploadId ? client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: this.uploadId })) : undefined))
      .catch(() => undefined) // the caller's backstop lists and aborts what is left
      .then(() => done(err))
  }
}
