// The S3 store against a real S3 server (Ceph RGW: test/s3/server.sh start).
import { createHash, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import {
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
  type S3Client,
  type ServiceInputTypes,
  type ServiceOutputTypes,
} from '@aws-sdk/client-s3'
import t from 'tap'
import { DrError } from '../lib/cli/errors.ts'
import { runCleanups } from '../lib/cli/signals.ts'
import { parseLocation } from '../lib/storage/location.ts'
import { openStore } from '../lib/storage/open.ts'
import type { BuildMiddleware, FinalizeRequestMiddleware } from '@smithy/types'
import { CLAIM_FILE, PART_SIZE, S3Store } from '../lib/storage/s3.ts'
import { s3ClientFromEnv } from '../lib/storage/s3-client.ts'
import { s3Fixture } from './s3/helpers.ts'

const MiB = 1024 * 1024
const NAME = 'conductor-backup-20240315T120000Z'
const OLDER = 'conductor-backup-20240314T120000Z'

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

/** What a backup publishes: a valid formatVersion 2 manifest listing `files`, and its sidecar. */
function manifestFor(name: string, files: Record<string, Buffer>): { manifest: string; sum: string } {
  const manifest =
    JSON.stringify(
      {
        format: 'conductor-backup-manifest',
        formatVersion: 2,
        tool: { name: 'conductor-dr', version: 'test' },
        artifact: name,
        createdAt: '2024-03-15T12:00:00.000Z',
        completedAt: '2024-03-15T12:00:05.000Z',
        hostname: 'test',
        postgres: {
          status: 'dumped',
          file: 'postgres.dump.zst',
          format: 'custom',
          compression: 'zstd',
          database: 'conductor',
          encoding: 'UTF8',
          collate: 'C',
          ctype: 'C',
          serverVersion: '15.0',
          pgDumpVersion: '15.0',
        },
        files: Object.entries(files).map(([path, data]) => ({ path, size: data.length, sha256: sha256(data) })),
      },
      null,
      2,
    ) + '\n'
  return { manifest, sum: `${sha256(manifest)}  manifest.json\n` }
}

/** A stream that hands over `total` bytes in 64 KiB chunks, never holding them all. */
function generated(total: number, seed: number): { stream: Readable; digest: () => string } {
  const hash = createHash('sha256')
  let sent = 0
  let n = seed
  const stream = new Readable({
    read() {
      if (sent >= total) return void this.push(null)
      const chunk = Buffer.alloc(Math.min(64 * 1024, total - sent))
      for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((n = (Math.imul(n, 1664525) + 1013904223) >>> 0), i)
      hash.update(chunk)
      sent += chunk.length
      this.push(chunk)
    },
  })
  return { stream, digest: () => hash.digest('hex') }
}

/** A source that sends `bytes` and then waits, as a slow pg_dump would, until it is ended or destroyed. */
function stalling(bytes: number): Readable {
  const stream = new Readable({ read() {} })
  stream.push(randomBytes(bytes))
  return stream
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function getBytes(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  return Buffer.from(await got.Body!.transformToByteArray())
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection')
}

/** Everything an artifact left behind: object keys and unfinished uploads. */
async function leftovers(store: S3Store, name: string): Promise<{ objects: string[]; uploads: string[] }> {
  const key = store.artifactKey(name)
  return {
    // The name's claim (CLAIM_FILE) is the writer's until publish or discard; checked on its own where it matters.
    objects: (await store.listObjects(key)).map((o) => o.key.slice(key.length)).filter((k) => k !== CLAIM_FILE),
    uploads: (await store.listUploads(key)).map((u) => u.key.slice(key.length)),
  }
}

t.test('parseLocation', async (t) => {
  const ok: [string, unknown][] = [
    ['/var/backups', { kind: 'local', path: '/var/backups' }],
    ['relative/dir', { kind: 'local', path: 'relative/dir' }],
    ['./s3:odd', { kind: 'local', path: './s3:odd' }],
    ['s3://bucket', { kind: 's3', bucket: 'bucket', prefix: '', url: 's3://bucket' }],
    ['s3://bucket/', { kind: 's3', bucket: 'bucket', prefix: '', url: 's3://bucket' }],
    ['s3://my.bucket-1/some/prefix', { kind: 's3', bucket: 'my.bucket-1', prefix: 'some/prefix', url: 's3://my.bucket-1/some/prefix' }],
    ['s3://bucket//lead/trail//', { kind: 's3', bucket: 'bucket', prefix: 'lead/trail', url: 's3://bucket/lead/trail' }],
    ['S3://bucket/x', { kind: 's3', bucket: 'bucket', prefix: 'x', url: 's3://bucket/x' }],
    ['s3://bucket/a%20b', { kind: 's3', bucket: 'bucket', prefix: 'a%20b', url: 's3://bucket/a%20b' }],
  ]
  for (const [text, want] of ok) t.same(parseLocation(text, '--output'), want, text)

  const bad: [string, RegExp][] = [
    ['', /--output is empty/],
    ['s3://', /names no bucket/],
    ['s3:///prefix', /names no bucket/],
    ['s3://Bucket/x', /lower-case/],
    ['s3://b_ucket', /lower-case/],
    ['s3://ab', /3 to 63/],
    ['s3://' + 'a'.repeat(64), /3 to 63/],
    ['s3://-bucket', /begin and end/],
    ['s3://bucket-', /begin and end/],
    ['s3://my..bucket', /two dots/],
    ['s3://192.168.1.1', /IP address/],
    ['s3://xn--bucket', /xn--/],
    ['s3://bucket/a/../b', /\.\. segment/],
    ['s3://bucket/./b', /\.\. segment/],
    ['s3://bucket/a//b', /empty path segment/],
    ['s3://bucket/a\nb', /control character/],
    ['s3://bucket/a\u0000b', /control character/],
    ['s3://bucket/' + 'p'.repeat(901), /longer than 900/],
    ['s3:bucket/x', /neither a local path nor an S3 location/],
    ['http://example.com/x', /unsupported scheme http:\/\//],
    ['https://bucket.s3.amazonaws.com', /unsupported scheme https:\/\//],
    ['gs://bucket/x', /unsupported scheme gs:\/\//],
    ['file:///var/backups', /unsupported scheme file:\/\//],
    ['/tmp/a\u0000b', /NUL byte/],
    [' s3://bucket/p', /has spaces around it/],
    ['s3://bucket/p ', /has spaces around it/],
    ['\ts3:bucket', /has spaces around it/],
  ]
  for (const [text, want] of bad) {
    const shown = JSON.stringify(text).slice(0, 50)
    let err: unknown
    try {
      parseLocation(text, '--output')
    } catch (e) {
      err = e
    }
    t.ok(err instanceof DrError, `${shown} is refused`)
    if (!(err instanceof DrError)) continue
    t.equal(err.exitCode, 2, `${shown} is a usage error`)
    t.match(err.line, want, shown)
    t.notMatch(err.line, /\n/, 'one line')
  }
  // The refused value is named in the message, escaped.
  t.throws(() => parseLocation('gs://bucket/x', 'BACKUP_BASE'), { message: /BACKUP_BASE 'gs:\/\/bucket\/x'/ })
})

t.test('client settings from the environment', async (t) => {
  const kind = (env: NodeJS.ProcessEnv, upload = false) => {
    try {
      s3ClientFromEnv(env, { upload })
      return 'ok'
    } catch (err) {
      return err instanceof DrError ? `${err.exitCode}: ${err.line}` : String(err)
    }
  }
  t.match(kind({ AWS_ACCESS_KEY_ID: 'a' }), /^2: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not/)
  t.match(kind({ AWS_SECRET_ACCESS_KEY: 'topsecret' }), /^2: AWS_SECRET_ACCESS_KEY is set/)
  t.notMatch(kind({ AWS_SECRET_ACCESS_KEY: 'topsecret' }), /topsecret/)
  t.match(kind({ AWS_ENDPOINT_URL: 'ftp://x' }), /^2: AWS_ENDPOINT_URL must be an http/)
  t.match(kind({ AWS_ENDPOINT_URL: 'http://user:hunter2@x' }), /^2: AWS_ENDPOINT_URL must not hold credentials/)
  t.notMatch(kind({ AWS_ENDPOINT_URL: 'http://user:hunter2@x' }), /hunter2/)
  t.match(kind({ S3_FORCE_PATH_STYLE: 'maybe' }), /^2: S3_FORCE_PATH_STYLE must be true or false/)
  t.match(kind({ S3_CONTENT_MD5: 'sometimes' }, true), /^2: S3_CONTENT_MD5 must be true or false/)
  for (const bad of ['4MiB', '5GiB', '6GiB', '16KB', '-8', 'lots', '8.5MiB']) t.match(kind({ S3_PART_SIZE: bad }, true), /^2: S3_PART_SIZE .* is not a part size from 5MiB to 4GiB/, bad)
  t.equal(s3ClientFromEnv({ S3_PART_SIZE: '64MiB' }, { upload: true }).partSize, 64 * MiB)
  t.equal(s3ClientFromEnv({ S3_PART_SIZE: '1gib' }, { upload: true }).partSize, 1024 * MiB)
  t.equal(s3ClientFromEnv({ S3_PART_SIZE: '16' }, { upload: true }).partSize, 16 * MiB, 'a plain number is MiB')
  t.equal(s3ClientFromEnv({}, { upload: true }).partSize, undefined)
  // Upload-only settings never stop a restore, a drill or a prune.
  t.equal(kind({ S3_PART_SIZE: 'lots', S3_CONTENT_MD5: 'sometimes' }), 'ok', 'ignored by a command that does not upload')
  t.equal(s3ClientFromEnv({ S3_PART_SIZE: '64MiB' }).partSize, undefined)
  t.equal(kind({ AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1', AWS_ENDPOINT_URL: 'nonsense' }), 'ok', 'the S3-specific endpoint wins')
  const conn = s3ClientFromEnv({ AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' })
  t.equal(await conn.client.config.forcePathStyle, true, 'path style with an endpoint')
  t.equal(await conn.client.config.region(), 'us-east-1')
  const off = s3ClientFromEnv({ AWS_ENDPOINT_URL: 'http://127.0.0.1:9', S3_FORCE_PATH_STYLE: 'false', AWS_REGION: 'eu-west-1' })
  t.equal(await off.client.config.forcePathStyle, false, 'S3_FORCE_PATH_STYLE=false overrides')
  t.equal(await off.client.config.region(), 'eu-west-1')
})

const fx = await s3Fixture(t)
if (fx) {
  const { bucket, client } = fx

  t.test('write, publish, list, download: a complete round trip', async (t) => {
    const store = fx.store('roundtrip')
    const dump = randomBytes(300 * 1024)
    const roles = Buffer.from('{"roles":[]}\n')
    const w = await store.create(NAME)
    t.ok(w, 'a free name')
    t.equal(w!.location, `s3://${bucket}/roundtrip/${NAME}`)
    await w!.writeFile('postgres.dump.zst', Readable.from([dump.subarray(0, 1000), dump.subarray(1000)]))
    await w!.writeFile('roles.json', Readable.from([roles]))
    const { manifest, sum } = manifestFor(NAME, { 'postgres.dump.zst': dump, 'roles.json': roles })
    await w!.publish(manifest, sum)
    await w!.discard()

    const entries = await store.list()
    t.equal(entries.length, 1)
    const [e] = entries
    t.match(e, {
      name: NAME,
      kind: 'complete',
      path: `s3://${bucket}/roundtrip/${NAME}`,
      bytes: dump.length + roles.length,
      database: 'conductor',
      problem: null,
    })
    t.equal(e!.createdAt?.toISOString(), '2024-03-15T12:00:00.000Z')
    t.ok(e!.modifiedAt instanceof Date, 'modifiedAt from the objects')
    t.equal(await store.create(NAME), null, 'the name is taken now')

    const dir = mkdtempSync(join(tmpdir(), 'cdr-s3-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const got = await store.download(NAME, join(dir, NAME))
    t.same(got.map((f) => f.path).sort(), ['manifest.json', 'manifest.json.sha256', 'postgres.dump.zst', 'roles.json'])
    t.match(
      got.find((f) => f.path === 'postgres.dump.zst'),
      { path: 'postgres.dump.zst', sha256: createHash('sha256').update(dump).digest('hex'), size: dump.length },
      'the digest of the bytes as they were written',
    )
    t.ok(readFileSync(join(dir, NAME, 'postgres.dump.zst')).equals(dump), 'the dump downloads byte for byte')
    t.equal(readFileSync(join(dir, NAME, 'manifest.json'), 'utf8'), manifest)
    t.equal(readFileSync(join(dir, NAME, 'manifest.json.sha256'), 'utf8'), sum)
    t.equal(statSync(join(dir, NAME, 'roles.json')).mode & 0o777, 0o600)
    await t.rejects(store.download(NAME, join(dir, NAME)), { message: /already exists/ }, 'never overwrites a local file')

    const read = await store.openRead(NAME, 'roles.json')
    const chunks: Buffer[] = []
    for await (const c of read) chunks.push(c as Buffer)
    t.ok(Buffer.concat(chunks).equals(roles), 'openRead streams one file')
    const viaRead = await store.read(NAME, 'manifest.json')
    let text = ''
    for await (const c of viaRead) text += c
    t.equal(text, manifest, 'read, the Store spelling')
    const missing = await rejection(store.openRead(NAME, 'nope'))
    t.equal((missing as DrError).exitCode, 4, "a missing file is the artifact's fault, as for a directory")
    t.match((missing as DrError).message, /nope is missing from the artifact/)

    const viaOpen = await openStore(parseLocation(`s3://${bucket}/roundtrip/`, '--output'), fx.env)
    t.equal(viaOpen.kind, 's3')
    t.equal(viaOpen.url, `s3://${bucket}/roundtrip`)
    t.same((await viaOpen.list()).map((x) => x.kind), ['complete'], 'openStore reaches the same artifacts')
  })

  t.test('publish never overwrites an existing manifest', async (t) => {
    const store = fx.store('conflict')
    const w = await store.create(NAME)
    await w!.writeFile('data.bin', Readable.from([Buffer.from('mine')]))
    // Another run publishes the same name meanwhile.
    const theirs = Buffer.from('{"theirs":true}\n')
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `conflict/${NAME}/manifest.json`, Body: theirs }))
    const err = await rejection(w!.publish('{"mine":true}\n', `${sha256('{"mine":true}\n')}  manifest.json\n`))
    t.ok(err instanceof DrError)
    t.equal((err as DrError).exitCode, 1)
    t.match((err as DrError).message, /already exists/)
    t.ok((await getBytes(client, bucket, `conflict/${NAME}/manifest.json`)).equals(theirs), 'their manifest is unchanged')
    await w!.discard()
    t.ok((await getBytes(client, bucket, `conflict/${NAME}/manifest.json`)).equals(theirs), 'discard leaves what may be theirs')
  })

  t.test('discard removes every object and upload; the name is free again', async (t) => {
    const store = fx.store('discard', { partSize: 5 * MiB })
    const w = await store.create(NAME)
    await w!.writeFile('small.bin', Readable.from([Buffer.from('small')]))
    await w!.writeFile('big.bin', generated(11 * MiB, 1).stream)
    t.same((await leftovers(store, NAME)).objects.sort(), ['big.bin', 'small.bin'])
    await w!.discard()
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] })
    await w!.discard()
    t.pass('discard twice is fine')
    await t.rejects(w!.writeFile('late.bin', Readable.from([Buffer.from('x')])), /discarded/)
    t.ok(await store.create(NAME), 'the name can be used again')
  })

  t.test('a source that fails mid-upload leaves nothing behind', async (t) => {
    const store = fx.store('source-fails', { partSize: 5 * MiB })
    const w = await store.create(NAME)
    const source = stalling(6 * MiB)
    const writing = rejection(w!.writeFile('postgres.dump.zst', source))
    await waitFor('the multipart upload to start', async () => (await leftovers(store, NAME)).uploads.length === 1)
    source.destroy(new Error('pg_dump exited with status 1'))
    const err = await writing
    t.equal((err as Error).message, 'pg_dump exited with status 1', "the source's own error, not an echo")
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] }, 'the multipart upload was aborted')
    await w!.discard()
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] })
  })

  // A request the server refuses part-way: one line with the documented exit code, the source stopped, nothing left.
  for (const c of [
    {
      name: 'an S3 failure mid-upload (part 2) is one line, and leaves nothing behind',
      prefix: 's3-fails',
      refuse: (command: string, input: { PartNumber?: number }) => command === 'UploadPartCommand' && input.PartNumber === 2,
      error: { message: 'We encountered an internal error.', name: 'InternalError', status: 500 },
      exitCode: 1,
      line: /InternalError, HTTP 500/,
    },
    {
      name: 'a refused CreateMultipartUpload is one line with its exit code, not an internal error',
      prefix: 'create-fails',
      refuse: (command: string) => command === 'CreateMultipartUploadCommand',
      error: { message: 'Access Denied', name: 'AccessDenied', status: 403 },
      exitCode: 3,
      line: /AccessDenied/,
    },
  ]) {
    t.test(c.name, async (t) => {
      const store = fx.store(c.prefix, { partSize: 5 * MiB })
      store.client.middlewareStack.add(
        (next, context) => async (args) => {
          if (c.refuse(context.commandName ?? '', args.input as { PartNumber?: number })) {
            throw Object.assign(new Error(c.error.message), { name: c.error.name, $metadata: { httpStatusCode: c.error.status } })
          }
          return next(args)
        },
        { step: 'initialize', name: 'refuseRequest' },
      )
      const w = await store.create(NAME)
      const source = generated(12 * MiB, 2).stream
      const err = await rejection(w!.writeFile('postgres.dump.zst', source))
      t.ok(err instanceof DrError, String(err))
      t.equal((err as DrError).exitCode, c.exitCode)
      t.match((err as DrError).line, c.line)
      t.ok(source.destroyed, 'the source was stopped')
      t.same(await leftovers(store, NAME), { objects: [], uploads: [] }, 'the upload aborted itself')
      await w!.discard()
    })
  }

  t.test('an interrupt aborts the upload in flight', async (t) => {
    const store = fx.store('interrupt', { partSize: 5 * MiB })
    const w = await store.create(NAME)
    await w!.writeFile('roles.json', Readable.from([Buffer.from('{}')]))
    const source = stalling(6 * MiB)
    const writing = rejection(w!.writeFile('postgres.dump.zst', source))
    await waitFor('the multipart upload to start', async () => (await leftovers(store, NAME)).uploads.length === 1)
    await runCleanups(20_000) // what the CLI runs on SIGINT/SIGTERM
    const err = await writing
    t.match((err as DrError).message, /was cancelled/)
    t.ok(source.destroyed, 'the source was stopped')
    t.same(await leftovers(store, NAME), { objects: ['roles.json'], uploads: [] }, 'no unfinished upload; earlier files stay for discard')
    await w!.discard()
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] })
  })

  t.test('partial and damaged artifacts are listed as such', async (t) => {
    const store = fx.store('kinds')
    const before = Date.now() - 60_000
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `kinds/${OLDER}/postgres.dump.zst`, Body: 'half' }))
    const data = Buffer.from('dump')
    const w = await store.create(NAME)
    await w!.writeFile('postgres.dump.zst', Readable.from([data]))
    const { manifest } = manifestFor(NAME, { 'postgres.dump.zst': data })
    await w!.publish(manifest, `${sha256('something else')}  manifest.json\n`)
    // A run still streaming its first file: only an unfinished upload with one part so far.
    const STREAMING = 'conductor-backup-20240313T120000Z'
    const mpu = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `kinds/${STREAMING}/postgres.dump.zst` }))
    await client.send(
      new UploadPartCommand({ Bucket: bucket, Key: `kinds/${STREAMING}/postgres.dump.zst`, UploadId: mpu.UploadId, PartNumber: 1, Body: randomBytes(5 * MiB) }),
    )
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'kinds/not-an-artifact/x', Body: 'x' }))
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'kinds/stray-file', Body: 'x' }))
    // A whole backup series under a prefix named like an artifact: damaged, never a partial that prune would empty.
    const SERIES = 'conductor-backup-20240301T000000Z'
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `kinds/${SERIES}/${NAME}/manifest.json`, Body: '{}' }))
    // A completed artifact whose manifest was lost (a half-done delete): its sidecar remains.
    const HALF = 'conductor-backup-20240302T000000Z'
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `kinds/${HALF}/manifest.json.sha256`, Body: `${sha256('x')}  manifest.json\n` }))
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: `kinds/${HALF}/postgres.dump.zst`, Body: 'dump' }))

    const entries = await store.list()
    t.same(
      entries.map((e) => [e.name, e.kind]),
      [
        [NAME, 'damaged'],
        [OLDER, 'partial'],
        [STREAMING, 'partial'],
        [HALF, 'damaged'],
        [SERIES, 'damaged'],
      ],
      'newest first; other names ignored',
    )
    t.match(entries[3]!.problem, /^manifest\.json is missing \(manifest\.json\.sha256 is there\)$/)
    t.match(entries[4]!.problem, /holds nested objects .*: not an artifact but a prefix named like one/)
    t.match(entries[0]!.problem, /does not match its checksum/)
    const partial = entries[1]!
    t.equal(partial.createdAt?.toISOString(), '2024-03-14T12:00:00.000Z', "a partial's time is its name's")
    t.ok(partial.modifiedAt && partial.modifiedAt.getTime() > before, 'modifiedAt is when it was last written')
    t.equal(await store.create(OLDER), null, 'a partial name is taken too')
    const streaming = entries[2]!
    t.ok(streaming.modifiedAt && streaming.modifiedAt.getTime() > before, 'an upload-only partial is as fresh as its last part')
    t.equal(await store.create(STREAMING), null, 'and its name is taken')
  })

  t.test('remove: manifest first, then the rest, then unfinished uploads', async (t) => {
    const store = fx.store('remove')
    const data = Buffer.from('dump')
    const w = await store.create(NAME)
    await w!.writeFile('postgres.dump.zst', Readable.from([data]))
    await w!.writeFile('roles.json', Readable.from([Buffer.from('{}')]))
    const { manifest, sum } = manifestFor(NAME, { 'postgres.dump.zst': data })
    await w!.publish(manifest, sum)
    // A killed run's leftover under the same artifact.
    await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `remove/${NAME}/extra.bin` }))

    const calls: string[] = []
    let failBatch = true
    store.client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = args.input as { Key?: string }
        if (context.commandName === 'DeleteObjectCommand') calls.push(`delete ${input.Key?.split('/').pop()}`)
        if (context.commandName === 'DeleteObjectsCommand') {
          calls.push('delete batch')
          if (failBatch) throw Object.assign(new Error('boom'), { name: 'ServiceUnavailable', $metadata: { httpStatusCode: 503 } })
        }
        if (context.commandName === 'AbortMultipartUploadCommand') calls.push('abort upload')
        return next(args)
      },
      { step: 'initialize', name: 'recordDeletes' },
    )
    const [entry] = await store.list()
    const err = await rejection(store.remove(entry!))
    t.equal((err as DrError).exitCode, 1, 'a failed batch delete is an error')
    t.match((err as DrError).line, /ServiceUnavailable, HTTP 503/)
    t.same(calls, ['delete manifest.json', 'delete manifest.json.sha256', 'delete batch'])
    t.same(
      (await store.list()).map((e) => e.kind),
      ['partial'],
      'half removed, it reads as partial, never as complete',
    )

    failBatch = false
    calls.length = 0
    await store.remove(entry!)
    t.same(calls, ['delete manifest.json', 'delete manifest.json.sha256', 'delete batch', 'abort upload'])
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] })
    t.same(await store.list(), [])
  })

  t.test('stale uploads are listed and aborted', async (t) => {
    const store = fx.store('stale')
    const made = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `stale/${NAME}/postgres.dump.zst` }))
    const stale = await store.staleUploads(0)
    t.same(
      stale.map((u) => [u.key, u.uploadId, u.artifact]),
      [[`stale/${NAME}/postgres.dump.zst`, made.UploadId, NAME]],
    )
    t.same(await store.staleUploads(3600_000), [], 'not stale yet after an hour')
    await store.abortUpload(stale[0]!)
    await store.abortUpload(stale[0]!)
    t.same(await store.staleUploads(0), [], 'aborted, twice without complaint')
  })

  t.test('wrong credentials: exit 3, one line, no secret', async (t) => {
    const secret = 'wrong-secret-0123456789-must-not-leak'
    const wrongSecret = new S3Store(s3ClientFromEnv({ ...fx.env, AWS_SECRET_ACCESS_KEY: secret }), { bucket, prefix: 'x', url: `s3://${bucket}/x` })
    const err = await rejection(wrongSecret.list())
    t.ok(err instanceof DrError, String(err))
    t.equal((err as DrError).exitCode, 3)
    t.match((err as DrError).line, /SignatureDoesNotMatch/)
    t.match((err as DrError).line, /AWS_SECRET_ACCESS_KEY/, 'names the fix')
    t.notMatch((err as DrError).line, /\n/)
    t.notOk((err as DrError).line.includes(secret), 'the secret is not in the message')
    t.notOk((err as DrError).line.includes(fx.env.AWS_SECRET_ACCESS_KEY!), 'nor the real one')

    const wrongKey = new S3Store(s3ClientFromEnv({ ...fx.env, AWS_ACCESS_KEY_ID: 'NOSUCHKEY0000000000', AWS_SESSION_TOKEN: 'token-must-not-leak' }), {
      bucket,
      prefix: '',
      url: `s3://${bucket}`,
    })
    const err2 = await rejection(wrongKey.create(NAME))
    t.equal((err2 as DrError).exitCode, 3)
    t.match((err2 as DrError).line, /does not know the access key \(InvalidAccessKeyId\)/)
    t.notOk((err2 as DrError).line.includes('token-must-not-leak'))
    t.notOk((err2 as DrError).line.includes(fx.env.AWS_SECRET_ACCESS_KEY!))
  })

  t.test('a missing bucket: exit 3 naming the bucket', async (t) => {
    const missing = `cdr-missing-${randomBytes(4).toString('hex')}`
    const store = await openStore(parseLocation(`s3://${missing}/p`, '--output'), fx.env)
    for (const op of [() => store.list(), () => store.create(NAME)]) {
      const err = await rejection(op())
      t.ok(err instanceof DrError, String(err))
      t.equal((err as DrError).exitCode, 3)
      t.match((err as DrError).line, new RegExp(`bucket '${missing}' does not exist`))
    }
  })

  t.test('an endpoint that refuses connections: exit 1 naming it', async (t) => {
    const store = await openStore(parseLocation(`s3://${bucket}`, '--output'), { ...fx.env, AWS_ENDPOINT_URL: 'http://127.0.0.1:1', AWS_MAX_ATTEMPTS: '1' })
    const err = await rejection(store.list())
    t.ok(err instanceof DrError, String(err))
    t.equal((err as DrError).exitCode, 1)
    t.match((err as DrError).line, /cannot reach the S3 endpoint http:\/\/127\.0\.0\.1:1: connection refused/)
  })

  t.test('part sizes: S3_PART_SIZE, and larger parts for an object expected to outgrow 10,000 of them', async (t) => {
    const partsOf = async (store: S3Store, file: string, expectedBytes?: number) => {
      const w = await store.create(NAME)
      await w!.writeFile(file, generated(21 * MiB, 5).stream, expectedBytes)
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `${store.prefix}/${NAME}/${file}` }))
      await w!.discard()
      t.equal(head.ContentLength, 21 * MiB)
      return /-(\d+)"$/.exec(head.ETag ?? '')?.[1] ?? 'one PUT'
    }
    const configured = new S3Store(s3ClientFromEnv({ ...fx.env, S3_PART_SIZE: '16MiB' }, { upload: true }), { bucket, prefix: 'parts16', url: `s3://${bucket}/parts16` })
    t.equal(await partsOf(configured, 'a.bin'), '2', 'S3_PART_SIZE=16MiB: 21 MiB in 2 parts')
    // 300 GiB expected: 8 MiB parts would hold only 78 GiB, so parts of 31 MiB.
    t.equal(await partsOf(fx.store('partsHint'), 'b.bin', 300 * 1024 * MiB), 'one PUT', 'a 300 GiB expectation: parts over 21 MiB')
    t.equal(await partsOf(fx.store('partsSmall'), 'c.bin', 10 * MiB), '3', 'a small expectation keeps the default 8 MiB parts')
  })

  t.test("a stream that outgrows the parts S3 allows is stopped at the limit: one line, nothing left behind", async (t) => {
    const store = fx.store('tooMany', { partSize: 5 * MiB, maxParts: 2 })
    const w = await store.create(NAME)
    const err = await rejection(w!.writeFile('big.bin', generated(11 * MiB, 6).stream))
    t.ok(err instanceof DrError, String(err))
    t.equal((err as DrError).exitCode, 1)
    t.match((err as DrError).line, /^'s3:\/\/[^']+\/tooMany\/conductor-backup-20240315T120000Z\/big\.bin' grew past 10\.0 MiB, the most S3's 2 parts of 5\.0 MiB can hold; set S3_PART_SIZE /)
    t.same((await leftovers(store, NAME)).uploads, [], 'the upload was aborted')
    await w!.discard()
    t.same(await leftovers(store, NAME), { objects: [], uploads: [] })
    // Exactly at the limit is fine.
    const w2 = await store.create(NAME)
    await w2!.writeFile('full.bin', generated(10 * MiB, 7).stream)
    await w2!.discard()
  })

  t.test('a 21 MiB stream goes up in parts and comes back byte for byte', async (t) => {
    const store = fx.store('large') // the default part size: the real path
    const { stream, digest } = generated(21 * MiB, 3)
    const w = await store.create(NAME)
    await w!.writeFile('postgres.dump.zst', stream)
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `large/${NAME}/postgres.dump.zst` }))
    t.equal(head.ContentLength, 21 * MiB)
    t.match(head.ETag, new RegExp(`-${Math.ceil((21 * MiB) / PART_SIZE)}"$`), 'a multipart object, one part per PART_SIZE')
    const sent = digest()
    const dir = mkdtempSync(join(tmpdir(), 'cdr-s3-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const { manifest, sum } = manifestFor(NAME, {})
    await w!.publish(manifest, sum)
    await store.download(NAME, dir)
    t.equal(sha256(readFileSync(join(dir, 'postgres.dump.zst'))), sent, 'byte-equal')
  })

  t.test('part boundaries: empty, exactly one part, one byte more, exactly two parts, odd chunks; byte for byte, buffers reused', async (t) => {
    const store = fx.store('edges', { partSize: 5 * MiB })
    const w = await store.create(NAME)
    const cases: Array<[string, number, number | null]> = [
      // name, size, parts in the ETag (null: a single PUT)
      ['empty.bin', 0, null],
      ['one-part.bin', 5 * MiB, null],
      ['one-more.bin', 5 * MiB + 1, 2],
      ['two-parts.bin', 10 * MiB, 2],
      ['three.bin', 10 * MiB + 12345, 3],
    ]
    for (const [file, size, parts] of cases) {
      const data = randomBytes(size)
      // Chunks that straddle part boundaries: 1 byte, then 1 MiB + 7 at a time.
      const chunks = size === 0 ? [] : [data.subarray(0, 1), ...Array.from({ length: Math.ceil((size - 1) / (MiB + 7)) }, (_, i) => data.subarray(1 + i * (MiB + 7), 1 + (i + 1) * (MiB + 7)))]
      await w!.writeFile(file, Readable.from(chunks))
      const key = `edges/${NAME}/${file}`
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))
      t.equal(head.ContentLength, size, `${file}: size`)
      t.equal(/-(\d+)"$/.exec(head.ETag ?? '')?.[1] ?? null, parts === null ? null : String(parts), `${file}: ${parts === null ? 'a single PUT' : `${parts} parts`}`)
      t.equal(sha256(await getBytes(client, bucket, key)), sha256(data), `${file}: byte-equal`)
    }
    await w!.discard()
  })

  /**
   * Damages the body of part 2 of every multipart upload on `store`'s client,
   * at `step`, and records which puts and parts carried Content-MD5.
   */
  const damagePartTwo = (store: S3Store, step: 'build' | 'finalizeRequest') => {
    const seen: string[] = []
    const middleware: BuildMiddleware<ServiceInputTypes, ServiceOutputTypes> = (next, context) => async (args) => {
        const req = args.request as { headers: Record<string, string>; body: unknown }
        if (context.commandName === 'UploadPartCommand' || context.commandName === 'PutObjectCommand') {
          seen.push(`${context.commandName} ${req.headers['content-md5'] ? 'md5' : 'none'}`)
          const input = args.input as { PartNumber?: number }
          if (input.PartNumber === 2 && req.body instanceof Uint8Array) {
            const damaged = Buffer.from(req.body)
            damaged[100] = damaged[100]! ^ 0xff
            req.body = damaged
          }
        }
        return next(args)
      }
    // The same function fits both steps; the SDK's types name each step's signature apart.
    if (step === 'build') store.client.middlewareStack.add(middleware, { step, priority: 'low', name: 'damagePartTwo' })
    else store.client.middlewareStack.add(middleware as FinalizeRequestMiddleware<ServiceInputTypes, ServiceOutputTypes>, { step, priority: 'low', name: 'damagePartTwo' })
    return seen
  }

  t.test('the signed SHA-256 guards every part: bytes changed after signing are refused', async (t) => {
    const store = fx.store('sha', { partSize: 5 * MiB })
    // After the signer: as if the bytes were damaged on the wire.
    const seen = damagePartTwo(store, 'finalizeRequest')
    const w = await store.create(NAME)
    await w!.writeFile('one.bin', Readable.from([Buffer.from('single put')]))
    const err = await rejection(w!.writeFile('two.bin', generated(11 * MiB, 4).stream))
    t.match((err as DrError).line, /XAmzContentSHA256Mismatch/, 'the server refused the damaged part')
    const puts = seen.filter((s) => s.startsWith('PutObject'))
    t.ok(puts.length >= 2 && puts.every((s) => s.endsWith('md5')), `single puts (the claim, one.bin) carry Content-MD5: ${puts.join(', ')}`)
    t.ok(seen.some((s) => s.startsWith('UploadPart')) && seen.filter((s) => s.startsWith('UploadPart')).every((s) => s.endsWith('none')), `parts do not: ${seen.join(', ')}`)
    t.same((await leftovers(store, NAME)).uploads, [], 'and the upload was aborted')
    await w!.discard()
  })

  t.test('S3_CONTENT_MD5=true: Content-MD5 on every part too, bytes changed before signing are refused', async (t) => {
    const store = new S3Store(s3ClientFromEnv({ ...fx.env, S3_CONTENT_MD5: 'true' }, { upload: true }), { bucket: fx.bucket, prefix: 'md5', url: `s3://${fx.bucket}/md5` }, { partSize: 5 * MiB })
    // After the Content-MD5 middleware, before signing: only Content-MD5 can tell.
    const seen = damagePartTwo(store, 'build')
    const w = await store.create(NAME)
    await w!.writeFile('one.bin', Readable.from([Buffer.from('single put')]))
    const err = await rejection(w!.writeFile('two.bin', generated(11 * MiB, 4).stream))
    t.match((err as DrError).line, /BadDigest/, 'the server refused the damaged part')
    t.ok(seen.length >= 3 && seen.every((s) => s.endsWith('md5')), `every put and part carried Content-MD5: ${seen.join(', ')}`)
    t.same((await leftovers(store, NAME)).uploads, [], 'and the upload was aborted')
    await w!.discard()
  })
}
