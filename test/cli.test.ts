// Behaviour an operator sees around the edges: help, cron use, collisions.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import t from 'tap'
import { artifactName } from '../lib/artifact/naming.ts'
import { BACKUP, cleanEnv, collect, completeArtifacts, RESTORE, run, sh, tempDir } from './helpers.ts'

t.test('--help documents flags, environment and exit codes', async (t) => {
  const b = await run(BACKUP, ['--help'])
  t.equal(b.code, 0)
  for (const word of ['--output', '--dry-run', '--include-postgres', 'INCLUDE_POSTGRES', 'ENABLE_POSTGRES_DUMP', 'Exit codes']) {
    t.match(b.stdout, word)
  }
  const r = await run(RESTORE, ['-h'])
  t.equal(r.code, 0)
  for (const word of ['BACKUP_BASE', 'RESTORE_POSTGRES', '--dry-run', 'dropped and recreated', 'Exit codes']) t.match(r.stdout, word)
})

t.test('cron: absolute path from another directory, --json, no colour', async (t) => {
  const out = tempDir(t)
  const r = await collect(spawn(BACKUP, ['--output', out, '--json'], { cwd: '/', env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] }))
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '', 'silent on stderr when all is well')
  const lines = r.stdout.trim().split('\n')
  t.equal(lines.length, 1, 'exactly one line on stdout')
  const result = JSON.parse(lines[0])
  t.match(result, { ok: true, dryRun: false, artifact: /^conductor-backup-\d{8}T\d{6}Z$/, postgres: { status: 'skipped' } })
  t.same(completeArtifacts(out), [result.artifact])
  t.notMatch(r.stdout, /\x1b\[/, 'no escape codes')

  const v = await collect(
    spawn(RESTORE, ['--json', '--dry-run', result.artifact], { cwd: '/', env: cleanEnv({ BACKUP_BASE: out }), stdio: ['ignore', 'pipe', 'pipe'] }),
  )
  t.equal(v.code, 0, v.stderr)
  t.match(JSON.parse(v.stdout), { ok: true, dryRun: true, artifact: result.artifact })
})

t.test('a finished artifact is never overwritten; a busy second moves on to the next', async (t) => {
  const out = tempDir(t)
  // Occupy the names of the next few seconds with "finished" artifacts.
  const now = Date.now()
  const taken = [0, 1, 2, 3, 4, 5].map((s) => artifactName(new Date(now + s * 1000)))
  for (const name of taken) {
    mkdirSync(join(out, name))
    writeFileSync(join(out, name, 'manifest.json'), 'original')
  }
  const r = await run(BACKUP, ['--output', out])
  t.equal(r.code, 1, r.stderr)
  t.match(r.stderr, /already exist.*run again/)
  for (const name of taken) t.equal(readFileSync(join(out, name, 'manifest.json'), 'utf8'), 'original')
  t.same(readdirSync(out).sort(), [...taken].sort(), 'no partial left behind')
})

t.test("the guide's steps back to back: two backups in one second both succeed", async (t) => {
  const out = tempDir(t)
  const r = await sh(`./scripts/backup.sh --output ${out} && ./scripts/backup.sh --output ${out}`)
  t.equal(r.code, 0, r.stderr)
  const names = completeArtifacts(out).sort()
  t.equal(names.length, 2, 'two artifacts')
  t.not(names[0], names[1])
})
