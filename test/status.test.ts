// status.sh: listing artifacts and checking the newest is recent enough, as monitoring runs it.
import { createHash } from 'node:crypto'
import { cpSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { parseArtifactStamp, type ArtifactEntry } from '../lib/artifact/list.ts'
import { freshness } from '../lib/commands/status.ts'
import { manifestSumLine } from '../lib/artifact/manifest.ts'
import { artifactName, MANIFEST_FILE, MANIFEST_SUM_FILE } from '../lib/artifact/naming.ts'
import { BACKUP, cleanEnv, completeArtifacts, DUMP_ENABLED, pgEnv, REPO, run, scratchDatabase, tempDir, type RunResult } from './helpers.ts'

const STATUS = join(REPO, 'scripts', 'status.sh')
const HOUR = 3_600_000
const DAY = 24 * HOUR

/** The caller's DR_RPO_TARGET must not leak in, as cleanEnv does for the other switches. */
const env = (extra: Record<string, string | undefined> = {}) => cleanEnv({ DR_RPO_TARGET: undefined, ...extra })

/** `--json` promises exactly one document on stdout, whatever happened. */
function oneJson(t: Test, r: RunResult): any {
  const lines = r.stdout.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 1, `exactly one JSON line on stdout: ${r.stdout}`)
  return JSON.parse(lines[0] ?? 'null')
}

/**
 * Makes a real artifact look as if it had been taken at `when`: the
 * directory name, the manifest's times and name, and the checksum line
 * all move together, so it is still a complete, valid artifact.
 */
function backdate(base: string, name: string, when: Date): string {
  const to = artifactName(when)
  renameSync(join(base, name), join(base, to))
  const dir = join(base, to)
  const manifest = JSON.parse(readFileSync(join(dir, MANIFEST_FILE), 'utf8'))
  manifest.artifact = to
  manifest.createdAt = when.toISOString()
  manifest.completedAt = new Date(when.getTime() + 1000).toISOString()
  const text = JSON.stringify(manifest, null, 2) + '\n'
  writeFileSync(join(dir, MANIFEST_FILE), text)
  writeFileSync(join(dir, MANIFEST_SUM_FILE), manifestSumLine(createHash('sha256').update(text).digest('hex')))
  return to
}

const HOSTILE_PARTIAL = '.conductor-backup-20240101T000000Z\nerror: forged\x1b[31m.partial'

/**
 * One directory with everything status must tell apart: a fresh backup, a
 * stale one (3 days), a damaged one (1 day), a partial, a hostile partial
 * name, a name that only looks like an artifact, and unrelated clutter.
 */
async function fixture(t: Test) {
  const base = tempDir(t)
  const db = scratchDatabase(t)
  for (let i = 0; i < 2; i++) {
    const r = await run(BACKUP, ['--output', base], pgEnv(db, { ...DUMP_ENABLED, DR_RPO_TARGET: undefined }))
    t.equal(r.code, 0, r.stderr)
  }
  const [older, fresh] = completeArtifacts(base).sort()
  const now = Date.now()
  const stale = backdate(base, older!, new Date(now - 3 * DAY))
  const damaged = artifactName(new Date(now - DAY))
  cpSync(join(base, fresh!), join(base, damaged), { recursive: true })
  writeFileSync(join(base, damaged, MANIFEST_SUM_FILE), `${'0'.repeat(64)}  manifest.json\n`)
  const partial = `.${artifactName(new Date(now - 2 * HOUR))}.partial`
  mkdirSync(join(base, partial))
  mkdirSync(join(base, HOSTILE_PARTIAL))
  mkdirSync(join(base, `${artifactName(new Date(now))}\nforged`))
  writeFileSync(join(base, 'notes.txt'), 'not a backup')
  writeFileSync(join(base, artifactName(new Date(now - 4 * DAY))), 'a file with an artifact name')
  mkdirSync(join(base, 'lost+found'))
  return { base, fresh: fresh!, stale, damaged, partial }
}

t.test('parseArtifactStamp reads names and their partial form, and nothing else', async (t) => {
  t.same(parseArtifactStamp('conductor-backup-20240315T120000Z'), new Date('2024-03-15T12:00:00Z'))
  t.same(parseArtifactStamp('.conductor-backup-20240315T120000Z.partial'), new Date('2024-03-15T12:00:00Z'))
  for (const bad of ['conductor-backup-20241315T120000Z', 'conductor-backup-20240230T120000Z', 'conductor-backup-20240315T120000Z\n', 'backup-20240315T120000Z', '.conductor-backup-x.partial', '']) {
    t.equal(parseArtifactStamp(bad), null, JSON.stringify(bad))
  }
})

