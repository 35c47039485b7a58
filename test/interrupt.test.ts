// A backup killed part-way must never leave anything that looks complete.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import {
  changedSinceBackup,
  BACKUP,
  cleanEnv,
  collect,
  completeArtifacts,
  DUMP_ENABLED,
  fillDatabase,
  pgEnv,
  psql,
  REPO,
  pathWithWrapped,
  RESTORE,
  run,
  scratchDatabase,
  snapshot,
  tempDir,
} from './helpers.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function waitFor(what: string, check: () => boolean, ms = 20000): Promise<void> {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/**
 * Holds an exclusive lock on a table so that pg_dump blocks mid-run:
 * the backup is then reliably "in the middle of the dump" when we kill it.
 */
function holdLock(t: Test, db: string): ChildProcess {
  const locker = spawn('psql', ['-X', '-q', '-d', db], { env: cleanEnv(), stdio: ['pipe', 'ignore', 'ignore'] })
  locker.stdin!.write('BEGIN; LOCK TABLE documents IN ACCESS EXCLUSIVE MODE;\n')
  t.teardown(() => {
    locker.kill('SIGKILL')
  })
  return locker
}

const dumpWaiting = (db: string) =>
  psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'pg_dump' AND wait_event_type = 'Lock';`).trim() === '1'

const partials = (dir: string) => readdirSync(dir).filter((n) => n.endsWith('.partial'))

t.test('SIGKILL during the dump leaves only a hidden .partial', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 200)
  const out = tempDir(t)
  const locker = holdLock(t, db)
  await sleep(300)

  const backup = spawn(BACKUP, ['--output', out], { cwd: REPO, env: pgEnv(db, DUMP_ENABLED), detached: true, stdio: 'ignore' })
  const done = collect(backup)
  await waitFor('pg_dump to block on the lock', () => dumpWaiting(db))
  t.equal(partials(out).length, 1, 'work in progress is under a .partial name')
  process.kill(-backup.pid!, 'SIGKILL') // the whole process group: script and pg_dump
  const r = await done
  t.equal(r.signal, 'SIGKILL')
  locker.kill('SIGKILL')

  t.same(completeArtifacts(out), [], 'no complete-looking artifact')
  const [partial] = partials(out)
  t.ok(partial.startsWith('.'), 'hidden from plain ls')
  t.notOk(existsSync(join(out, partial, 'manifest.json')), 'no manifest in the partial')

  const refused = await run(RESTORE, [partial], cleanEnv({ BACKUP_BASE: out }))
  t.equal(refused.code, 3)
  t.match(refused.stderr, /incomplete backup/)

  // The next run succeeds and tells the operator about the leftover.
  await sleep(1000)
  const next = await run(BACKUP, ['--output', out], pgEnv(db, DUMP_ENABLED))
  t.equal(next.code, 0, next.stderr)
  t.match(next.stderr, /1 incomplete backup\(s\) from interrupted runs/)
  t.equal(completeArtifacts(out).length, 1)
})

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} during the dump removes the partial and exits 130`, async (t) => {
    const db = scratchDatabase(t)
    fillDatabase(db, 200)
    const out = tempDir(t)
    const locker = holdLock(t, db)
    await sleep(300)

    const backup = spawn(BACKUP, ['--output', out], { cwd: REPO, env: pgEnv(db, DUMP_ENABLED), stdio: ['ignore', 'pipe', 'pipe'] })
    const done = collect(backup)
    await waitFor('pg_dump to block on the lock', () => dumpWaiting(db))
    backup.kill(signal) // the script alone, as cron or systemd would
    const r = await done
    t.equal(r.code, 130, r.stderr)
    t.match(r.stderr, new RegExp(`interrupted by ${signal}`))
    t.same(readdirSync(out), [], 'nothing left behind')
    await waitFor('pg_dump to go away', () => !dumpWaiting(db), 5000)
    t.pass('pg_dump did not outlive the backup')
    locker.kill('SIGKILL')
  })
}

