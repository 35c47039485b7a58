// One damaged byte anywhere in an artifact: restore refuses, the database is untouched.
import { openSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync, closeSync, statSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { backupOf, fillDatabase, pgEnv, psql, resealArtifact, RESTORE, run, scratchDatabase, snapshot } from './helpers.ts'

function flipByte(path: string, offset: number): void {
  const fd = openSync(path, 'r+')
  const buf = Buffer.alloc(1)
  readSync(fd, buf, 0, 1, offset)
  buf[0] ^= 0x01
  writeSync(fd, buf, 0, 1, offset)
  closeSync(fd)
}

t.test('damaged artifacts are refused before the database is touched', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 500)
  const { path: pristine } = await backupOf(t, db)
  const dumpSize = statSync(join(pristine, 'postgres.dump.zst')).size
  psql(db, "UPDATE customers SET name = 'after the backup';")
  const current = snapshot(db)

  const damages: Array<{ name: string; damage: (dir: string) => void; message: RegExp }> = [
    { name: 'one bit in the middle of the dump', damage: (d) => flipByte(join(d, 'postgres.dump.zst'), Math.floor(dumpSize / 2)), message: /postgres\.dump\.zst failed its SHA-256 check/ },
    { name: 'one bit in the last byte of the dump', damage: (d) => flipByte(join(d, 'postgres.dump.zst'), dumpSize - 1), message: /postgres\.dump\.zst failed its SHA-256 check/ },
    { name: 'a truncated dump', damage: (d) => truncateSync(join(d, 'postgres.dump.zst'), dumpSize - 100), message: /postgres\.dump\.zst is \d+ bytes, manifest says/ },
    { name: 'a missing dump', damage: (d) => rmSync(join(d, 'postgres.dump.zst')), message: /postgres\.dump\.zst is missing from the artifact/ },
    { name: 'one bit in the manifest', damage: (d) => flipByte(join(d, 'manifest.json'), 40), message: /manifest\.json does not match its checksum/ },
    {
      name: 'a truncated manifest',
      damage: (d) => truncateSync(join(d, 'manifest.json'), statSync(join(d, 'manifest.json')).size - 10),
      message: /manifest\.json does not match its checksum/,
    },
    {
      name: 'a manifest edited with its checksum recomputed',
      damage: (d) => {
        const text = readFileSync(join(d, 'manifest.json'), 'utf8').replace(/"sha256": "[0-9a-f]{64}"/, '"sha256": "not-a-hash"')
        writeFileSync(join(d, 'manifest.json'), text)
        const sum = createHash('sha256').update(text).digest('hex')
        writeFileSync(join(d, 'manifest.json.sha256'), `${sum}  manifest.json\n`)
      },
      message: /manifest is malformed: files\[0\]\.sha256/,
    },
    {
      name: 'a dump damaged before it was checksummed (checksums recomputed)',
      damage: (d) => {
        const dump = join(d, 'postgres.dump.zst')
        writeFileSync(dump, Buffer.from('PGDMP but not really an archive'))
        const st = statSync(dump)
        const digest = createHash('sha256').update(readFileSync(dump)).digest('hex')
        const text = readFileSync(join(d, 'manifest.json'), 'utf8')
          .replace(/"size": \d+/, `"size": ${st.size}`)
          .replace(/"sha256": "[0-9a-f]{64}"/, `"sha256": "${digest}"`)
        writeFileSync(join(d, 'manifest.json'), text)
        writeFileSync(join(d, 'manifest.json.sha256'), `${createHash('sha256').update(text).digest('hex')}  manifest.json\n`)
      },
      message: /the dump cannot be read by this pg_restore|the dump cannot be decompressed/,
    },
    { name: 'a damaged checksum file', damage: (d) => writeFileSync(join(d, 'manifest.json.sha256'), 'garbage\n'), message: /manifest checksum file is malformed/ },
  ]

  for (const { name, damage, message } of damages) {
    await t.test(name, async (t) => {
      const copy = join(pristine, '..', `copy-${Math.random().toString(36).slice(2)}`)
      await run('cp', ['-a', pristine, copy])
      damage(copy)
      for (const args of [['--dry-run', copy], [copy]]) {
        const r = await run(RESTORE, args, pgEnv(db, { RESTORE_POSTGRES: 'true' }))
        t.equal(r.code, 4, `verification failure exit code (${args.join(' ')})`)
        t.match(r.stderr, message)
        t.notMatch(r.stdout, /restoring/, 'never reached the restore step')
      }
      t.same(snapshot(db), current, 'database untouched')
      rmSync(copy, { recursive: true, force: true })
    })
  }

  await t.test('a stray file is reported, not restored, and does not block', async (t) => {
    writeFileSync(join(pristine, 'stray.txt'), 'x')
    const r = await run(RESTORE, ['--dry-run', pristine], pgEnv(db))
    t.equal(r.code, 0, r.stderr)
    t.match(r.stderr, /not in the manifest, ignored: stray\.txt/)
    rmSync(join(pristine, 'stray.txt'))
  })

  // The untouched original still restores: the refusals above were about the damage.
  const ok = await run(RESTORE, [pristine], pgEnv(db, { RESTORE_POSTGRES: 'true' }))
  t.equal(ok.code, 0, ok.stderr)
  t.not(snapshot(db).customers, current.customers)
})

t.test('a dump cut short before it was checksummed (checksums recomputed) is damage, exit 4, on every restore path', async (t) => {
  // Once a bug: streamed (RESTORE_STAGE_DUMP=false), encrypted and --in-place restores checked
  // pg_restore's exit first, so the cut dump came out as 'pg_restore failed … end of file' (exit 1).
  const db = scratchDatabase(t)
  fillDatabase(db, 20000)
  const before = snapshot(db)
  const { path } = await backupOf(t, db)
  const dump = join(path, 'postgres.dump.zst')
  truncateSync(dump, Math.floor(statSync(dump).size * 0.6)) // the table of contents survives, the data does not
  resealArtifact(path)
  for (const [label, args, extra] of [
    ['streamed', [path], { RESTORE_STAGE_DUMP: 'false' }],
    ['--in-place', ['--in-place', path], {}],
    ['staged', [path], {}],
  ] as const) {
    const r = await run(RESTORE, [...args], pgEnv(db, { RESTORE_POSTGRES: 'true', ...extra }))
    t.equal(r.code, 4, `${label}: ${r.stderr}`)
    t.match(r.stderr, /the dump cannot be decompressed/, label)
    t.same(snapshot(db), before, `${label}: database untouched`)
  }
  t.equal(psql('postgres', `SELECT count(*) FROM pg_database WHERE datname LIKE '${db}\\_%';`).trim(), '0', 'no restored copy left behind')
  // --in-place into a database that does not exist yet: the one it creates goes again.
  const fresh = `${db}_fresh`
  const r = await run(RESTORE, ['--in-place', path], pgEnv(fresh, { RESTORE_POSTGRES: 'true' }))
  t.equal(r.code, 4, r.stderr)
  t.match(r.stderr, /the database \S+ this restore created was dropped again/)
  t.equal(psql('postgres', `SELECT count(*) FROM pg_database WHERE datname = '${fresh}';`).trim(), '0', 'no empty database left for a later restore to take as the target')
})
