import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  ListBucketsCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import type { Test } from 'tap'
import { parseLocation } from '../../lib/storage/location.ts'
import { S3Store, type S3StoreOptions } from '../../lib/storage/s3.ts'
import { s3ClientFromEnv, s3Error } from '../../lib/storage/s3-client.ts'

const SERVER = fileURLToPath(new URL('./server.sh', import.meta.url))
export const NOT_RUNNING = 'S3 server not running: test/s3/server.sh start'

/**
 * The test server's settings, from `server.sh env` (the same lines an
 * operator would eval). Only these variables: the caller's own AWS_*
 * settings (a profile, real keys) must never reach a test.
 */
export function serverEnv(): Record<string, string> {
  const text = execFileSync('bash', [SERVER, 'env'], { encoding: 'utf8' })
  const env: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line)
    if (m) env[m[1]!] = m[2]!
  }
  return env
}

export interface S3Fixture {
  env: Record<string, string>
  bucket: string
  client: S3Client
  /** A store under its own prefix in this run's bucket. */
  store(prefix: string, options?: S3StoreOptions): S3Store
}

/**
 * A fresh bucket for this test run, deleted (with everything in it) at the
 * end. When the server does not answer: a failure on CI (CI=true), where
 * .ci/run starts it, and a skip elsewhere, with the command that starts it.
 */
export async function s3Fixture(t: Test): Promise<S3Fixture | null> {
  const env = serverEnv()
  const conn = s3ClientFromEnv({ ...env, AWS_MAX_ATTEMPTS: '1' })
  const client = conn.client
  try {
    await client.send(new ListBucketsCommand({}), { abortSignal: AbortSignal.timeout(5000) })
  } catch (err) {
    const why = `${NOT_RUNNING} (${s3Error(err, { conn, bucket: '', url: env.AWS_ENDPOINT_URL ?? '' }).message})`
    if (process.env.CI === 'true') t.fail(why)
    else t.test('S3 store against a real server', { skip: why }, async () => {})
    return null
  }
  const bucket = `cdr-test-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`
  await client.send(new CreateBucketCommand({ Bucket: bucket }))
  t.teardown(() => emptyAndDelete(env, bucket))
  return {
    env,
    bucket,
    client,
    store: (prefix, options) => {
      const location = parseLocation(`s3://${bucket}/${prefix}`, 'test location')
      if (location.kind !== 's3') throw new Error('not an s3 location')
      return new S3Store(s3ClientFromEnv(env), location, options)
    },
  }
}

async function emptyAndDelete(env: Record<string, string>, bucket: string): Promise<void> {
  const store = new S3Store(s3ClientFromEnv(env), { bucket, prefix: '', url: `s3://${bucket}` })
  for (const upload of await store.listUploads('')) await store.abortUpload(upload)
  await store.deleteKeys((await store.listObjects('')).map((o) => o.key))
  await store.client.send(new DeleteBucketCommand({ Bucket: bucket }))
}

// ---------------------------------------------------------------------------
// The commands against a bucket (test/s3-commands.test.ts): their environment,
// what a prefix holds, and minimal artifacts uploaded directly.
// (Import declarations are hoisted: these sit here to keep the additions in one block.)
import {
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3'
import { cleanEnv, syntheticArtifact } from '../helpers.ts'

export { syntheticArtifact }

/**
 * The environment a script gets in a bucket test: cleanEnv, minus every
 * AWS_* and tool switch the caller's shell may hold (a profile, real keys,
 * BACKUP_KEEP_*, encryption, staging), plus the test server's settings.
 */
export function s3CommandEnv(fx: Pick<S3Fixture, 'env'>, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = cleanEnv()
  for (const name of Object.keys(env)) {
    if (/^(AWS_|BACKUP_|RESTORE_|DRILL_|DR_)/.test(name) || /^S3_/.test(name) || name === 'PG_LOCK_WAIT_TIMEOUT') delete env[name]
  }
  Object.assign(env, fx.env)
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  return env
}

/** Every object key under `prefix` (paged), sorted. */
export async function objectKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let token: string | undefined
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }))
    for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key)
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  return keys.sort()
}

/** The keys of every unfinished multipart upload under `prefix`. */
export async function uploadKeys(client: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let keyMarker: string | undefined
  let uploadIdMarker: string | undefined
  for (;;) {
    const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }))
    for (const u of page.Uploads ?? []) if (u.Key !== undefined) keys.push(u.Key)
    if (!page.IsTruncated) break
    keyMarker = page.NextKeyMarker
    uploadIdMarker = page.NextUploadIdMarker
  }
  return keys.sort()
}

/** Everything a prefix holds: object keys and unfinished uploads, relative to it. */
export async function prefixContents(client: S3Client, bucket: string, prefix: string): Promise<{ objects: string[]; uploads: string[] }> {
  const base = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`
  return {
    objects: (await objectKeys(client, bucket, base)).map((k) => k.slice(base.length)),
    uploads: (await uploadKeys(client, bucket, base)).map((k) => k.slice(base.length)),
  }
}

export async function getObjectBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  return Buffer.from(await got.Body!.transformToByteArray())
}

export async function putObjectBytes(client: S3Client, bucket: string, key: string, body: Buffer | string): Promise<void> {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))
}


/** Uploads a syntheticArtifact under `prefix` (data, sidecar, manifest, in that order); returns its name. */
export async function putSyntheticArtifact(client: S3Client, bucket: string, prefix: string, when: Date, database?: string): Promise<string> {
  const { name, files } = syntheticArtifact(when, database)
  const base = prefix ? `${prefix}/${name}/` : `${name}/`
  for (const [file, body] of Object.entries(files)) await putObjectBytes(client, bucket, base + file, body)
  return name
}

/** What the proxy does to one request: pass it, lose the server's answer, or cut the body short. */
export type Misbehaviour = null | 'lose-answer' | 'hang' | { cutAfter: number }

/**
 * An HTTP proxy in front of the test server that misbehaves as told, per
 * request: the failures of a real network (an answer lost after the server
 * acted, a download cut short). Returns its endpoint URL; closed at the
 * end of the test. Requests are forwarded unchanged (their signatures hold).
 */
export async function s3Proxy(t: Test, fx: Pick<S3Fixture, 'env'>, misbehave: (req: IncomingMessage) => Misbehaviour): Promise<string> {
  const upstream = new URL(fx.env.AWS_ENDPOINT_URL!)
  const proxy = createServer((req, res) => {
    const what = misbehave(req)
    // Never forwarded, never answered: a server that has stopped responding.
    if (what === 'hang') return
    const up = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (ur) => {
      if (what === 'lose-answer') {
        // The server has acted; its answer never arrives.
        ur.resume()
        ur.on('end', () => res.socket?.destroy())
        return
      }
      res.writeHead(ur.statusCode!, ur.headers)
      const limit = what?.cutAfter ?? Infinity
      let sent = 0
      ur.on('data', (c: Buffer) => {
        if (sent + c.length > limit) {
          res.write(c.subarray(0, limit - sent))
          ur.destroy()
          res.destroy()
          return
        }
        sent += c.length
        res.write(c)
      })
      ur.on('end', () => res.end())
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => proxy.close(() => resolve())))
  proxy.on('connection', (socket) => t.teardown(() => socket.destroy()))
  return `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
}
