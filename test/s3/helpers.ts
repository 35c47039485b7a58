import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
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
