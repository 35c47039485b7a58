#!/usr/bin/env -S sh -c 'd="$(dirname "$(realpath "$0")")/.."; exec node --max-semi-space-size=2 --import "$d/node_modules/tsx/dist/loader.mjs" "$d/node_modules/zx/build/cli.js" "$(realpath "$0")" "$@"'
// Benchmark of backups to and restores from an S3 bucket (the local Ceph RGW of
// test/s3/server.sh) against the AWS SDK doing the bare transfer of the same
// bytes with the same client settings, in the same run, as throughput ratios
// (anchor seconds / ours: 1 means as fast as the bare transfer), with ours'
// peak memory. Run: npm run bench:s3 -- --help
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { CreateBucketCommand, DeleteBucketCommand, ListBucketsCommand } from '@aws-sdk/client-s3'
import { $ } from 'zx'
import { parseArgs } from '../lib/cli/args.ts'
import { runtimeError, usageError } from '../lib/cli/errors.ts'
import { formatBytes, type Reporter } from '../lib/cli/report.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { onInterrupt } from '../lib/cli/signals.ts'
import { PART_SIZE, QUEUE_SIZE, S3Store } from '../lib/storage/s3.ts'
import { s3ClientFromEnv, s3Error, type S3Connection } from '../lib/storage/s3-client.ts'
import { benchSize, median, tail, timeCommand, type Timed } from './bench-timing.ts'

const USAGE = `Usage: scripts/bench-s3.ts [--megabytes N] [--runs N] [--json]

Against the local Ceph RGW of test/s3/server.sh (started if it does not answer;
its settings from \`test/s3/server.sh env\`, never the caller's AWS_* variables),
in a fresh bucket: builds, untimed, a tree holding one file of N MiB (default
1024) of random bytes and a local artifact of it (backup.sh --path TREE), then
times, median of --runs (default 1; each pair below swaps order from run to
run, so an even number is fairest), with GNU time:
  upload    backup.sh --output s3://BUCKET/pN --path TREE  (tar | zstd | SHA-256 |
            multipart upload, end to end)
                 vs  tar -cf - TREE | zstd -T0 -3 | node + @aws-sdk/lib-storage
                     Upload of its stdin: the plain tools making and sending the
                     same bytes (same client settings as lib/storage/s3-client.ts,
                     PART_SIZE and QUEUE_SIZE of lib/storage/s3.ts: ${PART_SIZE / 1024 / 1024} MiB, ${QUEUE_SIZE})
  copy      backup.sh --output DIR --path TREE --copy-to s3://BUCKET/cN: the upload of
            the finished artifact, hashed on the way (its copies[].uploadMs)
                 vs  the same Upload of the finished files.tar.zst alone, timed
                     around upload.done() in its process (start-up left out of both)
  transfer  the same backup.sh run  vs  the same Upload of the finished
            files.tar.zst alone (no tar, no zstd): shown, no target; on 2
            cores it also counts the CPU that tar, zstd and the hashes take
            from the server
  download  BACKUP_BASE=s3://BUCKET/pN restore.sh --dry-run NAME  (download into
            RESTORE_STAGING_DIR, verify every SHA-256; a scratch copy, not fsynced)
                 vs  node + GetObject of the same objects, streamed to local files
Ratios are throughput, anchor seconds / ours: the target is >= 0.9 for upload,
copy and download, each side timed inside its process around the work (ours:
its --json durationMs; the anchors: around their SDK calls), so that start-up
(node, zx, the SDK: ours takes ~0.25 s more) counts in neither; the same steps
timed as whole processes are shown as upload/e2e and download/e2e;
peak RSS (the largest process of ours, as GNU time reports it) has the target
< 150 MB. The bucket, the tree and every work file are removed at the end, also
on failure or interrupt; the server is left running (test/s3/server.sh stop).

  --megabytes N   size of the random file (default 1024; at least 16). The RGW
                  holds its data in RAM, CONDUCTOR_S3_MEMSTORE_BYTES (default
                  4 GiB): a run needs about twice N there
  --runs N        runs per step, the median is reported (default 1)
  --json          one JSON document on stdout
  -h, --help      this text`

