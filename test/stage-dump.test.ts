// Staging a verified dump for pg_restore --jobs: exactly the verified bytes, or nothing.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { digestBuffer } from '../lib/pipeline/checksum.ts'
import { canStage, roomToGoOn, stageDump, stagingReserve, stagingWanted, ROOM_CHECK_MS } from '../lib/postgres/stage-dump.ts'
import type { DumpSource } from '../lib/postgres/restore.ts'
import { DrError } from '../lib/cli/errors.ts'
import { pathWithWrapped, tempDir } from './helpers.ts'

const GiB = 1024 ** 3
const plenty = async () => ({ free: 100 * GiB, reserve: GiB })

/** A dump file of `plain` compressed by zstd, as a DumpSource; `tamper` changes it after its checksum was taken. */
async function sourceOf(t: Test, plain: Buffer, tamper?: (path: string) => void, damage?: (path: string) => void): Promise<{ source: DumpSource; dir: string }> {
  const dir = tempDir(t)
  const file = join(dir, 'postgres.dump.zst')
  writeFileSync(file, execFileSync('zstd', ['-q', '-c'], { input: plain, maxBuffer: 1 << 30 }))
  damage?.(file) // before the checksum: what verification cannot see
  const digest = digestBuffer(readFileSync(file))
  tamper?.(file)
  const handle = await open(file, 'r')
  t.teardown(() => handle.close())
  return { source: { file: { handle, digest, name: 'postgres.dump.zst' }, compression: 'zstd', encrypted: false }, dir }
}

t.test('the reserve: 1 GiB, or 5% of a large file system', async (t) => {
  t.equal(stagingReserve(10 * GiB), GiB)
  t.equal(stagingReserve(100 * GiB), 5 * GiB)
})

t.test('staging goes on only while the room left covers the reserve and as much again as staged', async (t) => {
  t.ok(roomToGoOn(10 * GiB, GiB, 9 * GiB))
  t.notOk(roomToGoOn(10 * GiB, GiB, 9 * GiB + 1))
  t.notOk(roomToGoOn(GiB - 1, GiB, 0))
})

t.test('RESTORE_STAGE_DUMP: on unless false; a typo is refused', async (t) => {
  t.ok(stagingWanted({}))
  t.ok(stagingWanted({ RESTORE_STAGE_DUMP: '' }))
  t.ok(stagingWanted({ RESTORE_STAGE_DUMP: 'yes' }))
  t.notOk(stagingWanted({ RESTORE_STAGE_DUMP: 'off' }))
  t.throws(() => stagingWanted({ RESTORE_STAGE_DUMP: 'ture' }), /RESTORE_STAGE_DUMP must be true or false/)
})

t.test('a memory file system (tmpfs) is used only when RESTORE_STAGING_DIR chose it', async (t) => {
  const { source, dir } = await sourceOf(t, Buffer.alloc(1024 * 1024, 'm'))
  const tmpfs = async () => ({ free: 100 * GiB, reserve: GiB, memory: true })
  t.equal(await stageDump(source, join(dir, 'a.dump'), process.env, { room: tmpfs }), 'memory')
  t.notOk(existsSync(join(dir, 'a.dump')))
  t.equal(await stageDump(source, join(dir, 'b.dump'), process.env, { room: tmpfs, chosen: true }), 'staged')
})

t.test('only zstd dumps in the clear are staged, unless RESTORE_STAGE_DUMP=false', async (t) => {
  const file = { handle: null as never, digest: { sha256: '', size: 0 }, name: 'x' }
  t.ok(canStage({ file, compression: 'zstd', encrypted: false }, stagingWanted({})))
  t.notOk(canStage({ file, compression: 'zstd', encrypted: false }, stagingWanted({ RESTORE_STAGE_DUMP: 'false' })))
  t.notOk(canStage({ file, compression: 'zstd', encrypted: true, identity: '/k' }, true), 'never decrypted onto a disk')
  t.notOk(canStage({ file, compression: undefined, encrypted: false }, true), 'formatVersion 1 keeps the streamed path')
})

t.test('staged: the decompressed bytes, private', async (t) => {
  const plain = Buffer.concat([Buffer.from('PGDMP'), Buffer.alloc(3 * 1024 * 1024, 'row data ')])
  const { source, dir } = await sourceOf(t, plain)
  const out = join(dir, 'staged.dump')
  t.equal(await stageDump(source, out, process.env, { room: plenty }), 'staged')
  t.ok(readFileSync(out).equals(plain), 'byte for byte')
  t.equal(statSync(out).mode & 0o777, 0o600)
})

