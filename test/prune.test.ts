// prune.sh end to end on real directories, plus runPrune against a store whose deletions fail.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { artifactName, MANIFEST_SUM_FILE, partialName, POSTGRES_DUMP_ZST_FILE } from '../lib/artifact/naming.ts'
import { DrError } from '../lib/cli/errors.ts'
import { hasKeepRules, joinKeepValues, KEEP_FLAGS, keepRules } from '../lib/cli/keep-flags.ts'
import { parseArgs } from '../lib/cli/args.ts'
import { runPrune } from '../lib/commands/prune.ts'
import { LocalStore } from '../lib/storage/local.ts'
import type { Store } from '../lib/storage/store.ts'
import { BACKUP, cleanEnv, collect, quiet, REPO, run, sh, syntheticArtifact, tempDir, type RunResult } from './helpers.ts'

const PRUNE = join(REPO, 'scripts', 'prune.sh')
const STATUS = join(REPO, 'scripts', 'status.sh')
const HOUR = 3_600_000
const DAY = 24 * HOUR
const KEEP_VARIABLES = ['LAST', 'HOURLY', 'DAILY', 'WEEKLY', 'MONTHLY', 'YEARLY'].map((r) => `BACKUP_KEEP_${r}`)

/** The caller's BACKUP_KEEP_* must not leak in. */
function env(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cleanEnv({ ...Object.fromEntries(KEEP_VARIABLES.map((v) => [v, undefined])), ...extra })
}

function oneJson(t: Test, r: RunResult): any {
  const lines = r.stdout.split('\n').filter((l) => l !== '')
  t.equal(lines.length, 1, `exactly one JSON line on stdout: ${r.stdout}`)
  return JSON.parse(lines[0] ?? 'null')
}


/**
 * A complete artifact as backup.sh publishes one, written directly (60 of
 * them take milliseconds): manifest and sidecar, and with `database` a
 * small dump file listed in the manifest (listing never hashes it).
 */
function writeArtifact(base: string, when: Date, database?: string): string {
  const { name, files } = syntheticArtifact(when, database)
  mkdirSync(join(base, name))
  for (const [file, text] of Object.entries(files)) writeFileSync(join(base, name, file), text)
  return name
}

/** A complete-looking artifact whose sidecar does not match: listed as damaged. */
function writeDamaged(base: string, when: Date): string {
  const name = writeArtifact(base, when)
  writeFileSync(join(base, name, MANIFEST_SUM_FILE), `${'0'.repeat(64)}  manifest.json\n`)
  return name
}

/** A backup's work in progress, last written `idleMs` ago. */
function writePartial(base: string, started: Date, idleMs: number): string {
  const name = partialName(artifactName(started))
  mkdirSync(join(base, name))
  writeFileSync(join(base, name, POSTGRES_DUMP_ZST_FILE), 'half a dump')
  const mtime = new Date(Date.now() - idleMs)
  // Idle means nothing in it was written either: a run streaming into its dump keeps the file's mtime fresh.
  utimesSync(join(base, name, POSTGRES_DUMP_ZST_FILE), mtime, mtime)
  utimesSync(join(base, name), mtime, mtime)
  return name
}

const onDisk = (base: string) => readdirSync(base).sort().reverse()

/** 60 daily backups at 02:00 UTC, 2024-11-20 … 2025-01-18: the history test/retention.test.ts derives by hand. */
function sixtyDays(base: string): string[] {
  const first = Date.parse('2024-11-20T02:00:00Z')
  return Array.from({ length: 60 }, (_, i) => writeArtifact(base, new Date(first + i * DAY), 'conductor'))
}
const day = (d: string) => `conductor-backup-${d.replace(/-/g, '')}T020000Z`