const here = fileURLToPath(new URL('.', import.meta.url))
const root = join(here, '..')
const SERVER = join(root, 'test', 's3', 'server.sh')

/**
 * The local test RGW frees deleted data only when its garbage collector
 * runs, and keeps it in RAM until then: a few 1 GiB uploads in a row
 * filled its OSD and every later write hung. Ask it to collect now; on
 * any other server this does nothing.
 */
const reclaim = () => $({ quiet: true, nothrow: true })`${SERVER} gc`
const MiB = 1024 * 1024
const RSS_TARGET_BYTES = 150_000_000
const THROUGHPUT_TARGET = 0.9
/** Buckets this benchmark creates; one left behind by a killed run is removed by a later run after a day. */
const BUCKET_PREFIX = 'cdr-bench-s3-'
const LEFTOVER_AGE_MS = 24 * 3600_000
const CLEANUP_TIMEOUT_MS = 60_000
/** A timed step that takes longer than this (at least 5 min, or 1 MiB/s) is stopped: a full or stalled RGW hangs instead of failing. */
const stepLimitSeconds = (megabytes: number) => Math.max(300, megabytes)

/**
 * The anchors: the bare SDK transfer, written to the work directory and run
 * by plain node. The client is configured as lib/storage/s3-client.ts does
 * it (path style for an endpoint, checksums only when required, the same
 * timeouts), without our Content-MD5 middleware or our hashing.
 */
const ANCHOR = `// bench-s3 anchor: node anchor.mjs put BUCKET KEY FILE|- PART_SIZE QUEUE_SIZE | get BUCKET PREFIX DIR
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { pipeline } from 'node:stream/promises'
const require = createRequire(process.env.CDR_ROOT + '/package.json')
const { S3Client, GetObjectCommand, ListObjectsV2Command } = require('@aws-sdk/client-s3')
const { Upload } = require('@aws-sdk/lib-storage')
const client = new S3Client({
  region: process.env.AWS_REGION,
  endpoint: process.env.AWS_ENDPOINT_URL,
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
  requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
})
const [mode, Bucket, key, local, partSize, queueSize] = process.argv.slice(2)
if (mode === 'put') {
  const upload = new Upload({
    client,
    // '-': stdin, the end of a tar | zstd pipe.
    params: { Bucket, Key: key, Body: local === '-' ? process.stdin : createReadStream(local), ContentType: 'application/octet-stream' },
    partSize: Number(partSize),
    queueSize: Number(queueSize),
    leavePartsOnError: false,
  })
  const started = Date.now()
  await upload.done()
  // The upload alone, as the copy step of ours reports its own: node's and the SDK's start-up left out of both.
  process.stdout.write(JSON.stringify({ uploadMs: Date.now() - started }) + '\\n')
} else if (mode === 'get') {
  const started = Date.now()
  let token
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket, Prefix: key, ContinuationToken: token }))
    for (const o of page.Contents ?? []) {
      const path = join(local, o.Key.slice(key.length))
      await mkdir(dirname(path), { recursive: true })
      const got = await client.send(new GetObjectCommand({ Bucket, Key: o.Key }))
      await pipeline(got.Body, createWriteStream(path))
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined
  } while (token)
  process.stdout.write(JSON.stringify({ downloadMs: Date.now() - started }) + '\\n')
} else {
  throw new Error('usage: put|get')
}
`

async function writeRandom(path: string, size: number): Promise<void> {
  const out = createWriteStream(path)
  for (let left = size; left > 0; ) {
    const n = Math.min(4 * MiB, left)
    if (!out.write(randomBytes(n))) await new Promise<void>((r) => out.once('drain', () => r()))
    left -= n
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
}

/** The test server's settings, from `server.sh env`: the lines an operator would eval. */
async function serverEnv(): Promise<Record<string, string>> {
  const text = (await $({ quiet: true })`bash ${SERVER} env`).stdout
  const env: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line)
    if (m) env[m[1]!] = m[2]!
  }
  return env
}