t.test('no room at the start: not tried, nothing written', async (t) => {
  const { source, dir } = await sourceOf(t, Buffer.alloc(1024 * 1024, 'x'))
  const out = join(dir, 'staged.dump')
  t.equal(await stageDump(source, out, process.env, { room: async () => ({ free: 2 * GiB, reserve: 2 * GiB }) }), 'no-room')
  t.notOk(existsSync(out))
})

t.test('room running out while staging: stopped, the partial file removed', async (t) => {
  // Incompressible, so the feed is 32 chunks of 1 MiB and still running when the room is checked.
  const { source, dir } = await sourceOf(t, randomBytes(32 * 1024 * 1024))
  const out = join(dir, 'staged.dump')
  let calls = 0
  const shrinking = async () => (calls++ === 0 ? { free: 100 * GiB, reserve: GiB } : { free: 0, reserve: GiB })
  // The first chunk's progress holds the feed past one check period, so the check is due at the next await.
  let waited = false
  const slow = () => {
    if (waited) return
    waited = true
    const until = Date.now() + ROOM_CHECK_MS * 2
    while (Date.now() < until) {}
  }
  t.equal(await stageDump(source, out, process.env, { onProgress: slow, room: shrinking }), 'no-room')
  t.ok(calls >= 2, 'the room was checked while staging')
  t.notOk(existsSync(out), 'the partial file is gone')
})

t.test('bytes changed after verification: refused, nothing left', async (t) => {
  const plain = Buffer.alloc(2 * 1024 * 1024, 'z')
  const { source, dir } = await sourceOf(t, plain, (file) => {
    const b = readFileSync(file)
    b[b.length - 5] ^= 0xff
    writeFileSync(file, b)
  })
  const out = join(dir, 'staged.dump')
  const err = await stageDump(source, out, process.env, { room: plenty }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof DrError, String(err))
  t.equal((err as DrError).exitCode, 4)
  t.match((err as DrError).message, /postgres\.dump\.zst changed after it was verified; nothing was restored/)
  t.notOk(existsSync(out))
})

t.test('a dump damaged before its checksum was taken, mid-stream: refused as damaged (not a broken pipe), nothing left', async (t) => {
  // Damaged, then checksummed: verification passes, zstd stops part-way while it is still being fed.
  const { source, dir } = await sourceOf(t, randomBytes(16 * 1024 * 1024), undefined, (file) => {
    const b = readFileSync(file)
    b[Math.floor(b.length / 2)] ^= 0xff
    writeFileSync(file, b)
  })
  const out = join(dir, 'staged.dump')
  const err = await stageDump(source, out, process.env, { room: plenty }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof DrError, String(err))
  t.equal((err as DrError).exitCode, 4)
  t.match((err as DrError).message, /the dump cannot be decompressed \(.*(Decoding error|[Cc]orrupt)/)
  t.notOk(existsSync(out))
})

t.test('zstd stopped by the file-size limit (ulimit -f, SIGXFSZ): no room, streamed instead; nothing left', async (t) => {
  const { source, dir } = await sourceOf(t, randomBytes(4 * 1024 * 1024))
  const out = join(dir, 'staged.dump')
  const PATH = pathWithWrapped(t, 'zstd', 'ulimit -f 64\nexec "$REAL" "$@"')
  t.equal(await stageDump(source, out, { ...process.env, PATH }, { room: plenty }), 'no-room')
  t.notOk(existsSync(out))
})

t.test('zstd killed from outside: one line saying so, not a damaged artifact; nothing left', async (t) => {
  const { source, dir } = await sourceOf(t, randomBytes(4 * 1024 * 1024))
  const out = join(dir, 'staged.dump')
  const PATH = pathWithWrapped(t, 'zstd', 'kill -KILL $$')
  const err = await stageDump(source, out, { ...process.env, PATH }, { room: plenty }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof DrError, String(err))
  t.equal((err as DrError).exitCode, 1)
  t.match((err as DrError).message, /zstd was killed by signal 9 while staging the dump/)
  t.notOk(existsSync(out))
})

t.test('verified bytes that are not zstd: refused as damaged, nothing left', async (t) => {
  const dir = tempDir(t)
  const file = join(dir, 'postgres.dump.zst')
  writeFileSync(file, Buffer.from('not a zstd frame at all'))
  const handle = await open(file, 'r')
  t.teardown(() => handle.close())
  const source: DumpSource = { file: { handle, digest: digestBuffer(readFileSync(file)), name: 'postgres.dump.zst' }, compression: 'zstd', encrypted: false }
  const out = join(dir, 'staged.dump')
  const err = await stageDump(source, out, process.env, { room: plenty }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof DrError, String(err))
  t.match((err as DrError).message, /the dump cannot be decompressed/)
  t.notOk(existsSync(out))
})