t.test('60 daily backups: the dry run shows the plan and deletes nothing; the run keeps exactly what the table says', async (t) => {
  const base = tempDir(t, 'cdr-prune-sixty-')
  const all = sixtyDays(base)
  const rules = ['--keep-last', '3', '--keep-daily', '7', '--keep-weekly', '4', '--keep-monthly', '3']
  const survivors: Record<string, string[]> = {
    [day('2025-01-18')]: ['last 3', 'daily 2025-01-18', 'weekly 2025-W03', 'monthly 2025-01'],
    [day('2025-01-17')]: ['last 3', 'daily 2025-01-17'],
    [day('2025-01-16')]: ['last 3', 'daily 2025-01-16'],
    [day('2025-01-15')]: ['daily 2025-01-15'],
    [day('2025-01-14')]: ['daily 2025-01-14'],
    [day('2025-01-13')]: ['daily 2025-01-13'],
    [day('2025-01-12')]: ['daily 2025-01-12', 'weekly 2025-W02'],
    [day('2025-01-05')]: ['weekly 2025-W01'],
    [day('2024-12-31')]: ['monthly 2024-12'],
    [day('2024-12-29')]: ['weekly 2024-W52'],
    [day('2024-11-30')]: ['monthly 2024-11'],
  }

  const dry = await run(PRUNE, [...rules, '--dry-run', '--json', base], env())
  t.equal(dry.code, 0, dry.stderr)
  t.same(onDisk(base), [...all].reverse(), 'the dry run deleted nothing')
  const plan = oneJson(t, dry)
  t.match(plan, { ok: true, dryRun: true, store: base, rules: { last: 3, daily: 7, weekly: 4, monthly: 3 }, removed: [], kept: { complete: 11, damaged: 0, partial: 0 } })
  t.equal(plan.artifacts.length, 60)
  t.same(
    plan.artifacts.map((a: any) => a.name),
    [...all].reverse(),
    'newest first',
  )
  const keptInPlan = Object.fromEntries(plan.artifacts.filter((a: any) => a.action === 'keep').map((a: any) => [a.name, a.reasons]))
  t.same(keptInPlan, survivors, 'each survivor with every rule that keeps it')
  t.ok(
    plan.artifacts.filter((a: any) => a.action === 'remove').every((a: any) => a.reasons.join() === 'no rule keeps it' && a.removed === false),
    'the others: removed by no rule, and not removed in a dry run',
  )
  t.equal(plan.toRemove.length, 49)
  t.equal(plan.toRemove[0], day('2024-11-20'), 'oldest deleted first')

  const human = await run(PRUNE, [...rules, '--dry-run', base], env())
  t.equal(human.code, 0, human.stderr)
  const lines = human.stdout.split('\n').filter(Boolean)
  t.match(lines[0], /^Dry run: nothing is deleted\. Prune .*, keeping last 3, daily 7, weekly 4, monthly 3$/)
  t.match(lines[1], /^  ACTION +NAME +WHY$/)
  t.match(lines[2], new RegExp(`^  keep +${day('2025-01-18')}  last 3, daily 2025-01-18, weekly 2025-W03, monthly 2025-01$`))
  t.match(lines[8], new RegExp(`^  keep +${day('2025-01-12')}  daily 2025-01-12, weekly 2025-W02$`))
  t.match(lines[9], new RegExp(`^  would remove +${day('2025-01-11')}  no rule keeps it$`), 'Jan 11 is the newest that no rule keeps')
  t.equal(lines.length, 2 + 60 + 1)
  t.match(lines.at(-1), /^dry run: would remove 49 artifacts, keep 11 complete$/)
  t.same(onDisk(base), [...all].reverse(), 'still nothing deleted')

  const r = await run(PRUNE, [...rules, '--json'], env({ BACKUP_BASE: base }))
  t.equal(r.code, 0, r.stderr)
  t.same(onDisk(base), Object.keys(survivors), 'exactly the survivors are left')
  const doc = oneJson(t, r)
  t.match(doc, { ok: true, dryRun: false, kept: { complete: 11 } })
  t.equal(doc.removed.length, 49)
  t.same(doc.removed, doc.toRemove)
  t.ok(doc.artifacts.filter((a: any) => a.action === 'remove').every((a: any) => a.removed === true))

  const again = await run(PRUNE, [...rules, '--json', base], env())
  t.equal(again.code, 0, again.stderr)
  t.match(oneJson(t, again), { ok: true, removed: [], toRemove: [] }, 'a second run finds nothing more to delete')
})

