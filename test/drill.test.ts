// Drills against the real server: a scratch restore, checks, timing, objectives, cleanup.
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ExitCode } from '../lib/cli/errors.ts'
import { historyPathFor } from '../lib/drill/report.ts'
import {
  backupOf,
  cleanEnv,
  collect,
  databaseExists,
  dropDatabase,
  fillDatabase,
  pgEnv,
  psql,
  REPO,
  resealArtifact,
  run,
  scratchDatabase,
  snapshot,
  tempDir,
} from './helpers.ts'

const DRILL = join(REPO, 'scripts', 'drill.sh')
const EXIT = ExitCode

let n = 0
/** A scratch name of our own, so the test can look for it afterwards; dropped even if the drill leaks it. */
function drillName(t: Test): string {
  const name = `cdr_drill_${process.pid}_${n++}`
  t.teardown(() => dropDatabase(name))
  return name
}

async function fixture(t: Test) {
  const db = scratchDatabase(t)
  fillDatabase(db, 300)
  const backup = await backupOf(t, db)
  return { db, ...backup }
}

t.test('a drill restores into a scratch database, checks it, drops it, and leaves the source untouched', async (t) => {
  const { db, base, name } = await fixture(t)
  const before = snapshot(db)
  const scratch = drillName(t)
  const reportDir = tempDir(t)
  const report = join(reportDir, 'drills.md')
  const r = await run(DRILL, ['--json', '--report', report, '--rto', '30m', '--rpo', '1h'], pgEnv(db, { BACKUP_BASE: base, DRILL_DATABASE: scratch }))
  t.equal(r.code, 0, r.stderr)
  const result = JSON.parse(r.stdout)
  t.match(result, { ok: true, verdict: 'passed', artifact: name, scratchDatabase: scratch, dryRun: false, judgement: { rto: 'met', rpo: 'met' } })
  t.same(result.phases.map((p: { name: string; status: string }) => `${p.name}:${p.status}`), ['locate:ok', 'verify:ok', 'restore:ok', 'checks:ok', 'cleanup:ok'])
  t.ok(result.rtoMs > 0, 'RTO measured')
  t.match(result.checks[0], { kind: 'row-counts', ok: true })
  t.notOk(databaseExists(scratch), 'scratch database dropped')
  t.same(snapshot(db), before, 'source database unchanged')
  const md = readFileSync(report, 'utf8')
  t.match(md, new RegExp(`## Drill .* — passed[\\s\\S]*${name}[\\s\\S]*\\| restore \\| ok \\|[\\s\\S]*Measured RTO`))
  const history = readFileSync(join(reportDir, 'drills.jsonl'), 'utf8').trim().split('\n')
  t.equal(history.length, 1)
  t.match(JSON.parse(history[0]!), { artifact: name, ok: true, verdict: 'passed' })

  const s = await run(DRILL, ['--summary', '--report', report, '--json'], cleanEnv())
  t.equal(s.code, 0, s.stderr)
  t.match(JSON.parse(s.stdout), { ok: true, drills: 1, passed: 1, rto: { medianMs: Number }, proposed: { rtoMs: Number } })
})

t.test('the manifest row counts match the restored tables', async (t) => {
  const { db, path } = await fixture(t)
  const manifest = JSON.parse(readFileSync(join(path, 'manifest.json'), 'utf8'))
  const tables: Array<{ schema: string; table: string; rows: number }> = manifest.postgres.tables
  t.same(tables.map((x) => x.table).sort(), ['customers', 'documents', 'events'])
  for (const x of tables) t.equal(x.rows, Number(psql(db, `SELECT count(*) FROM "${x.schema}"."${x.table}";`).trim()), `${x.table} count`)
})

t.test('failing checks fail the drill with exit 5, and the scratch database is gone', async (t) => {
  const { db, base } = await fixture(t)
  const server = createServer((req, res) => {
    res.statusCode = req.url === '/ok' ? 200 : 503
    // Echoes the request, as some health endpoints do: a query token must not reach the report through the body either.
    res.end(`unhealthy: ${req.url}`)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as AddressInfo).port
  const sqlFile = join(tempDir(t), 'check.sql')
  writeFileSync(sqlFile, 'SELECT count(*) > 1000000 FROM customers;\n')
  const cases: Array<{ name: string; args: string[]; failing: RegExp }> = [
    { name: '--check-sql returning false', args: ['--check-sql', sqlFile], failing: /sql:/ },
    { name: '--check-cmd exiting 3', args: ['--check-cmd', 'echo smoke failed >&2; exit 3'], failing: /cmd:/ },
    // A query token is sent, and shown nowhere.
    { name: '--check-url answering 503', args: ['--check-url', `http://127.0.0.1:${port}/health?token=hunter2-query`], failing: /url:.*\/health\?token=\*\*\*/ },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const scratch = drillName(t)
      const report = join(tempDir(t), 'drills.md')
      const r = await run(DRILL, ['--json', '--report', report, ...c.args, '--check-url', `http://127.0.0.1:${port}/ok`], pgEnv(db, { BACKUP_BASE: base, DRILL_DATABASE: scratch }))
      t.equal(r.code, EXIT.check, r.stderr)
      t.match(readFileSync(report, 'utf8'), /— check-failed[\s\S]*FAILED/, 'the failed drill is in the runbook log')
      if (c.name.includes('cmd')) t.match(readFileSync(report, 'utf8'), /smoke failed/, "the check's own output is in the report")
      t.notMatch(r.stdout + r.stderr + readFileSync(report, 'utf8'), /hunter2/, 'no query value in the output or the report')
      const doc = JSON.parse(r.stdout)
      t.match(doc, { ok: false, exitCode: EXIT.check, verdict: 'check-failed' })
      t.match(doc.error, c.failing)
      t.equal(doc.checks.filter((x: { ok: boolean }) => !x.ok).length, 1, 'exactly the one failing check failed')
      t.notOk(databaseExists(scratch), 'scratch database dropped')
    })
  }
})

