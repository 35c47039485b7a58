import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import { compareNewestFirst, completeEntry, parseArtifactStamp, type ArtifactEntry } from '../artifact/list.ts'
import { fsyncDir, fsyncFile } from '../artifact/durable.ts'
import { isSafeRelativePath, parseManifestSum } from '../artifact/manifest.ts'
import { isArtifactName, MANIFEST_FILE, MANIFEST_SUM_FILE } from '../artifact/naming.ts'
import { MANIFEST_LIMIT, SUM_LIMIT, trustManifestBytes } from '../artifact/read-manifest.ts'
import { DrError, inputError, runtimeError, verificationError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { isPreconditionFailed, s3Error, s3NameOf, s3StatusOf, type S3Connection } from './s3-client.ts'
import type { ArtifactWriter, Store } from './store.ts'
import { DigestStream, identityOf, type Digest, type FileIdentity } from '../pipeline/checksum.ts'
import { mapLimit } from '../pipeline/map-limit.ts'
import { CLAIM_FILE, S3Writer } from './s3-writer.ts'
import { MAX_PARTS } from './part-size.ts'

export { CLAIM_FILE }

/**
 * Artifacts in an S3 bucket: `<prefix>/<artifact-name>/<file>`, the same
 * file names as a local artifact directory. There is no rename on S3, so
 * the manifest, written last with If-None-Match: *, is the completion
 * marker: objects under a name without a manifest are a partial artifact.
 *
 * Data files are streamed as multipart uploads (lib/storage/multipart.ts):
 * parts of PART_SIZE, at most QUEUE_SIZE in flight, in QUEUE_SIZE + 1
 * reused buffers, so memory stays flat whatever the file's size. A failed or
 * interrupted upload is aborted, so it leaves no invisible, billed parts.
 */
export const PART_SIZE = 8 * 1024 * 1024
export const QUEUE_SIZE = 3
/** Artifacts read at once while listing: each is one listing and, when complete, two small GETs. */
const LIST_CONCURRENCY = 8

export interface S3StoreOptions {
  /** Multipart part size in bytes, at least 5 MiB (S3's minimum). */
  partSize?: number
  queueSize?: number
  /** Parts an object may have: S3's 10,000; smaller only in tests. */
  maxParts?: number
}

export interface S3Location {
  bucket: string
  prefix: string
  url: string
}

/** One object of a downloaded artifact: its path in the artifact, and the digest of the bytes written. */
export interface DownloadedFile extends Digest {
  path: string
  /** The file as written (lstat): the digest vouches for this inode, unchanged since (ctime). */
  written: FileIdentity
}

/** An unfinished multipart upload, as listed by staleUploads. */
export interface StaleUpload {
  key: string
  uploadId: string
  initiated: Date | null
  /** The artifact it belongs to, when its key says so. */
  artifact: string | null
}

interface ObjectInfo {
  key: string
  size: number
  modified: Date | null
}

export class S3Store implements Store {
  readonly kind = 's3' as const
  readonly url: string
  readonly bucket: string
  readonly prefix: string
  readonly client: S3Client
  private readonly partSize: number
  private readonly queueSize: number
  private readonly maxParts: number

  constructor(
    readonly conn: S3Connection,
    location: S3Location,
    options: S3StoreOptions = {},
  ) {
    this.client = conn.client
    this.bucket = location.bucket
    this.prefix = location.prefix
    this.url = location.url
    this.partSize = options.partSize ?? conn.partSize ?? PART_SIZE
    this.queueSize = options.queueSize ?? QUEUE_SIZE
    this.maxParts = options.maxParts ?? MAX_PARTS
  }

  /** `<prefix>/` or '' at the bucket's root. */
  private get base(): string {
    return this.prefix ? `${this.prefix}/` : ''
  }

  /** The key prefix of one artifact, with its trailing slash. */
  artifactKey(name: string): string {
    checkSegment(name, 'artifact name')
    return `${this.base}${name}/`
  }

  /** Every failure of a request, worded for the operator. */
  fail(err: unknown, url: string = this.url): DrError {
    return s3Error(err, { conn: this.conn, bucket: this.bucket, url })
  }

  async create(name: string): Promise<ArtifactWriter | null> {
    const key = this.artifactKey(name)
    // Taken when anything is there: a complete artifact (its manifest), a
    // partial one, or a run still uploading its first file.
    try {
      const objects = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: key, MaxKeys: 1 }))
      if ((objects.KeyCount ?? objects.Contents?.length ?? 0) > 0) return null
      const uploads = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: key, MaxUploads: 1 }))
      if ((uploads.Uploads?.length ?? 0) > 0) return null
      // Claim the name with a conditional write: of two runs that both saw it free, exactly one gets it.
      // Data objects cannot be written conditionally (multipart), so without this claim the loser's
      // uploads would replace the winner's files under the same name.
      // The claim holds a token of this run's own: a 412 to the SDK's retry of a PUT whose answer
      // was lost (our first attempt stored it) is told apart from another run's claim by reading it.
      const token = `${randomBytes(16).toString('hex')}\n`
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key + CLAIM_FILE, Body: token, IfNoneMatch: '*' }))
      } catch (err) {
        if (!(isPreconditionFailed(err) && (await this.holds(key + CLAIM_FILE, token)))) throw err
      }
    } catch (err) {
      if (isPreconditionFailed(err)) return null
      throw this.fail(err)
    }
    return new S3Writer(this, name, key, this.partSize, this.queueSize, this.maxParts)
  }

  /**
   * Every artifact under the prefix: the names that hold objects, and the
   * names that so far hold only an unfinished upload (a run streaming its
   * first file, or a killed one), which are partial like a local
   * `.NAME.partial` directory is from the moment it exists.
   */
  async list(): Promise<ArtifactEntry[]> {
    const names = new Set<string>()
    let token: string | undefined
    try {
      do {
        const page = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.base, Delimiter: '/', ContinuationToken: token }),
        )
        for (const p of page.CommonPrefixes ?? []) {
          const name = p.Prefix?.slice(this.base.length, -1)
          if (name !== undefined && isArtifactName(name)) names.add(name)
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined
      } while (token)
    } catch (err) {
      throw this.fail(err)
    }
    const uploads = new Map<string, StaleUpload[]>()
    for (const u of await this.listUploads(this.base)) {
      if (u.artifact === null) continue
      names.add(u.artifact)
      uploads.set(u.artifact, [...(uploads.get(u.artifact) ?? []), u])
    }
    const entries = await mapLimit([...names], LIST_CONCURRENCY, (name) => this.readEntry(name, uploads.get(name) ?? []))
    return entries.filter((e): e is ArtifactEntry => e !== null).sort(compareNewestFirst)
  }

  private async readEntry(name: string, uploads: StaleUpload[]): Promise<ArtifactEntry | null> {
    const key = this.artifactKey(name)
    const objects = await this.listObjects(key)
    if (objects.length === 0 && uploads.length === 0) return null // removed while we listed
    const newest = latest(objects.map((o) => o.modified))
    const blank = {
      name,
      path: `${this.url}/${name}`,
      createdAt: parseArtifactStamp(name),
      completedAt: null,
      bytes: null,
      database: null,
      problem: null,
      modifiedAt: newest,
    }
    // Artifacts hold flat file names. Deeper keys mean this is no artifact but a prefix named like
    // one (a whole backup series under s3://b/conductor-backup-…): damaged, so prune never removes it.
    const nested = objects.find((o) => o.key.slice(key.length).includes('/'))
    if (nested) return { ...blank, kind: 'damaged', problem: `holds nested objects (${quoteValue(nested.key)}): not an artifact but a prefix named like one` }
    if (!objects.some((o) => o.key === key + MANIFEST_FILE)) {
      // The sidecar is written just before the manifest and deleted just after it: with the sidecar
      // and no manifest this is a completed artifact half deleted (or its manifest lost), not a partial.
      if (objects.some((o) => o.key === key + MANIFEST_SUM_FILE)) {
        return { ...blank, kind: 'damaged', problem: `${MANIFEST_FILE} is missing (${MANIFEST_SUM_FILE} is there)` }
      }
      // When the run last wrote: a dump streaming into one upload for hours
      // shows only in its parts' times, and must not look abandoned.
      const partTimes = await Promise.all(uploads.map((u) => this.lastPartTime(u)))
      return { ...blank, kind: 'partial', modifiedAt: latest([newest, ...partTimes]) }
    }
    try {
      const sum = await this.readSmall(key + MANIFEST_SUM_FILE, MANIFEST_SUM_FILE, SUM_LIMIT)
      const expected = parseManifestSum(sum.toString('utf8'))
      const manifest = trustManifestBytes(expected, await this.readSmall(key + MANIFEST_FILE, MANIFEST_FILE, MANIFEST_LIMIT))
      return { ...blank, ...completeEntry(manifest) }
    } catch (err) {
      // The artifact's fault: damaged. The store's (credentials, network): the whole listing fails.
      if (err instanceof DrError && err.kind === 'verification') return { ...blank, kind: 'damaged', problem: err.message }
      throw err
    }
  }

  /** The newest part of an unfinished upload, or when it started; null if it vanished meanwhile. */
  private async lastPartTime(upload: StaleUpload): Promise<Date | null> {
    const times: (Date | null)[] = [upload.initiated]
    let marker: string | undefined
    try {
      for (;;) {
        const page = await this.client.send(
          new ListPartsCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.uploadId, PartNumberMarker: marker }),
        )
        for (const part of page.Parts ?? []) times.push(part.LastModified ?? null)
        if (!page.IsTruncated || !page.NextPartNumberMarker) break
        marker = page.NextPartNumberMarker
      }
    } catch (err) {
      if (s3NameOf(err) === 'NoSuchUpload' || s3StatusOf(err) === 404) return latest(times)
      throw this.fail(err, `s3://${this.bucket}/${upload.key}`)
    }
    return latest(times)
  }

  /**
   * The object at `key` holds exactly `text`: after a conditional PUT
   * answered 412, whether it was our own earlier attempt that stored it
   * (the answer lost, the SDK retried) or someone else's object. Any
   * failure to read it counts as someone else's.
   */
  async holds(key: string, text: string): Promise<boolean> {
    const expected = Buffer.from(text)
    return this.readSmall(key, key, expected.length).then((got) => got.equals(expected), () => false)
  }

  /** A small object read whole, refused past `limit` bytes; a missing one is the artifact's fault. */
  private async readSmall(key: string, what: string, limit: number): Promise<Buffer> {
    const url = `s3://${this.bucket}/${key}`
    let body: Readable
    try {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))
      body = got.Body as Readable
      if ((got.ContentLength ?? 0) > limit) {
        body.destroy()
        throw verificationError(`${what} is larger than ${limit} bytes`, 'the artifact is damaged or not a Conductor backup; use another backup')
      }
    } catch (err) {
      if (s3NameOf(err) === 'NoSuchKey') throw verificationError(`${what} is missing from the artifact`, 'the artifact is incomplete or damaged; use another backup')
      throw this.fail(err, url)
    }
    const chunks: Buffer[] = []
    let length = 0
    try {
      for await (const chunk of body) {
        chunks.push(chunk as Buffer)
        length += (chunk as Buffer).length
        if (length > limit) {
          body.destroy()
          throw verificationError(`${what} is larger than ${limit} bytes`, 'the artifact is damaged or not a Conductor backup; use another backup')
        }
      }
    } catch (err) {
      throw this.fail(err, url)
    }
    return Buffer.concat(chunks, length)
  }

  /** Every object under `prefix` (paged). */
  async listObjects(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = []
    let token: string | undefined
    try {
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }))
        for (const o of page.Contents ?? []) if (o.Key !== undefined) out.push({ key: o.Key, size: o.Size ?? 0, modified: o.LastModified ?? null })
        token = page.IsTruncated ? page.NextContinuationToken : undefined
      } while (token)
    } catch (err) {
      throw this.fail(err)
    }
    return out
  }

  /** Every unfinished multipart upload under `prefix` (paged). */
  async listUploads(prefix: string): Promise<StaleUpload[]> {
    const out: StaleUpload[] = []
    let keyMarker: string | undefined
    let uploadIdMarker: string | undefined
    try {
      for (;;) {
        const page = await this.client.send(
          new ListMultipartUploadsCommand({ Bucket: this.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        )
        for (const u of page.Uploads ?? []) {
          if (u.Key === undefined || u.UploadId === undefined) continue
          const name = u.Key.slice(this.base.length).split('/')[0] ?? ''
          out.push({ key: u.Key, uploadId: u.UploadId, initiated: u.Initiated ?? null, artifact: isArtifactName(name) ? name : null })
        }
        if (!page.IsTruncated || (!page.NextKeyMarker && !page.NextUploadIdMarker)) break
        keyMarker = page.NextKeyMarker
        uploadIdMarker = page.NextUploadIdMarker
      }
    } catch (err) {
      throw this.fail(err)
    }
    return out
  }

  /** Unfinished multipart uploads under the prefix started more than `olderThanMs` ago: a killed run's leftovers. */
  async staleUploads(olderThanMs: number): Promise<StaleUpload[]> {
    const cutoff = Date.now() - olderThanMs
    return (await this.listUploads(this.base)).filter((u) => u.initiated === null || u.initiated.getTime() <= cutoff)
  }

  /** Aborts one unfinished upload; one already gone is fine. */
  async abortUpload(upload: Pick<StaleUpload, 'key' | 'uploadId'>): Promise<void> {
    try {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.key, UploadId: upload.uploadId }))
    } catch (err) {
      if (s3NameOf(err) === 'NoSuchUpload' || s3StatusOf(err) === 404) return
      throw this.fail(err, `s3://${this.bucket}/${upload.key}`)
    }
  }

  /** Deletes keys in batches of 1000 (DeleteObjects' limit); any key the server would not delete is an error. */
  async deleteKeys(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000)
      let failed: { Key?: string; Code?: string }[] = []
      try {
        const out = await this.client.send(
          new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } }),
        )
        failed = out.Errors ?? []
      } catch (err) {
        throw this.fail(err)
      }
      if (failed.length > 0) {
        const first = failed[0]!
        throw runtimeError(
          `${failed.length} object(s) could not be deleted from ${this.url}, first ${quoteValue(first.Key ?? '?')} (${first.Code ?? 'unknown'})`,
          'check the credentials may delete objects, then remove it again',
        )
      }
    }
  }

  private async deleteKey(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }))
    } catch (err) {
      if (s3NameOf(err) === 'NoSuchKey') return
      throw this.fail(err, `s3://${this.bucket}/${key}`)
    }
  }

  async remove(entry: ArtifactEntry): Promise<void> {
    const key = this.artifactKey(entry.name)
    // Manifest first: from this moment the artifact reads as damaged (then partial), never as complete.
    await this.deleteKey(key + MANIFEST_FILE)
    await this.deleteKey(key + MANIFEST_SUM_FILE)
    await this.deleteKeys((await this.listObjects(key)).map((o) => o.key))
    for (const upload of await this.listUploads(key)) await this.abortUpload(upload)
  }

  /**
   * Copies every object of one complete artifact into `localDir` (created
   * 0700 if missing), files 0600 and fsynced, one at a time, streamed. Keys
   * that would land outside `localDir` are refused. Nothing is verified
   * here: each file's SHA-256 is taken from the bytes as they are written
   * (one pass), for the caller to check against the manifest instead of
   * reading the copy again. On failure the files already written stay:
   * `localDir` is the caller's.
   */
  async download(name: string, localDir: string, opts: { durable?: boolean } = {}): Promise<DownloadedFile[]> {
    // A restore's staging copy is verified and thrown away: flushing it to disk first buys nothing.
    const durable = opts.durable ?? true
    const key = this.artifactKey(name)
    const where = `${this.url}/${name}`
    const objects = (await this.listObjects(key)).filter((o) => !(o.key.endsWith('/') && o.size === 0) && o.key !== key + CLAIM_FILE)
    if (objects.length === 0) throw inputError(`artifact ${quoteValue(where)} does not exist`, 'list the artifacts and pick one of them')
    if (!objects.some((o) => o.key === key + MANIFEST_FILE)) {
      throw inputError(`artifact ${quoteValue(where)} is not complete (no ${MANIFEST_FILE})`, 'pick a complete artifact')
    }
    const files = objects.map((o) => ({ ...o, rel: o.key.slice(key.length) }))
    const unsafe = files.find((f) => !isSafeRelativePath(f.rel))
    if (unsafe) throw verificationError(`artifact ${quoteValue(where)} holds an object named ${quoteValue(unsafe.rel)}`, 'the artifact is damaged or tampered with; use another backup')
    // No backup writes below its own name: as status says, such a name is not an artifact (and
    // NAME/manifest.json/x would clash with NAME/manifest.json on disk).
    const nested = files.find((f) => f.rel.includes('/'))
    if (nested) throw verificationError(`artifact ${quoteValue(where)} holds nested objects (${quoteValue(nested.rel)}), which no backup writes`, 'the artifact is damaged or tampered with; use another backup')
    await mkdir(localDir, { recursive: true, mode: 0o700 })
    const dirs = new Set<string>([localDir])
    const downloaded: DownloadedFile[] = []
    for (const f of files) {
      const path = join(localDir, f.rel)
      const dir = dirname(path)
      if (!dirs.has(dir)) {
        await mkdir(dir, { recursive: true, mode: 0o700 })
        dirs.add(dir)
      }
      const body = await this.openKey(f.key)
      // 4 MiB: the socket keeps being read while a write is on disk, and the next write gathers what came meanwhile (one writev).
      const out = createWriteStream(path, { flags: 'wx', mode: 0o600, highWaterMark: 4 * 1024 * 1024 })
      // The local side's errors (ENOSPC, EEXIST) go up as they are, for the
      // caller's system-error mapping; the network's become one S3 line.
      let localErr: unknown
      out.once('error', (err) => (localErr = err))
      const digest = new DigestStream()
      try {
        await pipeline(body, digest, out)
      } catch (err) {
        if (err !== localErr) throw this.fail(err, `s3://${this.bucket}/${f.key}`)
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw inputError(`${quoteValue(path)} already exists`, 'download into an empty directory')
        throw err
      }
      const st = await stat(path, { bigint: true })
      const bytes = Number(st.size)
      if (bytes !== f.size) throw runtimeError(`download of ${quoteValue(`s3://${this.bucket}/${f.key}`)} ended after ${bytes} of ${f.size} bytes`, 'run again')
      if (durable) await fsyncFile(path)
      downloaded.push({ path: f.rel, ...digest.digest(), written: identityOf(st) })
    }
    if (durable) for (const dir of dirs) await fsyncDir(dir)
    return downloaded
  }

  /**
   * One file of an artifact as a stream (GET), e.g. for a restore that
   * verifies while it reads. A missing file is the artifact's fault, as
   * for a local directory (lib/artifact/open.ts): exit 4.
   */
  async openRead(name: string, file: string): Promise<Readable> {
    if (!isSafeRelativePath(file)) throw new Error(`not a file name inside an artifact: ${file}`)
    const key = this.artifactKey(name) + file
    try {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))
      return got.Body as Readable
    } catch (err) {
      if (s3NameOf(err) === 'NoSuchKey') throw verificationError(`${file} is missing from the artifact`, 'the artifact is incomplete or damaged; use another backup')
      throw this.fail(err, `s3://${this.bucket}/${key}`)
    }
  }

  /** The Store spelling of openRead. */
  read(name: string, file: string): Promise<Readable> {
    return this.openRead(name, file)
  }

  private async openKey(key: string): Promise<Readable> {
    const url = `s3://${this.bucket}/${key}`
    try {
      const got = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }))
      return got.Body as Readable
    } catch (err) {
      // Listed a moment ago: removed meanwhile.
      if (s3NameOf(err) === 'NoSuchKey') throw runtimeError(`${quoteValue(url)} was deleted while it was being downloaded`, 'check whether another run removed the artifact')
      throw this.fail(err, url)
    }
  }
}

/** A plain key segment: the layout is fixed, so a name with a slash is a bug upstream, not an input. */
function checkSegment(name: string, what: string): void {
  if (name === '' || name === '.' || name === '..' || name.includes('/') || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new Error(`not a valid ${what}: ${JSON.stringify(name)}`)
  }
}

function latest(times: readonly (Date | null)[]): Date | null {
  return times.reduce<Date | null>((max, t) => (t && (!max || t > max) ? t : max), null)
}