t.test('a --json document longer than a pipe holds reaches a slow reader whole', async (t) => {
  // Once a bug: the run exited right after writing, and what the pipe (64 KiB) had not taken yet was
  // lost: 'status.sh --json | jq' over a few hundred artifacts got half a document, with exit 0.
  const base = tempDir(t, 'cdr-prune-bigjson-')
  const now = Date.now()
  for (let i = 1; i <= 300; i++) writeArtifact(base, new Date(now - i * 3_600_000))
  for (const [script, args] of [[STATUS, ['--json', base]], [PRUNE, ['--dry-run', '--keep-last', '1', '--json', base]]] as const) {
    // Without tap's NODE_OPTIONS: its process-info hook delays the child's exit, which hid the bug.
    const r = await sh(`${script} ${args.map((a) => `'${a}'`).join(' ')} | { sleep 1; cat; }`, cleanEnv({ NODE_OPTIONS: undefined }))
    t.equal(r.code, 0, r.stderr)
    t.ok(r.stdout.length > 64 * 1024, `longer than a pipe: ${r.stdout.length} bytes`)
    t.doesNotThrow(() => JSON.parse(r.stdout), `${script.split('/').pop()}: one whole JSON document`)
  }
})

t.test('other rule combinations on the same history', async (t) => {
  const cases: Array<{ args: string[]; extra?: Record<string, string>; left: string[] }> = [
    { args: ['--keep-yearly', '5'], left: [day('2025-01-18'), day('2024-12-31')] },
    { args: ['--keep-monthly', '12', '--keep-last', '1'], left: [day('2025-01-18'), day('2024-12-31'), day('2024-11-30')] },
    {
      args: ['--keep-weekly', '10'],
      left: [day('2025-01-18'), day('2025-01-12'), day('2025-01-05'), day('2024-12-29'), day('2024-12-22'), day('2024-12-15'), day('2024-12-08'), day('2024-12-01'), day('2024-11-24')],
    },
    { args: [], extra: { BACKUP_KEEP_DAILY: '2', BACKUP_KEEP_MONTHLY: '2' }, left: [day('2025-01-18'), day('2025-01-17'), day('2024-12-31')] },
  ]
  for (const [i, c] of cases.entries()) {
    const base = tempDir(t, `cdr-prune-combo-${i}-`)
    sixtyDays(base)
    const r = await run(PRUNE, [...c.args, base], env(c.extra))
    t.equal(r.code, 0, r.stderr)
    t.same(onDisk(base), c.left, JSON.stringify(c))
  }
})

t.test('damaged artifacts are left alone; an abandoned partial goes, a fresh one stays', async (t) => {
  const base = tempDir(t, 'cdr-prune-mixed-')
  const now = Date.now()
  const newest = writeArtifact(base, new Date(now - 1 * HOUR), 'conductor')
  const older = [2, 3, 4].map((d) => writeArtifact(base, new Date(now - d * DAY), 'conductor'))
  const damaged = writeDamaged(base, new Date(now - 5 * DAY))
  const abandoned = writePartial(base, new Date(now - 3 * DAY), 3 * DAY)
  const running = writePartial(base, new Date(now - 10 * 60_000), 60_000)
  const recent = writePartial(base, new Date(now - 6 * HOUR), 2 * HOUR)

  const r = await run(PRUNE, ['--keep-last', '1', '--json', base], env())
  t.equal(r.code, 0, r.stderr)
  t.same(onDisk(base), [newest, damaged, running, recent, abandoned].filter((n) => n !== abandoned).sort().reverse())
  for (const gone of [...older, abandoned]) t.notOk(existsSync(join(base, gone)), `${gone} removed`)
  const doc = oneJson(t, r)
  t.same(doc.removed, [abandoned, ...[...older].reverse()], 'partials first, then the oldest complete ones first')
  const byName = Object.fromEntries(doc.artifacts.map((a: any) => [a.name, a]))
  t.match(byName[damaged], { kind: 'damaged', action: 'keep', removed: false, problem: /does not match its checksum/, reasons: [/^damaged: prune never removes it/] })
  t.match(byName[abandoned], { kind: 'partial', action: 'remove', removed: true, reasons: [/^abandoned partial, idle 3d 00h, longer than --partial-age 1d 00h$/] })
  t.match(byName[running], { kind: 'partial', action: 'keep', reasons: [/^partial, idle .*: may be a running backup \(--partial-age 1d 00h\)$/] })
  t.match(doc.kept, { complete: 1, damaged: 1, partial: 2 })
  const warnings = r.stderr.split('\n').filter(Boolean)
  t.equal(warnings.length, 1, r.stderr)
  t.match(warnings[0], `warning: damaged artifact '${damaged}' left in place`)

  t.test('--partial-age decides which partial is abandoned', async (t) => {
    const r = await run(PRUNE, ['--keep-last', '1', '--partial-age', '1h', '--json', base], env())
    t.equal(r.code, 0, r.stderr)
    t.same(oneJson(t, r).removed, [recent])
    t.same(onDisk(base), [newest, damaged, running].sort().reverse(), 'the partial written to a minute ago stays')
  })
})