t.test('a corrupted artifact fails at verify; a missed objective has its own code', async (t) => {
  const { db, base, path } = await fixture(t)
  const scratch = drillName(t)
  const r = await run(DRILL, ['--json', '--rto', '1ms'], pgEnv(db, { BACKUP_BASE: base, DRILL_DATABASE: scratch }))
  t.equal(r.code, EXIT.objective, r.stderr)
  t.match(JSON.parse(r.stdout), { verdict: 'objective-missed', judgement: { rto: 'missed' } })
  t.notOk(databaseExists(scratch))

  const dump = join(path, 'postgres.dump.zst')
  const bytes = readFileSync(dump)
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff
  writeFileSync(dump, bytes)
  const bad = await run(DRILL, ['--json'], pgEnv(db, { BACKUP_BASE: base, DRILL_DATABASE: scratch }))
  t.equal(bad.code, EXIT.verification, bad.stderr)
  const doc = JSON.parse(bad.stdout)
  t.match(doc, { verdict: 'failed', error: /SHA-256/ })
  t.match(doc.phases[1], { name: 'verify', status: 'failed' })
  t.notOk(databaseExists(scratch))
})

t.test('a dry-run drill verifies without any database connection', async (t) => {
  const { db, base } = await fixture(t)
  const r = await run(DRILL, ['--dry-run', '--json'], cleanEnv({ BACKUP_BASE: base, PGHOST: '/nonexistent', PGPORT: '1' }))
  t.equal(r.code, 0, r.stderr)
  t.match(JSON.parse(r.stdout), { ok: true, dryRun: true, rtoMs: null, sourceDatabase: db })
})

t.test('a backup stamped in the future (clock skew) is neither drilled nor counted, as status.sh says', async (t) => {
  const { base, name } = await fixture(t)
  // The same backup again, stamped 30 days ahead under its matching name, checksums resealed.
  const ahead = new Date(Date.now() + 30 * 86_400_000)
  const future = `conductor-backup-${ahead.toISOString().slice(0, 19).replace(/[-:]/g, '')}Z`
  cpSync(join(base, name), join(base, future), { recursive: true })
  resealArtifact(join(base, future), (m) => {
    m.artifact = future
    m.createdAt = ahead.toISOString()
    m.completedAt = ahead.toISOString()
  })
  const r = await run(DRILL, ['--dry-run', '--json'], cleanEnv({ BACKUP_BASE: base }))
  t.equal(r.code, 0, r.stderr)
  const doc = JSON.parse(r.stdout)
  t.equal(doc.artifact, name, 'the drill rehearses the newest backup made with a sane clock')
  t.ok(doc.rpo.newestAgeMs > 0, `RPO counts from it, not from the future one (${doc.rpo.newestAgeMs} ms)`)
})

t.test('SIGTERM mid-drill still drops the scratch database, and records nothing', async (t) => {
  const { db, base } = await fixture(t)
  const scratch = drillName(t)
  const report = join(tempDir(t), 'drills.md')
  const child = spawn(DRILL, ['--check-cmd', 'sleep 60', '--report', report], {
    cwd: REPO,
    env: pgEnv(db, { BACKUP_BASE: base, DRILL_DATABASE: scratch }),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const done = collect(child)
  const until = Date.now() + 30000
  while (!databaseExists(scratch) && Date.now() < until) await new Promise((r) => setTimeout(r, 100))
  t.ok(databaseExists(scratch), 'the drill got as far as the scratch database')
  await new Promise((r) => setTimeout(r, 1500))
  child.kill('SIGTERM')
  const r = await done
  t.equal(r.code, EXIT.interrupted, r.stderr)
  t.notOk(databaseExists(scratch), 'scratch database dropped on interrupt')
  // A cancelled drill measured nothing: no 'failed' record to skew the history's RTO summary.
  t.notOk(existsSync(report), 'no report section for a cancelled drill')
  t.notOk(existsSync(historyPathFor(report)), 'no history line for a cancelled drill')
  t.match(r.stderr, /interrupted by SIGTERM/)
  t.notMatch(r.stderr, /drill failed|check .* FAILED/, 'only the interrupt is reported')
})
