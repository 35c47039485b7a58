// Data offsets written into a staged dump: exactly the ones pg_dump writes when it can seek,
// found however the bytes arrive; anything unexpected means no offsets, never wrong ones.
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { digestBuffer } from '../lib/pipeline/checksum.ts'
import { BlockWalker, offsetPatches, readTocLayout, type TocLayout } from '../lib/postgres/dump-offsets.ts'
import { stageDump } from '../lib/postgres/stage-dump.ts'
import { fillDatabase, psql, scratchDatabase, snapshot, tempDir } from './helpers.ts'

const GiB = 1024 ** 3
const pgEnv = { ...process.env, PGHOST: process.env.PGHOST ?? '/var/run/postgresql', PGUSER: process.env.PGUSER ?? 'postgres' }

/** The same database dumped twice: through a pipe (no offsets, as backups are) and to a file (pg_dump writes them). */
function dumps(db: string, dir: string): { piped: Buffer; seekable: Buffer } {
  const piped = execFileSync('pg_dump', ['-Fc', '-Z0', db], { env: pgEnv, maxBuffer: 1 << 30 })
  const file = join(dir, 'seekable.dump')
  execFileSync('pg_dump', ['-Fc', '-Z0', '-f', file, db], { env: pgEnv })
  return { piped, seekable: readFileSync(file) }
}

function layoutOf(t: Test, dump: Buffer): TocLayout {
  const layout = readTocLayout(dump)
  if (layout === null || layout === 'more') throw new Error(`no layout: ${layout}`)
  t.ok(layout.fields.size > 0)
  return layout
}

/** Feeds `dump` in pieces of `size` bytes and returns the offsets found. */
function walk(layout: TocLayout, dump: Buffer, size: number): Map<number, number> | null {
  const walker = new BlockWalker(layout, 0)
  for (let i = 0; i < dump.length; i += size) walker.push(dump.subarray(i, i + size))
  return walker.result()
}

t.test('offsets found in a piped dump are the ones pg_dump writes to a file, however the bytes are cut', async (t) => {
  const db = scratchDatabase(t)
  psql(
    db,
    `CREATE TABLE rows (id int PRIMARY KEY, v text);
     INSERT INTO rows SELECT g, repeat(md5(g::text), 1 + g % 5) || E'\\nline two' FROM generate_series(1, 20000) g;
     CREATE TABLE empty (id int);
     CREATE TABLE wide (id int, b bytea);
     INSERT INTO wide SELECT g, decode(repeat(md5(g::text), 400), 'hex') FROM generate_series(1, 50) g;
     SELECT lo_from_bytea(0, decode(repeat('ab', 100000), 'hex')), lo_from_bytea(0, ''::bytea), lo_from_bytea(0, 'x'::bytea);`,
  )
  const { piped, seekable } = dumps(db, tempDir(t))
  t.equal(piped.length, seekable.length, 'same archive, offsets aside')
  const layout = layoutOf(t, piped)
  for (const size of [1, 5, 6, 7, 4093, 65536, piped.length]) {
    const blocks = walk(layout, piped, size)
    if (!blocks) {
      t.fail(`pieces of ${size}: no offsets`)
      continue
    }
    const patches = offsetPatches(layout, blocks)
    t.equal(patches.length, layout.fields.size, `pieces of ${size}: every entry with data`)
    t.ok(patches.every((p) => seekable.subarray(p.at, p.at + p.bytes.length).equals(p.bytes)), `pieces of ${size}: byte for byte pg_dump's own`)
  }
  // Patched, the piped dump is pg_dump's seekable one, except for the creation time in the header.
  const patched = Buffer.from(piped)
  for (const p of offsetPatches(layout, walk(layout, piped, 65536)!)) p.bytes.copy(patched, p.at)
  const differing = [...patched.keys()].filter((i) => patched[i] !== seekable[i])
  t.ok(differing.every((i) => i < 64), `only header bytes differ (${differing.length})`)
})

t.test('anything unexpected means no offsets', async (t) => {
  const db = scratchDatabase(t)
  psql(db, 'CREATE TABLE a (id int); INSERT INTO a SELECT generate_series(1, 1000); CREATE TABLE b (v text); INSERT INTO b VALUES (\'x\')')
  const { piped } = dumps(db, tempDir(t))
  const layout = layoutOf(t, piped)
  t.equal(readTocLayout(piped.subarray(0, 40)), 'more', 'the table of contents cut short: wait for more')
  t.equal(readTocLayout(Buffer.from('not a dump at all, not at all')), null, 'not a dump')
  const otherVersion = Buffer.from(piped)
  otherVersion[6] = 15
  t.equal(readTocLayout(otherVersion), null, 'an archive version it does not know')
  const directory = Buffer.from(piped)
  directory[10] = 3
  t.equal(readTocLayout(directory), null, 'not the custom format')
  t.equal(walk(layout, piped.subarray(0, piped.length - 3), 4096), null, 'cut inside the last block')
  const wrongId = Buffer.from(piped)
  wrongId[layout.dataStart + 1] ^= 0x55 // the first block's id
  t.equal(walk(layout, wrongId, 4096), null, 'a block id not in the table of contents')
  t.equal(walk(layout, Buffer.concat([piped, Buffer.from([1])]), 4096), null, 'bytes after the last block')
})

t.test('a staged dump gets its offsets, and restores: a table of contents over several reads, oids past 2^31', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db)
  // One table-of-contents entry per large object: 6000 of them make it larger than one 1 MiB read.
  // pg_dump writes oids as signed ints, so 4000000000 reads as a negative number.
  psql(db, "SELECT lo_from_bytea(0, convert_to(g::text, 'UTF8')) FROM generate_series(1, 6000) g; SELECT lo_from_bytea(4000000000, 'big oid'), lo_from_bytea(2147483648, '')")
  const dir = tempDir(t)
  const { piped, seekable } = dumps(db, dir)
  const file = join(dir, 'postgres.dump.zst')
  writeFileSync(file, execFileSync('zstd', ['-q', '-c'], { input: piped, maxBuffer: 1 << 30 }))
  const handle = await open(file, 'r')
  t.teardown(() => handle.close())
  const staged = join(dir, 'staged.dump')
  const source = { file: { handle, digest: digestBuffer(readFileSync(file)), name: 'postgres.dump.zst' }, compression: 'zstd' as const, encrypted: false }
  t.equal(await stageDump(source, staged, process.env, { room: async () => ({ free: 100 * GiB, reserve: GiB }) }), 'staged')
  const got = readFileSync(staged)
  const layout = layoutOf(t, piped)
  t.ok(layout.dataStart > 1024 * 1024, `the table of contents spans several reads (${layout.dataStart} bytes)`)
  for (const at of layout.fields.values()) t.ok(got.subarray(at, at + 1 + layout.offSize).equals(seekable.subarray(at, at + 1 + layout.offSize)), `offset field at ${at} is pg_dump's`)
  const target = scratchDatabase(t)
  execFileSync('pg_restore', ['-j2', '-d', target, staged], { env: pgEnv })
  t.same(snapshot(target), snapshot(db), 'restored rows equal the original rows')
  const objects = "SELECT count(*), sum(length(lo_get(oid))) FROM pg_largeobject_metadata"
  t.equal(psql(target, objects), psql(db, objects), 'and every large object')
  t.equal(psql(target, 'SELECT convert_from(lo_get(4000000000), \'UTF8\')').trim(), 'big oid')
})
