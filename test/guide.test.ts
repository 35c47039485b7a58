// Every command line of the operators' guide, run as written: only the
// backup directory and the artifact name are substituted.
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { completeArtifacts, fillDatabase, pgEnv, psql, REPO, scratchDatabase, sh, snapshot, tempDir } from './helpers.ts'

const GUIDE_NAME = 'conductor-backup-20240315T120000Z'
export const GUIDE_LINES = {
  backupDryRun: './scripts/backup.sh --output /tmp/backups --dry-run',
  backup: './scripts/backup.sh --output /tmp/backups --include-postgres',
  backupWithDump: 'INCLUDE_POSTGRES=true ENABLE_POSTGRES_DUMP=true ./scripts/backup.sh --output /tmp/backups --include-postgres',
  restoreDryRun: `BACKUP_BASE=/tmp/backups ./scripts/restore.sh --dry-run ${GUIDE_NAME}`,
  restore: `BACKUP_BASE=/tmp/backups ./scripts/restore.sh ${GUIDE_NAME}`,
  restoreWithDb: `BACKUP_BASE=/tmp/backups RESTORE_POSTGRES=true ./scripts/restore.sh ${GUIDE_NAME}`,
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')
const nextSecond = () => new Promise((r) => setTimeout(r, 1100 - (Date.now() % 1000)))

const guide = join(REPO, '..', 'shared', 'DISASTER_RECOVERY.md')
const noGuide = !existsSync(guide) && 'shared/DISASTER_RECOVERY.md is not beside this checkout'
t.test('the guide still lists exactly these command lines', { skip: noGuide }, async (t) => {
  const lines = readFileSync(guide, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.includes('./scripts/'))
  t.same(lines.sort(), Object.values(GUIDE_LINES).sort())
})

t.test('guide workflow against a real database', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 1000)
  const original = snapshot(db)
  const base = join(tempDir(t), 'backups')
  const env = pgEnv(db)
  const line = (l: string, name = GUIDE_NAME) => l.replaceAll('/tmp/backups', base).replaceAll(GUIDE_NAME, name)

  const dry = await sh(line(GUIDE_LINES.backupDryRun), env)
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /dry run/)
  t.notOk(existsSync(base), 'a dry run creates nothing, not even the output directory')

  const plain = await sh(line(GUIDE_LINES.backup), env)
  t.equal(plain.code, 0, plain.stderr)
  t.match(plain.stderr, /warning: the database will not be backed up: .*ENABLE_POSTGRES_DUMP=true/)
  t.match(plain.stdout, /manifest only, database skipped/)
  t.equal(statSync(base).mode & 0o777, 0o700, 'output directory is private')
  const [first] = completeArtifacts(base)
  t.ok(first, 'one artifact written')
  const firstManifest = JSON.parse(readFileSync(join(base, first, 'manifest.json'), 'utf8'))
  t.equal(firstManifest.postgres.status, 'skipped')
  t.match(firstManifest.postgres.reason, /ENABLE_POSTGRES_DUMP/)
  t.same(firstManifest.files, [])
  t.notOk(existsSync(join(base, first, 'postgres.dump.zst')))

  await nextSecond()
  const withDump = await sh(line(GUIDE_LINES.backupWithDump), env)
  t.equal(withDump.code, 0, withDump.stderr)
  const name = completeArtifacts(base).find((n) => n !== first)!
  t.ok(name, 'a second artifact written')
  const dir = join(base, name)
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'))
  t.equal(manifest.postgres.status, 'dumped')
  t.equal(manifest.postgres.database, db)
  t.match(manifest.postgres.serverVersion, /^\d+/)
  const entry = (file: string) => ({ path: file, size: statSync(join(dir, file)).size, sha256: sha256(join(dir, file)) })
  t.same(manifest.files, [entry('postgres.dump.zst'), entry('roles.json')])
  t.equal(readFileSync(join(dir, 'manifest.json.sha256'), 'utf8'), `${sha256(join(dir, 'manifest.json'))}  manifest.json\n`)

  // Change the database so that each restore line shows whether it touched it.
  psql(db, "DELETE FROM customers WHERE id % 2 = 0 AND id NOT IN (SELECT customer_id FROM documents); UPDATE events SET kind = 'tampered';")
  const changed = snapshot(db)
  t.not(changed.events, original.events)

  const rDry = await sh(line(GUIDE_LINES.restoreDryRun, name), env)
  t.equal(rDry.code, 0, rDry.stderr)
  t.match(rDry.stdout, /verified postgres\.dump/)
  t.same(snapshot(db), changed, 'dry run changes nothing')

  const rPlain = await sh(line(GUIDE_LINES.restore, name), env)
  t.equal(rPlain.code, 0, rPlain.stderr)
  t.match(rPlain.stdout, /RESTORE_POSTGRES=true/)
  t.same(snapshot(db), changed, 'without RESTORE_POSTGRES the database is not touched')

  const rDb = await sh(line(GUIDE_LINES.restoreWithDb, name), env)
  t.equal(rDb.code, 0, rDb.stderr)
  t.same(snapshot(db), original, 'every row is back as it was at backup time')
})