t.test('--in-place: SIGTERM during a database restore rolls it back and stops pg_restore', async (t) => {
  const { db, path, before } = await changedSinceBackup(t, 200)
  // A reader holding a lock: the restore's DROP TABLE waits behind it.
  const reader = spawn('psql', ['-X', '-q', '-d', db], { env: cleanEnv(), stdio: ['pipe', 'ignore', 'ignore'] })
  reader.stdin!.write('BEGIN; SELECT count(*) FROM documents;\n')
  t.teardown(() => {
    reader.kill('SIGKILL')
  })
  await sleep(300)

  const restore = spawn(RESTORE, ['--in-place', path], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true' }), stdio: ['ignore', 'pipe', 'pipe'] })
  const done = collect(restore)
  const restoreWaiting = () =>
    psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'pg_restore' AND wait_event_type = 'Lock';`).trim() === '1'
  await waitFor('pg_restore to block on the lock', restoreWaiting)
  restore.kill('SIGTERM')
  const r = await done
  t.equal(r.code, 130, r.stderr)
  t.match(r.stderr, /interrupted by SIGTERM/)
  const restoreGone = () =>
    psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND application_name = 'pg_restore';`).trim() === '0'
  await waitFor('pg_restore to go away', restoreGone, 5000)
  reader.kill('SIGKILL')
  t.same(snapshot(db), before, 'the database is as it was before the restore began')
})

t.test('SIGTERM during a parallel restore drops the new database and leaves the target as it was', async (t) => {
  const { db, path, before } = await changedSinceBackup(t, 200)
  const marker = join(tempDir(t), 'restored')
  // pg_restore -j that has restored everything but has not finished yet.
  const PATH = pathWithWrapped(t, 'pg_restore', `case "$*" in *--jobs*) "$REAL" "$@"; touch '${marker}'; exec sleep 600 ;; esac\nexec "$REAL" "$@"`)
  const restore = spawn(RESTORE, [path], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true', PATH }), stdio: ['ignore', 'pipe', 'pipe'] })
  const done = collect(restore)
  await waitFor('the new database to be restored', () => existsSync(marker))
  const restoring = psql('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_restoring\\_%';`).trim()
  t.match(restoring, new RegExp(`^${db}_restoring_`), 'the restore was filling its new database')
  restore.kill('SIGTERM')
  const r = await done
  t.equal(r.code, 130, r.stderr)
  t.match(r.stderr, /interrupted by SIGTERM/)
  t.equal(psql('postgres', `SELECT count(*) FROM pg_database WHERE datname LIKE '${db}\\_%';`).trim(), '0', 'the new database was dropped')
  t.same(snapshot(db), before, 'the target is as it was before the restore began')
})

t.test('SIGTERM while the dump is staged, after the new database was created beside it: that database is dropped too', async (t) => {
  const { db, path, before } = await changedSinceBackup(t, 200)
  const dir = tempDir(t)
  const marker = join(dir, 'staging')
  // The first `zstd -d` reads the archive's table of contents; the second stages the dump: that one hangs.
  const PATH = pathWithWrapped(
    t,
    'zstd',
    `case "$*" in "-d -q -c") if [ -e '${dir}/seen' ]; then touch '${marker}'; exec sleep 600; fi; touch '${dir}/seen' ;; esac\nexec "$REAL" "$@"`,
  )
  const restore = spawn(RESTORE, [path], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true', PATH }), stdio: ['ignore', 'pipe', 'pipe'] })
  const done = collect(restore)
  await waitFor('staging to start', () => existsSync(marker))
  const restoring = () => psql('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_restoring\\_%';`).trim()
  await waitFor('the new database to be created meanwhile', () => restoring() !== '')
  restore.kill('SIGTERM')
  const r = await done
  t.equal(r.code, 130, r.stderr)
  t.match(r.stderr, /interrupted by SIGTERM/)
  t.notMatch(r.stderr, /completed first/, 'creating it is not reported as done: it was undone')
  t.equal(psql('postgres', `SELECT count(*) FROM pg_database WHERE datname LIKE '${db}\\_%';`).trim(), '0', 'the new database was dropped')
  t.same(snapshot(db), before, 'the target is as it was before the restore began')
})