t.test('a symbolic link named like an artifact is damaged: prune never deletes through it', async (t) => {
  const base = tempDir(t, 'cdr-prune-link-')
  const elsewhere = tempDir(t, 'cdr-prune-archive-')
  const now = Date.now()
  const older = writeArtifact(base, new Date(now - 3 * DAY), 'conductor')
  const newest = writeArtifact(base, new Date(now - DAY), 'conductor')
  const archived = writeArtifact(elsewhere, new Date(now - 30 * DAY), 'conductor')
  const toNewest = artifactName(new Date(now - 20 * DAY))
  symlinkSync(newest, join(base, toNewest))
  symlinkSync(join(elsewhere, archived), join(base, archived))
  // Named like a run's work in progress, idle for ever: still a link, never emptied.
  const linkedPartial = partialName(artifactName(new Date(now - 40 * DAY)))
  symlinkSync(elsewhere, join(base, linkedPartial))
  const r = await run(PRUNE, ['--keep-last', '1', '--partial-age', '1s', '--json', base], env())
  t.equal(r.code, 0, r.stderr)
  const doc = oneJson(t, r)
  t.same(doc.removed, [older], 'only the real, older artifact')
  const byName = Object.fromEntries(doc.artifacts.map((a: any) => [a.name, a]))
  for (const link of [toNewest, archived, linkedPartial]) t.match(byName[link], { kind: 'damaged', action: 'keep', removed: false, problem: /is a symbolic link, not an artifact directory/ })
  for (const [dir, name] of [[base, newest], [elsewhere, archived]] as const) {
    t.same(readdirSync(join(dir, name)).sort(), ['manifest.json', 'manifest.json.sha256', 'postgres.dump.zst'].sort(), `${name}: manifest and sidecar intact`)
  }
  const status = await run(join(REPO, 'scripts', 'status.sh'), ['--json', base], env())
  const listed = JSON.parse(status.stdout).artifacts.find((a: any) => a.name === newest)
  t.match(listed, { kind: 'complete' }, `the newest complete backup is still complete: ${JSON.stringify(listed)}`)
})

t.test('the newest complete backup is always kept', async (t) => {
  const now = Date.now()
  const cases: Array<{ args: string[]; extra?: Record<string, string> }> = [
    { args: ['--keep-last', '0'] },
    { args: ['--keep-last=0', '--keep-daily=0', '--keep-yearly=0'] },
    { args: [], extra: { BACKUP_KEEP_WEEKLY: '0' } },
  ]
  for (const [i, c] of cases.entries()) {
    const base = tempDir(t, `cdr-prune-newest-${i}-`)
    const names = [1, 2, 3].map((d) => writeArtifact(base, new Date(now - d * DAY), 'conductor'))
    const damaged = writeDamaged(base, new Date(now - HOUR)) // newer than all of them, but it restores nothing
    const r = await run(PRUNE, [...c.args, '--json', base], env(c.extra))
    t.equal(r.code, 0, r.stderr)
    t.same(onDisk(base), [damaged, names[0]], JSON.stringify(c))
    const doc = oneJson(t, r)
    t.same(doc.artifacts.find((a: any) => a.name === names[0]).reasons, ['newest'])
  }
})

t.test('the newest backup with a database dump is kept when newer ones without a dump crowd it out', async (t) => {
  const base = tempDir(t, 'cdr-prune-dump-')
  const now = Date.now()
  const withDump = writeArtifact(base, new Date(now - 4 * DAY), 'conductor')
  writeArtifact(base, new Date(now - 5 * DAY), 'conductor')
  const without = [1, 2, 3].map((d) => writeArtifact(base, new Date(now - d * DAY)))
  const r = await run(PRUNE, ['--keep-last', '2', '--json', base], env())
  t.equal(r.code, 0, r.stderr)
  t.same(onDisk(base), [without[0], without[1], withDump])
  t.same(oneJson(t, r).artifacts.find((a: any) => a.name === withDump).reasons, ['newest with a database dump'])
})

