// Artifacts written by earlier versions keep verifying and restoring.
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { cleanEnv, dropDatabase, pgEnv, psql, REPO, RESTORE, run } from './helpers.ts'

/** Written by the tool before zstd compression (formatVersion 1, pg_dump -Fc with zlib); see docs/operators-guide.md. */
const V1 = join(REPO, 'test', 'fixtures', 'v1', 'conductor-backup-20261126T131913Z')

t.test('a formatVersion 1 artifact verifies and restores, row for row', async (t) => {
  const dry = await run(RESTORE, ['--dry-run', V1], cleanEnv({ RESTORE_POSTGRES: 'true' }))
  t.equal(dry.code, 0, dry.stderr)
  const db = `cdr_compat_${process.pid}`
  t.teardown(() => dropDatabase(db))
  const r = await run(RESTORE, ['--check', V1], pgEnv(db, { RESTORE_POSTGRES: 'true' }))
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /check row counts: ok/)
  const customers = execFileSync('psql', ['-X', '-q', '-d', db, '-c', 'COPY (SELECT * FROM customers ORDER BY 1) TO STDOUT'], { env: cleanEnv() })
  t.equal(require_md5(customers), 'da06c2de5d77f1cfedee4ee404a1ed87', 'customers identical to the database the fixture was taken from')
  t.equal(psql(db, 'SELECT count(*) FROM "odd ""name""";').trim(), '25')
})

function require_md5(data: Buffer): string {
  return execFileSync('md5sum', { input: data, encoding: 'utf8' }).split(' ')[0]!
}