async function answers(conn: S3Connection): Promise<boolean> {
  try {
    await conn.client.send(new ListBucketsCommand({}), { abortSignal: AbortSignal.timeout(5000) })
    return true
  } catch {
    return false
  }
}

/** Starts the local RGW unless it answers; a clear failure when it cannot be started. */
async function ensureServer(env: Record<string, string>, reporter: Reporter): Promise<void> {
  if (await answers(s3ClientFromEnv({ ...env, AWS_MAX_ATTEMPTS: '1' }))) return
  reporter.line(`the local S3 server does not answer on ${env.AWS_ENDPOINT_URL}: starting it (test/s3/server.sh start, about a minute)`)
  const p = await $({ quiet: true, nothrow: true })`bash ${SERVER} start`
  if (p.exitCode !== 0 || !(await answers(s3ClientFromEnv({ ...env, AWS_MAX_ATTEMPTS: '1' })))) {
    throw runtimeError(
      `the local S3 server (Ceph RGW) is not running and could not be started: ${tail(p.stderr || p.stdout)}`,
      'run test/s3/server.sh start and read its message (it needs the Debian packages radosgw ceph-mon ceph-osd), then run the benchmark again',
    )
  }
  reporter.line('started; it stays running after the benchmark (test/s3/server.sh stop)')
}

/** Aborts every unfinished upload, deletes every object, then the bucket. A bucket already gone is fine. */
async function emptyAndDelete(conn: S3Connection, bucket: string): Promise<void> {
  const store = new S3Store(conn, { bucket, prefix: '', url: `s3://${bucket}` })
  try {
    for (let attempt = 1; ; attempt++) {
      for (const upload of await store.listUploads('')) await store.abortUpload(upload)
      await store.deleteKeys((await store.listObjects('')).map((o) => o.key))
      try {
        await conn.client.send(new DeleteBucketCommand({ Bucket: bucket }))
        return
      } catch (err) {
        // A child still finishing an upload (an interrupt) may have added an object meanwhile.
        if ((err as { name?: string }).name !== 'BucketNotEmpty' || attempt >= 5) throw err
        await new Promise((r) => setTimeout(r, 500))
      }
    }
  } catch (err) {
    if ((err as { name?: string }).name === 'NoSuchBucket') return
    throw s3Error(err, { conn, bucket, url: `s3://${bucket}` })
  }
}

/** Buckets of earlier runs that were killed outright (SIGKILL), older than a day. */
async function removeLeftovers(conn: S3Connection, reporter: Reporter): Promise<void> {
  const list = await conn.client.send(new ListBucketsCommand({}))
  for (const b of list.Buckets ?? []) {
    if (!b.Name?.startsWith(BUCKET_PREFIX) || !b.CreationDate || Date.now() - b.CreationDate.getTime() < LEFTOVER_AGE_MS) continue
    reporter.line(`removing bucket ${b.Name}, left by an earlier benchmark run on ${b.CreationDate.toISOString()}`)
    await emptyAndDelete(conn, b.Name)
  }
}

/** Our own descendants (the timed commands and their children), deepest last. */
async function descendants(): Promise<number[]> {
  const p = await $({ quiet: true, nothrow: true })`ps -e -o pid=,ppid=`
  const children = new Map<number, number[]>()
  for (const line of p.stdout.split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number)
    if (!pid || ppid === undefined) continue
    children.set(ppid, [...(children.get(ppid) ?? []), pid])
  }
  const out: number[] = []
  const walk = (pid: number) => {
    for (const c of children.get(pid) ?? []) {
      out.push(c)
      walk(c)
    }
  }
  walk(process.pid)
  return out
}

