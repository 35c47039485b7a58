import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { PutObjectCommand } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import { isSafeRelativePath } from '../artifact/manifest.ts'
import { MANIFEST_FILE, MANIFEST_SUM_FILE } from '../artifact/naming.ts'
import { runtimeError, type DrError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { onInterrupt } from '../cli/signals.ts'
import type { S3Store } from './s3.ts'
import { formatBytes } from '../cli/report.ts'
import { MAX_PARTS, partSizeFor } from './part-size.ts'
import { s3NameOf, s3StatusOf } from './s3-client.ts'
import type { ArtifactWriter } from './store.ts'

/** An empty object that reserves an artifact name while its run uploads (see S3Store.create). */
export const CLAIM_FILE = '.claim'

/**
 * One artifact being written to a bucket: data files as streamed
 * multipart uploads (aborted on failure or interrupt), then the sidecar
 * and the manifest, each only if its key is free.
 */
/** One upload in flight: its pipe, and a promise that settles once both the pipe and the upload have. */
interface Active {
  pass: Transform
  settled: Promise<unknown>
  cancelled: boolean
}

export class S3Writer implements ArtifactWriter {
  private readonly written = new Set<string>()
  private readonly active = new Set<Active>()
  private published = false
  private discarded = false
  /** Publishing found the name taken: the objects under it may be another run's now, so discard leaves them. */
  private conflicted = false

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
    // lib-storage sizes a stream it recognises (an fs.ReadStream) by its
    // whole file, whatever `end` says; behind a Transform it just streams.
    // It only notices the part limit one part too late (it sends part
    // 10,001, which AWS refuses and RGW stores until the completion fails),
    // so the bytes are counted here and the stream stops at the limit.
    const partSize = partSizeFor(this.partSize, expectedBytes)
    const limit = partSize * this.maxParts
    let tooLarge: DrError | undefined
    let sent = 0
    const pass = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        sent += chunk.length
        if (sent <= limit) return done(null, chunk)
        tooLarge ??= runtimeError(
          `${quoteValue(url)} grew past ${formatBytes(limit)}, the most S3's ${this.maxParts.toLocaleString('en')} parts of ${formatBytes(partSize)} can hold`,
          'set S3_PART_SIZE to a larger part size (e.g. 64MiB; memory grows to about 5 times it) and run again',
        )
        done(tooLarge)
      },
    })
    const upload = new Upload({
      client: this.store.client,
      params: { Bucket: this.store.bucket, Key: key, Body: pass, ContentType: 'application/octet-stream' },
      partSize,
      queueSize: this.queueSize,
      leavePartsOnError: false,
    })
    this.written.add(key)

    // Which failure came first decides what the caller is told: the source's
    // own error (pg_dump died), else the upload's (mapped to one line), else
    // the pipe's. Each side's failure makes the other fail too; those echoes
    // are not recorded.
    let sourceErr: unknown
    let uploadErr: unknown
    let pipeErr: unknown
    let failed = false
    // An aborted or prematurely closed pipe is the echo of lib-storage giving up: its own error explains it.
    const echo = (err: NodeJS.ErrnoException) => err?.name === 'AbortError' || err?.code === 'ERR_STREAM_PREMATURE_CLOSE'
    source.once('error', (err) => {
      if (pass.destroyed && echo(err)) return
      if (!failed) sourceErr = err
      failed = true
    })
    const piping = pipeline(source, pass).catch((err: NodeJS.ErrnoException) => {
      if (echo(err)) {
        pipeErr ??= err
        return
      }
      if (!failed) pipeErr = err
      failed = true
    })
    const uploading = upload.done().then(
      () => undefined,
      (err) => {
        if (!failed) uploadErr = err
        failed = true
        // Nobody reads the pipe any more: end it, which stops the source (pg_dump, zstd) too.
        pass.destroy()
      },
    )
    const active: Active = { pass, settled: Promise.all([piping, uploading]), cancelled: false }
    this.active.add(active)
    const release = onInterrupt(() => this.cancel(active))
    try {
      await active.settled
    } finally {
      release()
      this.active.delete(active)
    }
    if (!failed && !active.cancelled && pipeErr === undefined) return
    // lib-storage aborts a failed multipart upload itself; this is the backstop for an abort that failed too.
    await this.abortUploadsOf(key).catch(() => undefined)
    if (active.cancelled) throw runtimeError(`upload of ${quoteValue(url)} was cancelled`, 'run the backup again')
    if (tooLarge !== undefined) throw tooLarge
    if (sourceErr !== undefined) throw sourceErr
    if (uploadErr !== undefined) throw this.store.fail(uploadErr, url)
    throw pipeErr
  }

  /** Stops one upload: ends its pipe (and so its source), then waits for lib-storage to abort the multipart upload. */
  private async cancel(active: Active): Promise<void> {
    active.cancelled = true
    active.pass.destroy(new Error('upload cancelled'))
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
      if (s3StatusOf(err) === 412 || s3NameOf(err) === 'PreconditionFailed') {
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