/**
 * Another session runs `sql` in an open transaction, holding its locks until
 * the returned release() (or the end of the test) rolls it back.
 */
async function holdInTransaction(t: Test, sql: string, like: string): Promise<() => void> {
  const blocker = spawn('psql', ['-X', '-q', '-d', 'postgres'], { env: pgEnv('postgres'), stdio: ['pipe', 'ignore', 'ignore'] })
  const done = new Promise((resolve) => blocker.on('close', resolve))
  blocker.stdin!.write(`BEGIN; ${sql};\n`)
  let released = false
  const release = () => {
    if (!released) blocker.stdin!.end('ROLLBACK;\n')
    released = true
  }
  t.teardown(async () => {
    release()
    await done
  })
  await waitFor('the other session to hold its locks', () => psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '${like}';`).trim() !== '0')
  return release
}

t.test('SIGTERM to the whole process group while the CREATE waits on a lock: the database it commits anyway is dropped', async (t) => {
  const { db, path, before } = await changedSinceBackup(t, 200)
  // Another session holds a lock the CREATE needs; psql dies of the group's signal, the server goes on.
  const release = await holdInTransaction(t, "COMMENT ON DATABASE template0 IS 'held by a test'", 'COMMENT ON DATABASE template0%')
  const restore = spawn(RESTORE, [path], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true' }), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const done = collect(restore)
  await waitFor('the CREATE to wait on the lock', () => psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE DATABASE %${db}\\_restoring\\_%' AND wait_event_type = 'Lock';`).trim() !== '0')
  process.kill(-restore.pid!, 'SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 500))
  release() // the CREATE now commits, with no client left to tell
  const r = await done
  t.equal(r.code, 130, r.stderr)
  // The orphaned CREATE finishes on its own time: look only once it has.
  await waitFor('the orphaned CREATE to end', () => psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CREATE DATABASE %${db}\\_restoring\\_%' AND state = 'active';`).trim() === '0')
  t.equal(psql('postgres', `SELECT count(*) FROM pg_database WHERE datname LIKE '${db}\\_%';`).trim(), '0', 'no _restoring_ database left')
  t.same(snapshot(db), before, 'the target is as it was before the restore began')
})

t.test("SIGTERM to the whole process group while the swap waits on a lock: the orphaned ALTER never closes the target", async (t) => {
  // Once a bug: psql died of the group's signal, its ALTER DATABASE … ALLOW_CONNECTIONS false went on
  // waiting on the server and committed when the other session let go: the target refused every
  // connection after the run had said nothing changed. The run's sessions are now ended on an interrupt.
  const { db, path, before } = await changedSinceBackup(t, 200)
  const release = await holdInTransaction(t, `ALTER DATABASE "${db}" CONNECTION LIMIT 50`, 'ALTER DATABASE %CONNECTION LIMIT 50%')
  const restore = spawn(RESTORE, [path], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true' }), stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  const done = collect(restore)
  await waitFor('the swap to wait on the lock', () => psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ALLOW_CONNECTIONS false%' AND wait_event_type = 'Lock';").trim() !== '0', 60_000)
  process.kill(-restore.pid!, 'SIGTERM')
  const r = await done
  t.equal(r.code, 130, r.stderr)
  release() // an orphaned ALTER would run now
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(psql('postgres', `SELECT datallowconn FROM pg_database WHERE datname = '${db}';`).trim(), 't', 'the target still accepts connections')
  t.equal(psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%ALLOW_CONNECTIONS false%' AND pid <> pg_backend_pid();").trim(), '0', 'no session of the run is left')
  t.same(snapshot(db), before, 'the target is as it was before the restore began')
})