t.test('flags win over BACKUP_KEEP_*, rule by rule', async (t) => {
  const base = tempDir(t, 'cdr-prune-env-')
  sixtyDays(base)
  const r = await run(PRUNE, ['--keep-last', '2', '--dry-run', '--json', base], env({ BACKUP_KEEP_LAST: '5', BACKUP_KEEP_MONTHLY: '2', BACKUP_KEEP_DAILY: ' ' }))
  t.equal(r.code, 0, r.stderr)
  const doc = oneJson(t, r)
  t.same(doc.rules, { last: 2, monthly: 2 }, 'the flag replaced BACKUP_KEEP_LAST, BACKUP_KEEP_MONTHLY still applies, a blank variable is unset')
  t.same(
    doc.artifacts.filter((a: any) => a.action === 'keep').map((a: any) => a.name),
    [day('2025-01-18'), day('2025-01-17'), day('2024-12-31')],
  )
})

t.test('usage errors: exit 2, one line, one JSON document, nothing deleted', async (t) => {
  const base = tempDir(t, 'cdr-prune-usage-')
  const names = [1, 2, 3].map((d) => writeArtifact(base, new Date(Date.now() - d * DAY), 'conductor'))
  const cases: Array<{ args: string[]; extra?: Record<string, string>; error: RegExp }> = [
    { args: [base], error: /^no retention rule given, so nothing would be kept$/ },
    { args: [base], extra: { BACKUP_KEEP_DAILY: '' }, error: /^no retention rule given/ },
    { args: ['--keep-last', '3x', base], error: /^--keep-last must be a whole number from 0 up, got '3x'$/ },
    { args: ['--keep-daily', '-1', base], error: /^--keep-daily must be a whole number from 0 up, got '-1'$/ },
    { args: ['--keep-weekly=-1', base], error: /^--keep-weekly must be a whole number from 0 up, got '-1'$/ },
    { args: ['--keep-monthly', '1.5', base], error: /^--keep-monthly must be a whole number/ },
    { args: ['--keep-yearly', '1e3', base], error: /^--keep-yearly must be a whole number/ },
    { args: ['--keep-hourly', '99999999999999999999', base], error: /^--keep-hourly must be a whole number/ },
    { args: ['--keep-daily', base], error: /^--keep-daily must be a whole number|needs a value/ },
    { args: ['--keep-daily', '7', base], extra: { BACKUP_KEEP_LAST: 'three' }, error: /^BACKUP_KEEP_LAST must be a whole number from 0 up, got 'three'$/ },
    { args: ['--keep-daily', '7', '--partial-age', 'soon', base], error: /^--partial-age must be a duration/ },
    { args: ['--keep-daily', '7'], error: /^BACKUP_BASE is not set$/ },
    { args: ['--keep-daily', '7', base, base], error: /^unexpected argument/ },
    { args: ['--keep-forever', '7', base], error: /^unknown option/ },
  ]
  for (const c of cases) {
    const r = await run(PRUNE, c.args, env(c.extra))
    t.equal(r.code, 2, `${JSON.stringify(c)}: ${r.stderr}`)
    const lines = r.stderr.split('\n').filter(Boolean)
    t.equal(lines.length, 1, r.stderr)
    t.match(lines[0], /^error: /)
    t.equal(r.stdout, '')
    const j = await run(PRUNE, ['--json', ...c.args], env(c.extra))
    t.equal(j.code, 2)
    t.match(oneJson(t, j), { ok: false, exitCode: 2, error: c.error, fix: String })
  }
  t.same(onDisk(base), [...names].sort().reverse(), 'nothing deleted')
})

t.test('a missing backup directory is exit 3', async (t) => {
  const base = tempDir(t, 'cdr-prune-missing-')
  const r = await run(PRUNE, ['--keep-daily', '7', '--json'], env({ BACKUP_BASE: join(base, 'nope') }))
  t.equal(r.code, 3, r.stderr)
  t.match(oneJson(t, r), { ok: false, exitCode: 3, error: /backup directory '.*nope' does not exist/ })
})

t.test('an empty directory: nothing to do', async (t) => {
  const base = tempDir(t, 'cdr-prune-empty-')
  const r = await run(PRUNE, ['--keep-daily', '7', base], env())
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /no artifacts/)
  t.match(r.stdout, /removed 0 artifacts, kept 0 complete/)
})