t.test('lists complete, damaged and partial artifacts newest first; clutter ignored', async (t) => {
  const f = await fixture(t)
  const r = await run(STATUS, ['--json'], env({ BACKUP_BASE: f.base }))
  t.equal(r.code, 0, r.stderr)
  const doc = oneJson(t, r)
  t.match(doc, { ok: true, newest: f.fresh, stale: false, maxAgeMs: null })
  t.ok(doc.newestAgeMs >= 0 && doc.newestAgeMs < HOUR, 'fresh backup is young')
  t.same(
    doc.artifacts.map((a: any) => [a.name, a.kind]),
    [
      [f.fresh, 'complete'],
      [f.damaged, 'damaged'],
      [f.stale, 'complete'],
    ],
  )
  t.match(doc.artifacts[1].problem, /does not match its checksum/)
  t.match(doc.artifacts[2], { createdAt: String, bytes: Number, database: /^cdr_test_/, problem: null })
  t.same(
    doc.partials.map((p: any) => p.name),
    [f.partial, HOSTILE_PARTIAL],
    'partials newest first, the hostile name passed through JSON intact',
  )
  t.ok(doc.partials[0].idleMs >= 0 && doc.partials[0].idleMs < HOUR, 'partial age from its mtime')

  // Warnings: one line each, the hostile name escaped and unable to forge a line.
  const warnings = r.stderr.split('\n').filter(Boolean)
  t.equal(warnings.length, 3, r.stderr)
  t.ok(warnings.every((l) => l.startsWith('warning: ')), r.stderr)
  t.match(r.stderr, `damaged artifact '${f.damaged}'`)
  t.match(r.stderr, "'.conductor-backup-20240101T000000Z\\nerror: forged\\x1b[31m.partial'")
  t.notMatch(r.stderr, /\x1b/)

  const h = await run(STATUS, [f.base], env())
  t.equal(h.code, 0, h.stderr)
  const lines = h.stdout.split('\n').filter(Boolean)
  t.match(lines[0], `Backups in ${f.base}`)
  t.match(lines[1], /NAME +AGE +SIZE +DATABASE +STATE/)
  t.equal(lines.length, 2 + 5 + 1, h.stdout)
  t.match(lines[2], new RegExp(`^  ${f.fresh} .* complete$`))
  t.match(lines[6], /^  \.conductor-backup-20240101T000000Z\\nerror: forged\\x1b\[31m\.partial +\? .* partial$/, 'a forged name has no stamp: age unknown')
  const stateColumn = lines[1]!.indexOf('STATE')
  t.ok(lines.slice(2, 7).every((l) => l.length > stateColumn && l[stateColumn - 1] === ' '), 'columns aligned')
  t.match(lines[7], `newest backup ${f.fresh}`)
  t.notMatch(h.stdout, /\x1b/)
})

t.test('--max-age and DR_RPO_TARGET', async (t) => {
  const f = await fixture(t)
  const onlyStale = tempDir(t)
  cpSync(join(f.base, f.stale), join(onlyStale, f.stale), { recursive: true })
  cpSync(join(f.base, f.damaged), join(onlyStale, f.damaged), { recursive: true })
  mkdirSync(join(onlyStale, HOSTILE_PARTIAL))

  t.test('a fresh backup meets --max-age 1h', async (t) => {
    const r = await run(STATUS, ['--max-age', '1h', '--json', f.base], env())
    t.equal(r.code, 0, r.stderr)
    t.match(oneJson(t, r), { ok: true, stale: false, maxAgeMs: HOUR, newest: f.fresh })
  })

  t.test('only a stale backup (a newer damaged one does not count): exit 6 naming it and its age', async (t) => {
    const r = await run(STATUS, ['--max-age', '1h'], env({ BACKUP_BASE: onlyStale }))
    t.equal(r.code, 6, r.stderr)
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('error: '))
    t.equal(errors.length, 1)
    t.match(errors[0], new RegExp(`^error: newest complete backup ${f.stale} is 3d 00h old, older than 1h 00m \\(--max-age\\) \\(also 1 damaged, 1 partial\\); check`))
    t.ok(r.stderr.split('\n').filter(Boolean).every((l) => /^(warning|error): /.test(l)), 'every stderr line is its own message')
    t.match(r.stdout, f.stale, 'the listing is still shown')

    const j = await run(STATUS, ['--max-age=1h', '--json', onlyStale], env())
    t.equal(j.code, 6, j.stderr)
    const doc = oneJson(t, j)
    t.match(doc, { ok: false, exitCode: 6, error: new RegExp(`${f.stale} is 3d 00h old`), fix: /backup/ })
    t.match(doc, { stale: true, maxAgeMs: HOUR, newest: f.stale, newestAgeMs: Number }, 'the listing rides along')
    t.same(
      doc.artifacts.map((a: any) => [a.name, a.kind]),
      [
        [f.damaged, 'damaged'],
        [f.stale, 'complete'],
      ],
    )
    t.same(doc.partials.map((p: any) => p.name), [HOSTILE_PARTIAL])
  })

  t.test('DR_RPO_TARGET stands in for --max-age; the flag wins', async (t) => {
    const stale = await run(STATUS, ['--json', onlyStale], env({ DR_RPO_TARGET: '1h' }))
    t.equal(stale.code, 6, stale.stderr)
    t.match(oneJson(t, stale), { ok: false, exitCode: 6, error: /\(DR_RPO_TARGET\)/ })

    const fresh = await run(STATUS, ['--json', f.base], env({ DR_RPO_TARGET: '1h' }))
    t.equal(fresh.code, 0, fresh.stderr)
    t.match(oneJson(t, fresh), { ok: true, maxAgeMs: HOUR })

    const flag = await run(STATUS, ['--json', '--max-age', '4d', onlyStale], env({ DR_RPO_TARGET: '1h' }))
    t.equal(flag.code, 0, flag.stderr)
    t.match(oneJson(t, flag), { ok: true, stale: false, maxAgeMs: 4 * DAY, newest: f.stale })
  })
})