/** Sends `signal` (0: only asks); false when the process is gone. */
const signal = (pid: number, sig: NodeJS.Signals | 0) => {
  try {
    process.kill(pid, sig)
    return true
  } catch {
    return false
  }
}
const alive = (pid: number) => signal(pid, 0)

/**
 * On an interrupt: a Ctrl-C reached the timed command too and it is cleaning
 * up after itself; give it a moment, then stop what is left (a SIGTERM sent
 * to the benchmark alone), so that nothing writes to the bucket while it is
 * emptied.
 */
async function stopChildren(): Promise<void> {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
  let pids = await descendants()
  for (let i = 0; i < 20 && pids.some(alive); i++) await sleep(150)
  pids = pids.filter(alive)
  for (const pid of pids) signal(pid, 'SIGTERM')
  for (let i = 0; i < 20 && pids.some(alive); i++) await sleep(150)
  for (const pid of pids) signal(pid, 'SIGKILL')
}

const mb = (bytes: number) => `${Math.round(bytes / 1e6)} MB`

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, reporter }) => {
  const { flags, positional } = parseArgs(argv, { boolean: ['json', 'help'], string: ['megabytes', 'runs'], alias: { h: 'help' } })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 0) throw usageError(`unexpected argument ${positional[0]}`)
  const { megabytes, runs } = benchSize(flags)

  // The children see the local server's settings only, none of the caller's AWS_* or DR switches.
  const s3env = await serverEnv()
  const env: Record<string, string> = { NO_COLOR: '1' }
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(AWS_|S3_|BACKUP_|RESTORE_|INCLUDE_POSTGRES$|ENABLE_POSTGRES_DUMP$|DR_)/.test(k)) continue
    env[k] = v
  }
  Object.assign(env, s3env, { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', CDR_ROOT: root })
  await ensureServer(s3env, reporter)
  const conn = s3ClientFromEnv(s3env)
  await removeLeftovers(conn, reporter)
  const memstore = Number(process.env.CONDUCTOR_S3_MEMSTORE_BYTES ?? 4 * 1024 * MiB)
  if (2 * megabytes * MiB > memstore * 0.9) {
    reporter.warn(`--megabytes ${megabytes} needs about ${formatBytes(2 * megabytes * MiB)} in the RGW's RAM store (CONDUCTOR_S3_MEMSTORE_BYTES, ${formatBytes(memstore)}): uploads may fail`)
  }

  const work = await mkdtemp(join(tmpdir(), 'cdr-bench-s3-'))
  const bucket = `${BUCKET_PREFIX}${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`
  let bucketMade = false
  // Local files first: a server that hangs must not keep a GiB in the temp dir.
  const cleanup = async () => {
    await rm(work, { recursive: true, force: true })
    if (!bucketMade) return
    let timer: NodeJS.Timeout | undefined
    const gaveUp = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), CLEANUP_TIMEOUT_MS)))
    const done = await Promise.race([emptyAndDelete(conn, bucket).then(() => 'done' as const), gaveUp]).finally(() => clearTimeout(timer))
    if (done === 'timeout') {
      throw runtimeError(`bucket ${bucket} could not be emptied within ${CLEANUP_TIMEOUT_MS / 1000} s`, 'check the server (test/s3/server.sh); a later benchmark run removes the bucket after a day')
    }
    bucketMade = false
  }
  // Set on an interrupt: the main flow, which goes on until the process exits, starts no further step.
  let stopping = false
  const unregister = onInterrupt(async () => {
    stopping = true
    await stopChildren()
    await cleanup()
  })
  try {
    try {
      await conn.client.send(new CreateBucketCommand({ Bucket: bucket }))
    } catch (err) {
      throw s3Error(err, { conn, bucket, url: `s3://${bucket}` })
    }
    bucketMade = true
    const store = new S3Store(conn, { bucket, prefix: '', url: `s3://${bucket}` })
    const anchor = join(work, 'anchor.mjs')
    await writeFile(anchor, ANCHOR)
    const stage = join(work, 'stage')
    await mkdir(stage)

    // Every command, timed or not, runs under GNU time and `timeout`; none starts after an interrupt.
    let seq = 0
    const t: Record<string, Timed[]> = {}
    const limit = stepLimitSeconds(megabytes)
    const step = async (key: string, cmd: string[], extra: Record<string, string> = {}): Promise<Timed> => {
      if (stopping) throw runtimeError('interrupted')
      try {
        return await timeCommand(work, ++seq, key, ['timeout', '-k', '10', String(limit), ...cmd], { ...env, ...extra })
      } catch (err) {
        if (!/\(exit 124\)/.test((err as Error).message)) throw err
        throw runtimeError(`bench step "${key}" did not finish within ${limit} s`, 'the RGW may be full or stalled: check test/s3/server.sh and its log (/tmp/conductor-s3/log), then run again')
      }
    }
    const time = async (key: string, cmd: string[], extra: Record<string, string> = {}) => {
      const r = await step(key, cmd, extra)
      ;(t[key] ??= []).push(r)
      return r
    }

    // Untimed: the tree (one file of random bytes, which zstd stores as it is) and a local artifact of it.
    const tree = join(work, 'tree')
    await mkdir(tree)
    reporter.line(`writing ${megabytes} MiB of random bytes into ${tree}`)
    await writeRandom(join(tree, 'random.bin'), megabytes * MiB)
    const local = join(work, 'local')
    const built = await step('local artifact', [join(here, 'backup.sh'), '--output', local, '--path', tree, '--json'])
    const localName = String(JSON.parse(built.stdout).artifact)
    const archive = join(local, localName, 'files.tar.zst')
    const archiveBytes = (await stat(archive)).size
    // Untimed warm-up: a small backup to the bucket and its download load and compile the S3 code
    // paths once, and RGW creates the new bucket's index, so no timed step pays for that.
    await mkdir(join(work, 'small'))
    await writeFile(join(work, 'small', 'a.txt'), 'warm-up\n')
    const warm = JSON.parse((await step('warm-up backup', [join(here, 'backup.sh'), '--output', `s3://${bucket}/warm-up`, '--path', join(work, 'small'), '--json'])).stdout)
    await step('warm-up restore', [join(here, 'restore.sh'), '--dry-run', '--json', String(warm.artifact)], {
      BACKUP_BASE: `s3://${bucket}/warm-up`,
      RESTORE_STAGING_DIR: stage,
    })
    await store.deleteKeys((await store.listObjects('warm-up/')).map((o) => o.key))

    reporter.heading(`S3 benchmark on ${s3env.AWS_ENDPOINT_URL} (bucket ${bucket}): ${formatBytes(megabytes * MiB)} of random bytes, ${formatBytes(archiveBytes)} stored, parts of ${formatBytes(PART_SIZE)}, ${QUEUE_SIZE} in flight (median of ${runs})`)
    let artifactBytes = 0
    /** Seconds the processes measured themselves, around the upload alone. */
    const inProcess: Record<string, number[]> = {}
    for (let i = 0; i < runs; i++) {
      const prefix = `p${i}`
      // Every other run the pairs swap places: whichever goes first meets the RGW right after a
      // gigabyte was written and deleted, and a fixed order would charge that to one side.
      const inOrder = <T,>(pair: [T, T]): [T, T] => (i % 2 === 0 ? pair : [pair[1], pair[0]])
      reporter.line(`run ${i + 1}/${runs}: uploads`)
      const uploadAnchor = async () => {
        const bare = await time('upload:anchor', ['node', anchor, 'put', bucket, `anchor${i}/files.tar.zst`, archive, String(PART_SIZE), String(QUEUE_SIZE)])
        ;(inProcess['upload:anchor'] ??= []).push(Number(JSON.parse(bare.stdout).uploadMs) / 1000)
        // The anchors' copies are not needed again: the RGW keeps everything in RAM.
        await store.deleteKeys([`anchor${i}/files.tar.zst`])
        await reclaim()
      }
      const uploadPipeline = async () => {
        const piped = await time('upload:pipeline', [
          'bash',
          '-c',
          'set -o pipefail; tar -cf - -C "$1" tree | zstd -T0 -3 -q | node "$2" put "$3" "$4" - "$5" "$6"',
          'upload-pipeline',
          work,
          anchor,
          bucket,
          `pipe${i}/files.tar.zst`,
          String(PART_SIZE),
          String(QUEUE_SIZE),
        ])
        ;(inProcess['upload:pipeline'] ??= []).push(Number(JSON.parse(piped.stdout).uploadMs) / 1000)
        await store.deleteKeys([`pipe${i}/files.tar.zst`])
        await reclaim()
      }
      // The literal anchor of the issue: ours uploading a finished artifact (backup.sh --copy-to) vs
      // the SDK uploading the same file, each timed around its upload inside the process.
      const copyOurs = async () => {
        const copyDir = join(work, `copy${i}`)
        const copied = JSON.parse((await time('copy:ours', [join(here, 'backup.sh'), '--output', copyDir, '--path', tree, '--copy-to', `s3://${bucket}/c${i}`, '--json'])).stdout)
        ;(inProcess['copy:ours'] ??= []).push(Number(copied.copies[0].uploadMs) / 1000)
        await store.deleteKeys((await store.listObjects(`c${i}/`)).map((o) => o.key))
        await rm(copyDir, { recursive: true, force: true })
        await reclaim()
      }
      const uploadOurs = async () => {
        const up = await time('upload:ours', [join(here, 'backup.sh'), '--output', `s3://${bucket}/up${i}`, '--path', tree, '--json'])
        const doc = JSON.parse(up.stdout)
        ;(inProcess['upload:ours'] ??= []).push(Number(doc.durationMs) / 1000)
        // Gone again like every other step's upload, so that no step runs beside a gigabyte the others do not have.
        await store.deleteKeys((await store.listObjects(`up${i}/`)).map((o) => o.key))
        await reclaim()
      }
      for (const [first, second] of inOrder([
        [uploadAnchor, copyOurs],
        [uploadPipeline, uploadOurs],
      ])) {
        for (const run of inOrder([first, second])) await run()
      }
      // Untimed: the artifact both downloads fetch.
      const name = String(JSON.parse((await step('artifact to download', [join(here, 'backup.sh'), '--output', `s3://${bucket}/${prefix}`, '--path', tree, '--json'])).stdout).artifact)
      const objects = await store.listObjects(`${prefix}/${name}/`)
      artifactBytes = objects.reduce((sum, o) => sum + o.size, 0)
      reporter.line(`run ${i + 1}/${runs}: downloads`)
      const downloadAnchor = async () => {
        const got = join(work, `get${i}`)
        const bare = await time('download:anchor', ['node', anchor, 'get', bucket, `${prefix}/${name}/`, got])
        ;(inProcess['download:anchor'] ??= []).push(Number(JSON.parse(bare.stdout).downloadMs) / 1000)
        const fetched = (await readdir(got)).length
        if (fetched !== objects.length) throw runtimeError(`the download anchor fetched ${fetched} of ${objects.length} objects`)
        await rm(got, { recursive: true, force: true })
      }
      const downloadOurs = async () => {
        const got = await time('download:ours', [join(here, 'restore.sh'), '--dry-run', '--json', name], { BACKUP_BASE: `s3://${bucket}/${prefix}`, RESTORE_STAGING_DIR: stage })
        ;(inProcess['download:ours'] ??= []).push(Number(JSON.parse(got.stdout).durationMs) / 1000)
      }
      for (const run of inOrder([downloadAnchor, downloadOurs])) await run()
      await store.deleteKeys(objects.map((o) => o.key))
      await reclaim()
    }

    const sec = (k: string) => median(t[k]!.map((x) => x.seconds))
    const rss = (k: string) => Math.max(...t[k]!.map((x) => x.maxRssKiB)) * 1024
    const rows = [
      // Throughput: each side timed inside its process, around the work (ours: its durationMs; the
      // anchors: around the SDK calls), so node's, zx's and the SDK's start-up (ours ~0.25 s more)
      // count in neither. The end-to-end rows below time the whole processes.
      { step: 'upload', ours: 'upload:ours', anchor: 'upload:pipeline', target: THROUGHPUT_TARGET as number | null, inProcess: true },
      { step: 'download', ours: 'download:ours', anchor: 'download:anchor', target: THROUGHPUT_TARGET, inProcess: true },
      { step: 'copy', ours: 'copy:ours', anchor: 'upload:anchor', target: THROUGHPUT_TARGET, inProcess: true },
      { step: 'upload/e2e', ours: 'upload:ours', anchor: 'upload:pipeline', target: null, inProcess: false },
      { step: 'download/e2e', ours: 'download:ours', anchor: 'download:anchor', target: null, inProcess: false },
      { step: 'transfer', ours: 'upload:ours', anchor: 'upload:anchor', target: null, inProcess: false },
    ].map((r) => ({ ...r, oursS: r.inProcess ? median(inProcess[r.ours]!) : sec(r.ours), anchorS: r.inProcess ? median(inProcess[r.anchor]!) : sec(r.anchor) })).map((r) => ({
      ...r,
      throughput: r.anchorS / r.oursS,
      oursMiBs: archiveBytes / MiB / r.oursS,
      anchorMiBs: archiveBytes / MiB / r.anchorS,
      oursRss: rss(r.ours),
      anchorRss: rss(r.anchor),
      rssTarget: RSS_TARGET_BYTES,
    }))
    reporter.line('')
    reporter.line(`${'step'.padEnd(12)} ${'ours s'.padStart(7)} ${'anchor s'.padStart(9)} ${'throughput'.padStart(10)} ${'target'.padStart(7)}  ${'peak RSS (ours)'.padStart(15)}  ${'target'.padStart(7)}`)
    for (const r of rows) {
      const marks = [r.target === null || r.throughput >= r.target ? '' : '<- below target', r.oursRss < r.rssTarget ? '' : '<- RSS over target'].filter(Boolean).join(', ')
      reporter.line(
        `${r.step.padEnd(12)} ${r.oursS.toFixed(2).padStart(7)} ${r.anchorS.toFixed(2).padStart(9)} ${r.throughput.toFixed(2).padStart(10)} ${(r.target === null ? '-' : `>=${r.target}`).padStart(7)}  ${mb(r.oursRss).padStart(15)}  ${`<${mb(r.rssTarget)}`.padStart(7)}${marks ? `  ${marks}` : ''}`,
      )
    }
    reporter.line('throughput = anchor seconds / ours: 1 means as fast as the anchor, on the same bytes:')
    reporter.line('  upload: tar | zstd -T0 -3 | SDK Upload of stdin; download: SDK GetObject to files; transfer: SDK Upload of the finished file')
    reporter.line('  copy: backup.sh --copy-to uploading the finished artifact (hashed on the way) vs SDK Upload of its files.tar.zst')
    reporter.line('  upload, download, copy: each side timed inside its process, start-up left out; */e2e and transfer: whole processes')
    for (const r of rows) {
      reporter.line(`${r.step}: ours ${r.oursMiBs.toFixed(0)} MiB/s, anchor ${r.anchorMiBs.toFixed(0)} MiB/s (peak RSS ${mb(r.anchorRss)})`)
    }
    reporter.line(`stored: files.tar.zst ${formatBytes(archiveBytes)}, whole artifact ${formatBytes(artifactBytes)}; ours upload includes tar | zstd | SHA-256, ours download the SHA-256 check`)
    reporter.result(
      { endpoint: s3env.AWS_ENDPOINT_URL, bucket, megabytes, runs, partSize: PART_SIZE, queueSize: QUEUE_SIZE, archiveBytes, artifactBytes, results: rows },
      's3 benchmark complete',
    )
  } finally {
    unregister()
    await cleanup()
  }
})