t.test('--help names the flags, the variables and the exit codes', async (t) => {
  const r = await run(PRUNE, ['--help'], env())
  t.equal(r.code, 0)
  for (const word of ['--keep-last', '--keep-hourly', '--keep-daily', '--keep-weekly', '--keep-monthly', '--keep-yearly', '--partial-age', '--dry-run', '--json', 'BACKUP_BASE', 'BACKUP_KEEP_YEARLY', 'Exit codes', 'docs/retention.md']) {
    t.match(r.stdout, word)
  }
})

t.test('an interrupt lets the deletion in progress finish and starts no other: nothing is left half deleted', async (t) => {
  const base = tempDir(t, 'cdr-prune-interrupt-')
  const start = Date.parse('2024-01-01T00:00:00Z')
  const names = Array.from({ length: 300 }, (_, i) => {
    const name = writeArtifact(base, new Date(start + i * HOUR))
    // Some bulk, so that deleting takes a while.
    for (let k = 0; k < 20; k++) writeFileSync(join(base, name, `data-${k}`), 'x')
    return name
  })
  const child = spawn(PRUNE, ['--keep-last', '1', base], { cwd: REPO, env: env(), stdio: ['ignore', 'pipe', 'pipe'] })
  // The plan is printed before the first deletion: interrupt as soon as it is out.
  let seen = ''
  child.stdout!.on('data', (d: Buffer) => {
    seen += d.toString('utf8')
    if (seen.split('\n').length > 2 + 300) child.kill('SIGINT')
  })
  const r = await collect(child)
  t.equal(r.code, 130, r.stderr)
  t.match(r.stderr, /^error: interrupted by SIGINT before finishing \(completed first, as it cannot be cut in half: removing conductor-backup-2024/)
  const left = onDisk(base)
  t.ok(left.length > 1 && left.length < 300, `stopped part way: ${left.length} left`)
  t.equal(left[0], names.at(-1), 'the newest is still there')
  t.same(left, names.slice(names.length - left.length).reverse(), 'the oldest went first, and only they')
  const store = new LocalStore(base)
  t.same(
    (await store.list()).filter((e) => e.kind !== 'complete').map((e) => e.name),
    [],
    'no damaged (half-deleted) artifact',
  )
})

t.test('keepRules: what backup.sh will reuse to prune after a backup', async (t) => {
  const parse = (argv: string[], e: NodeJS.ProcessEnv = {}) =>
    keepRules(parseArgs(joinKeepValues(argv), { boolean: ['json'], string: [...KEEP_FLAGS, 'output'] }).flags, e)
  t.same(parse(['--output', '/x']), {})
  t.notOk(hasKeepRules(parse(['--output', '/x'])))
  t.same(parse(['--keep-last', '3', '--keep-yearly=0']), { last: 3, yearly: 0 })
  t.ok(hasKeepRules({ yearly: 0 }), 'a zero rule is a given rule')
  t.same(parse(['--keep-daily', ' 7 '], { BACKUP_KEEP_DAILY: '1', BACKUP_KEEP_HOURLY: '24', BACKUP_KEEP_WEEKLY: '' }), { hourly: 24, daily: 7 })
  t.same(joinKeepValues(['--keep-last', '-1', '--', '--keep-daily', '-2']), ['--keep-last=-1', '--', '--keep-daily', '-2'])
  for (const [argv, e, message] of [
    [['--keep-last', '-1'], {}, /^--keep-last must be a whole number from 0 up, got '-1'$/],
    [['--keep-last', '0x10'], {}, /got '0x10'/],
    [[], { BACKUP_KEEP_MONTHLY: '+3' }, /^BACKUP_KEEP_MONTHLY must be a whole number from 0 up, got '\+3'$/],
    [['--keep-monthly', '3'], { BACKUP_KEEP_MONTHLY: '3 ' + 'months' }, /^BACKUP_KEEP_MONTHLY must be/],
  ] as const) {
    t.throws(() => parse([...argv], { ...e }), { exitCode: 2, message }, JSON.stringify([argv, e]))
  }
})


t.test('runPrune talks to any Store: stops at the first failed deletion and reports what was removed', async (t) => {
  const base = tempDir(t, 'cdr-prune-failing-')
  const now = Date.now()
  const names = [1, 2, 3, 4].map((d) => writeArtifact(base, new Date(now - d * DAY), 'conductor'))
  const local = new LocalStore(base)
  const calls: string[] = []
  // Another kind of store, e.g. a bucket: deleting the second artifact fails.
  const flaky: Store = {
    url: 's3://bucket/prefix',
    kind: 's3',
    create: () => Promise.resolve(null),
    list: () => local.list(),
    read: (name, file) => local.read(name, file),
    remove: async (entry) => {
      calls.push(entry.name)
      if (calls.length === 2) throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES', path: entry.path })
      await local.remove(entry)
    },
  }
  let caught: unknown
  try {
    await runPrune({ store: flaky, rules: { last: 1 }, partialAgeMs: DAY, dryRun: false, now: new Date(now) }, quiet)
  } catch (err) {
    caught = err
  }
  t.ok(caught instanceof DrError, 'a DrError')
  const e = caught as DrError
  t.equal(e.exitCode, 3, 'permission denied is the operator’s to fix')
  t.match(e.message, `cannot remove '${names[2]}' from 's3://bucket/prefix': permission denied`)
  t.match(e.message, `(removed before it: ${names[3]})`)
  t.match(e.fix, /run prune again/)
  t.match(e.details, { store: 's3://bucket/prefix', removed: [names[3]], toRemove: [names[3], names[2], names[1]] })
  t.same(calls, [names[3], names[2]], 'stopped at the failure: the third deletion was never tried')
  t.same(onDisk(base), [names[0], names[1], names[2]])

  t.test('a dry run never calls remove', async (t) => {
    calls.length = 0
    const result = await runPrune({ store: flaky, rules: { last: 1 }, partialAgeMs: DAY, dryRun: true, now: new Date(now) }, quiet)
    t.same(calls, [])
    t.same(result.toRemove, [names[2], names[1]])
  })
})

t.test('a partial whose dump file is still being written is not abandoned, however old its directory', async (t) => {
  const base = tempDir(t, 'cdr-prune-streaming-')
  const now = Date.now()
  writeArtifact(base, new Date(now - 1 * DAY), 'conductor')
  const streaming = writePartial(base, new Date(now - 3 * DAY), 3 * DAY)
  // The dump file keeps growing: its mtime is fresh while the directory's is old.
  writeFileSync(join(base, streaming, POSTGRES_DUMP_ZST_FILE), 'more of the dump')
  utimesSync(join(base, streaming), new Date(now - 3 * DAY), new Date(now - 3 * DAY))
  const r = await run(PRUNE, ['--keep-last', '1', '--json', base], env())
  t.equal(r.code, 0, r.stderr)
  t.ok(existsSync(join(base, streaming)), 'the running backup is kept')
})

t.test('backup --keep-*: a prune that fails after the backup names the complete new backup', async (t) => {
  const base = tempDir(t, 'cdr-prune-fails-')
  // Without a dump, like the new one: no rule keeps it for its database.
  const old = writeArtifact(base, new Date(Date.now() - 2 * DAY))
  const stuck = join(base, old, 'immutable')
  writeFileSync(stuck, 'x')
  // An immutable file (root cannot delete it either) makes the old artifact's removal fail.
  const chattr = spawnSync('chattr', ['+i', stuck])
  if (chattr.status !== 0) {
    t.comment(`skipped: chattr +i is not available here: ${chattr.stderr}`)
    return
  }
  t.teardown(() => void spawnSync('chattr', ['-i', stuck]))
  const tree = tempDir(t, 'cdr-prune-fails-tree-')
  writeFileSync(join(tree, 'a.txt'), 'hello\n')
  const r = await run(BACKUP, ['--output', base, '--path', tree, '--keep-last', '1', '--json'], env())
  t.not(r.code, 0, 'the prune failed, so the run did')
  const doc = oneJson(t, r)
  t.match(doc.error, /^backup (conductor-backup-\d{8}T\d{6}Z) is complete \(.*\), but pruning afterwards failed: cannot remove /)
  t.match(doc.artifact, /^conductor-backup-\d{8}T\d{6}Z$/)
  t.ok(readdirSync(join(base, doc.artifact)).includes('manifest.json'), 'the new backup is there')
  const status = await run(join(REPO, 'scripts', 'status.sh'), ['--json', base], env())
  t.match(JSON.parse(status.stdout).artifacts.find((a: any) => a.name === doc.artifact), { kind: 'complete' }, 'and complete')
})