t.test('an empty backup directory: fine without a limit, exit 6 with one', async (t) => {
  const empty = tempDir(t)
  const r = await run(STATUS, ['--json'], env({ BACKUP_BASE: empty }))
  t.equal(r.code, 0, r.stderr)
  t.match(oneJson(t, r), { ok: true, newest: null, newestAgeMs: null, artifacts: [], partials: [] })
  const h = await run(STATUS, [empty], env())
  t.equal(h.code, 0, h.stderr)
  t.match(h.stdout, /no complete backup with a database dump in/)

  const m = await run(STATUS, ['--json', '--max-age', '26h'], env({ BACKUP_BASE: empty }))
  t.equal(m.code, 6, m.stderr)
  t.match(oneJson(t, m), { ok: false, exitCode: 6, error: /^no complete backup in '.*' \(one without a database dump does not count\), required within 1d 02h \(--max-age\)$/, stale: true, newest: null, artifacts: [] })
})

t.test('usage and input errors, one JSON document each', async (t) => {
  const base = tempDir(t)
  const cases: Array<{ args: string[]; extra?: Record<string, string>; code: number; error: RegExp }> = [
    { args: ['--max-age', '5x', base], code: 2, error: /--max-age must be a duration .*'5x'/ },
    { args: [base], extra: { DR_RPO_TARGET: 'soon' }, code: 2, error: /DR_RPO_TARGET must be a duration/ },
    { args: ['--max-age', base], code: 2, error: /./ },
    { args: [], code: 2, error: /BACKUP_BASE is not set/ },
    { args: [], extra: { BACKUP_BASE: '' }, code: 2, error: /BACKUP_BASE is not set/ },
    { args: [base, base], code: 2, error: /unexpected argument/ },
    { args: ['--bogus', base], code: 2, error: /unknown option/ },
    { args: [], extra: { BACKUP_BASE: join(base, 'nope') }, code: 3, error: /backup directory '.*nope' does not exist/ },
    { args: [join(base, 'file')], code: 3, error: /is not a directory/ },
  ]
  writeFileSync(join(base, 'file'), '')
  for (const c of cases) {
    const r = await run(STATUS, ['--json', ...c.args], env(c.extra))
    t.equal(r.code, c.code, `${JSON.stringify(c)}: ${r.stderr}`)
    t.match(oneJson(t, r), { ok: false, exitCode: c.code, error: c.error })
  }
})

t.test('--help documents the flags, the JSON shape and exit codes', async (t) => {
  const r = await run(STATUS, ['--help'], env())
  t.equal(r.code, 0)
  for (const word of ['BACKUP_BASE', '--max-age', 'DR_RPO_TARGET', '--json', 'newestAgeMs', 'exitCode 6', 'Exit codes']) t.match(r.stdout, word)
})

t.test('a fresh artifact without a database dump does not count as a backup for --max-age', async (t) => {
  const base = tempDir(t)
  const r = await run(BACKUP, ['--output', base], env())
  t.equal(r.code, 0, r.stderr)
  const s = await run(STATUS, ['--max-age', '1h', '--json'], env({ BACKUP_BASE: base }))
  t.equal(s.code, 6, s.stderr)
  t.match(oneJson(t, s), { ok: false, exitCode: 6, error: /no complete backup in .* \(one without a database dump does not count\)/ })
})

t.test('a backup stamped in the future does not count as the newest: --max-age still judges the rest', async (t) => {
  const now = new Date('2026-11-27T12:00:00Z')
  const entry = (createdAt: Date): ArtifactEntry => ({
    name: artifactName(createdAt),
    path: '/x',
    kind: 'complete',
    createdAt,
    completedAt: createdAt,
    bytes: 1,
    database: 'conductor',
    problem: null,
    modifiedAt: createdAt,
  })
  const old = entry(new Date(now.getTime() - 330 * 86_400_000))
  const ahead = entry(new Date(now.getTime() + 365 * 86_400_000))
  const skewed = entry(new Date(now.getTime() + 5 * 60_000))
  const f = freshness([ahead, old], now, 26 * 3_600_000)
  t.same(f.future, [ahead.name], 'reported')
  t.equal(f.newest, old.name, 'judged by the newest one not in the future')
  t.equal(f.stale, true, 'and 330 days is stale')
  const g = freshness([skewed, old], now, 26 * 3_600_000)
  t.same(g.future, [], 'minutes of clock skew between hosts are tolerated')
  t.equal(g.newest, skewed.name)
  t.equal(g.newestAgeMs, 0)
  t.equal(g.stale, false)
})
