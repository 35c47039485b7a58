// Pure pieces: each of these decides something an operator relies on.
import { lockWaitFailure } from '../lib/postgres/lock-wait.ts'
import { execFileSync } from 'node:child_process'
import t from 'tap'
import { shellWord } from '../lib/cli/escape.ts'
import { parseArgs } from '../lib/cli/args.ts'
import { planPostgres } from '../lib/commands/backup.ts'
import { digestBuffer } from '../lib/pipeline/checksum.ts'
import { RECLAIM_EVERY_BYTES, reclaimer } from '../lib/pipeline/reclaim.ts'
import { shownUrl, urlSecrets } from '../lib/checks/names.ts'
import { envFlag } from '../lib/cli/switches.ts'
import { DrError } from '../lib/cli/errors.ts'
import { MANIFEST_FORMAT, parseManifest, parseManifestSum, serializeManifest, type Manifest } from '../lib/artifact/manifest.ts'
import { artifactName, isArtifactName, isPartialName, partialName } from '../lib/artifact/naming.ts'
import { connectionFromEnv, conninfoQuote, parseDatabaseUrl } from '../lib/postgres/connection.ts'
import { oneLine, redact } from '../lib/cli/redact.ts'
import { resolveArtifactPath } from '../lib/artifact/locate.ts'
import { tarNote } from '../lib/files/archive.ts'
import { maxObjectBytes, parsePartSize, partSizeFor } from '../lib/storage/part-size.ts'

const kindOf = (fn: () => unknown): string => {
  try {
    fn()
  } catch (err) {
    return err instanceof DrError ? err.kind : `not a DrError: ${err}`
  }
  return 'no error'
}

t.test('artifact names match the runbooks', async (t) => {
  t.equal(artifactName(new Date('2024-03-15T12:00:00.999Z')), 'conductor-backup-20240315T120000Z')
  t.ok(isArtifactName('conductor-backup-20240315T120000Z'))
  t.notOk(isArtifactName('conductor-backup-20240315T120000Z.partial'))
  t.notOk(isArtifactName(partialName('conductor-backup-20240315T120000Z')))
  t.ok(isPartialName(partialName('conductor-backup-20240315T120000Z')))
})

t.test('opt-in switches', async (t) => {
  for (const v of ['true', 'TRUE', '1', 'yes', 'on', ' true ']) t.equal(envFlag({ X: v }, 'X'), true, v)
  for (const v of ['false', '0', 'no', 'off', '']) t.equal(envFlag({ X: v }, 'X'), false, v)
  t.equal(envFlag({}, 'X'), false)
  t.equal(kindOf(() => envFlag({ INCLUDE_POSTGRES: 'ture' }, 'INCLUDE_POSTGRES')), 'usage', 'a typo is an error, not "off"')
})

t.test('the double opt-in for the dump hook', async (t) => {
  t.same(planPostgres(true, true), { run: true })
  const notIncluded = planPostgres(false, true)
  t.equal(notIncluded.run, false)
  t.match(!notIncluded.run && notIncluded.reason, /--include-postgres/)
  const notEnabled = planPostgres(true, false)
  t.match(!notEnabled.run && notEnabled.reason, /ENABLE_POSTGRES_DUMP=true/)
})

t.test('flags', async (t) => {
  const spec = { boolean: ['dry-run', 'help'], string: ['output'], alias: { h: 'help' } }
  t.same(parseArgs(['--output', '/x', '--dry-run'], spec).flags, { 'dry-run': true, help: false, output: '/x' })
  t.same(parseArgs(['--output=/x'], spec).flags.output, '/x')
  t.same(parseArgs(['-h'], spec).flags.help, true)
  t.same(parseArgs(['a', 'b'], spec).positional, ['a', 'b'])
  t.equal(kindOf(() => parseArgs(['--outptu', '/x'], spec)), 'usage')
  t.equal(kindOf(() => parseArgs(['-x'], spec)), 'usage')
  t.equal(kindOf(() => parseArgs(['--output'], spec)), 'usage', '--output with no value')
  t.equal(kindOf(() => parseArgs(['--output', 'a', '--output', 'b'], spec)), 'usage')
  t.equal(parseArgs(['--dry-run=false'], spec).flags['dry-run'], false)
  // A value that starts with '-' (a negative duration, a hostile directory name) is named as such, with the way to pass it.
  const dashed = (() => {
    try {
      parseArgs(['--output', '-1h', '--dry-run'], spec)
    } catch (err) {
      return err as DrError
    }
  })()
  t.match(dashed, { kind: 'usage', message: /--output needs a value: '-1h' looks like an option/, fix: /--output='?-1h'?$/ })
  t.equal(parseArgs(['--output=-weird dir'], spec).flags.output, '-weird dir', 'the = spelling takes any value')
  t.same(parseArgs(['--output', '-'], spec).flags.output, '-', "a lone '-' is a value")
  t.equal(kindOf(() => parseArgs(['--output', '--dry-run'], spec)), 'usage', 'a known flag after a value flag: no value given')
})

t.test('DATABASE_URL becomes libpq environment, never argv', async (t) => {
  t.same(parseDatabaseUrl('postgresql://app:p%40ss@db.example:6543/conductor?sslmode=require'), {
    PGHOST: 'db.example',
    PGPORT: '6543',
    PGUSER: 'app',
    PGPASSWORD: 'p@ss',
    PGDATABASE: 'conductor',
    PGSSLMODE: 'require',
  })
  t.same(parseDatabaseUrl('postgres:///conductor?host=/var/run/postgresql'), {
    PGDATABASE: 'conductor',
    PGHOST: '/var/run/postgresql',
  })
  const conn = connectionFromEnv({ DATABASE_URL: 'postgresql://app:hunter22@h/db', PGCONNECT_TIMEOUT: '3' })
  t.equal(conn.env.PGPASSWORD, 'hunter22')
  t.ok(conn.secrets.includes('hunter22'))
  t.same(conn.target, { host: 'h', port: undefined, user: 'app', database: 'db' })
  t.notMatch(JSON.stringify(conn.target), /hunter22/)
  try {
    parseDatabaseUrl('postgresql://app:hunter22@h:notaport/db')
    t.fail('should throw')
  } catch (err) {
    t.notMatch((err as Error).message, /hunter22/, 'an invalid URL is not echoed')
  }
  // libpq's URI forms that are not web URLs: a user with an empty host, and several hosts.
  t.same(parseDatabaseUrl('postgresql://postgres@/db?host=/var/run/postgresql'), { PGUSER: 'postgres', PGDATABASE: 'db', PGHOST: '/var/run/postgresql' })
  t.same(parseDatabaseUrl('postgresql://u:pw@/db?host=/sock'), { PGUSER: 'u', PGPASSWORD: 'pw', PGDATABASE: 'db', PGHOST: '/sock' })
  t.same(parseDatabaseUrl('postgresql://postgres@h1:5432,h2:5433/db'), { PGUSER: 'postgres', PGHOST: 'h1,h2', PGPORT: '5432,5433', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://[::1]:5433,h2/db'), { PGHOST: '::1,h2', PGPORT: '5433,', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://'), {})
  // As libpq reads them (checked against PQconninfoParse): the user part ends at the first '@' before
  // any '/', so '?', '#', ':' may be in a password; '+' is not a space; an empty password sets none.
  t.same(parseDatabaseUrl('postgresql://app:?Tr0ub4dor&3@db/conductor'), { PGUSER: 'app', PGPASSWORD: '?Tr0ub4dor&3', PGHOST: 'db', PGDATABASE: 'conductor' })
  t.same(parseDatabaseUrl('postgresql://u:p#ss@h/db'), { PGUSER: 'u', PGPASSWORD: 'p#ss', PGHOST: 'h', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://u:p@ss@host/db'), { PGUSER: 'u', PGPASSWORD: 'p', PGHOST: 'ss@host', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://h/db?password=ab+cd&application_name=x#y'), { PGHOST: 'h', PGDATABASE: 'db', PGPASSWORD: 'ab+cd', PGAPPNAME: 'x#y' })
  t.same(parseDatabaseUrl('postgresql://u:@h/db'), { PGUSER: 'u', PGHOST: 'h', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://:5433/db'), { PGPORT: '5433', PGDATABASE: 'db' })
  t.same(parseDatabaseUrl('postgresql://h%2Fx/db'), { PGHOST: 'h/x', PGDATABASE: 'db' })
  t.equal(kindOf(() => parseDatabaseUrl('postgresql://h/db?sslmode')), 'usage')
  t.equal(kindOf(() => parseDatabaseUrl('POSTGRESQL://h/db')), 'usage')
  for (const leaky of ['postgresql://app:2024?Sup3rSecret@db/conductor?weird=1', 'postgresql://h/db?Sup3rSecret=1', 'postgresql://h/db?x=Sup3rSecret=2']) {
    try {
      parseDatabaseUrl(leaky)
    } catch (err) {
      t.notMatch((err as Error).message, /Sup3rSecret/, `nothing of ${leaky.length} characters echoed`)
    }
  }
  t.equal(kindOf(() => parseDatabaseUrl('postgresql://h/db%zz')), 'usage')
  t.equal(kindOf(() => parseDatabaseUrl('postgresql:/h/db')), 'usage')
  t.equal(kindOf(() => parseDatabaseUrl('mysql://h/db')), 'usage')
  t.equal(kindOf(() => parseDatabaseUrl('postgresql://h/db?weird=1')), 'usage')
})

t.test('shellWord: a database name an operator can paste after dropdb', async (t) => {
  t.equal(shellWord('conductor_pre_restore_20240315t120000z'), 'conductor_pre_restore_20240315t120000z')
  t.equal(shellWord("it's $(rm -rf ~); x"), `'it'\\''s $(rm -rf ~); x'`)
  t.equal(shellWord('a\nb'), "$'a\\nb'", 'one line, and the shell reads the newline back')
  const sh = (word: string) => execFileSync('sh', ['-c', `printf %s ${word}`]).toString()
  for (const name of ["it's $(id) `id` \\ \"q\"", 'plain_name', 'spaces and; semicolons']) t.equal(sh(shellWord(name)), name, name)
  t.equal(execFileSync('bash', ['-c', `printf %s ${shellWord("a\nb'c\\d")}`]).toString(), "a\nb'c\\d", '$-quoting in bash')
})

t.test('conninfo quoting', async (t) => {
  t.equal(conninfoQuote('dbname', "it's a\\db"), "dbname='it\\'s a\\\\db'")
})

t.test('redaction', async (t) => {
  t.equal(redact('failed for postgresql://u:secretpw@host/db', []), 'failed for postgresql://u:***@host/db')
  t.equal(redact("password=abc123 host=x", []), 'password=*** host=x')
  t.equal(redact('auth with hunter22 failed', ['hunter22']), 'auth with *** failed')
  t.equal(oneLine('a\n\n  b  \n'), 'a | b')
  const long = oneLine(`tar: ${'d/'.repeat(2100)}f: Cannot open: File name too long`)
  t.equal(long.length, 400, 'bounded')
  t.match(long, /^tar: d\/d\/.*….*: Cannot open: File name too long$/, 'the start and the cause at the end both kept')
})

const goodManifest = (): Manifest => ({
  format: MANIFEST_FORMAT,
  formatVersion: 1,
  tool: { name: 'conductor-dr', version: '0.1.0' },
  artifact: 'conductor-backup-20240315T120000Z',
  createdAt: '2024-03-15T12:00:00.000Z',
  completedAt: '2024-03-15T12:00:05.000Z',
  hostname: 'db1',
  postgres: {
    status: 'dumped',
    file: 'postgres.dump',
    format: 'custom',
    database: 'conductor',
    encoding: 'UTF8',
    collate: 'C.UTF-8',
    ctype: 'C.UTF-8',
    serverVersion: '15.4',
    pgDumpVersion: 'pg_dump (PostgreSQL) 15.4',
  },
  files: [{ path: 'postgres.dump', size: 10, sha256: digestBuffer('0123456789').sha256 }],
})

t.test('manifest round-trips and rejects every malformation', async (t) => {
  const m = goodManifest()
  t.same(parseManifest(serializeManifest(m)), m)
  const bad: Array<[string, (m: any) => void]> = [
    ['wrong format', (m) => (m.format = 'other')],
    ['future version', (m) => (m.formatVersion = 4 as never)],
    ['version 0', (m) => (m.formatVersion = 0 as never)],
    ['zstd in an unknown spelling', (m) => ((m.postgres as { compression?: string }).compression = 'zst')],
    ['roles file not listed', (m) => ((m.postgres as { roles?: unknown }).roles = { file: 'nope.sql', passwords: false })],
    ['roles passwords not a boolean', (m) => ((m.postgres as { roles?: unknown }).roles = { file: 'postgres.dump', passwords: 'no' })],
    ['a row count that is negative', (m) => ((m.postgres as { tables?: unknown }).tables = [{ schema: 'public', table: 't', rows: -1 }])],
    ['missing hostname', (m) => delete m.hostname],
    ['bad date', (m) => (m.createdAt = 'yesterday')],
    ['a date that does not exist', (m) => (m.createdAt = '2026-02-30T12:00:00Z')],
    ['an hour that does not exist', (m) => (m.completedAt = '2026-03-01T24:00:00.000Z')],
    ['negative size', (m) => (m.files[0].size = -1)],
    ['short sha', (m) => (m.files[0].sha256 = 'abc')],
    ['path escape', (m) => (m.files[0].path = '../../etc/passwd')],
    ['absolute path', (m) => (m.files[0].path = '/etc/passwd')],
    ['duplicate file', (m) => m.files.push({ ...m.files[0] })],
    ['dump not listed', (m) => (m.postgres.file = 'other.dump')],
    ['unknown status', (m) => (m.postgres.status = 'maybe')],
    ['a database name with a NUL', (m) => (m.postgres.database = 'conductor\u0000x')],
    ['a database name PostgreSQL cannot have (64 bytes)', (m) => (m.postgres.database = 'd'.repeat(64))],
    ['files not a list', (m) => (m.files = {})],
    ['missing encoding', (m) => delete m.postgres.encoding],
  ]
  for (const [name, mutate] of bad) {
    const copy = structuredClone(m)
    mutate(copy)
    t.equal(kindOf(() => parseManifest(JSON.stringify(copy))), 'verification', name)
  }
  const text = serializeManifest(m)
  t.equal(kindOf(() => parseManifest(text.slice(0, text.length / 2))), 'verification', 'truncated')
  t.equal(kindOf(() => parseManifest('')), 'verification', 'empty')
})

t.test('manifest checksum line is sha256sum-compatible', async (t) => {
  const sha = 'a'.repeat(64)
  t.equal(parseManifestSum(`${sha}  manifest.json\n`), sha)
  t.equal(parseManifestSum(`${sha} *manifest.json`), sha)
  t.equal(kindOf(() => parseManifestSum(`${sha}  other.json\n`)), 'verification')
})

t.test('artifact argument: a name under BACKUP_BASE or a path', async (t) => {
  t.equal(resolveArtifactPath('conductor-backup-20240315T120000Z', '/b'), '/b/conductor-backup-20240315T120000Z')
  t.equal(resolveArtifactPath('/x/conductor-backup-20240315T120000Z', undefined), '/x/conductor-backup-20240315T120000Z')
  t.equal(kindOf(() => resolveArtifactPath(undefined, '/b')), 'usage')
  t.equal(kindOf(() => resolveArtifactPath('conductor-backup-20240315T120000Z', undefined)), 'usage')
  t.equal(kindOf(() => resolveArtifactPath('..', '/b')), 'usage')
  t.equal(kindOf(() => resolveArtifactPath('.conductor-backup-20240315T120000Z.partial', '/b')), 'input')
})

t.test('progress: bytes, rate and elapsed on a terminal; nothing in --json or without a terminal', async (t) => {
  const { createReporter } = await import('../lib/cli/report.ts')
  const sink = (isTTY: boolean) => {
    const out = { isTTY, text: '', write(s: string) { out.text += s; return true } }
    return out
  }
  for (const [json, tty, drawn] of [[false, true, true], [true, true, false], [false, false, false]] as const) {
    const stdout = sink(tty)
    const stderr = sink(tty)
    const r = createReporter(json, { stdout: stdout as never, stderr: stderr as never, env: {} })
    r.progress('dumping database', 0)
    await new Promise((resolve) => setTimeout(resolve, 250))
    r.progress('dumping database', 5 * 1024 * 1024)
    r.endProgress()
    if (drawn) t.match(stderr.text, /dumping database: 5\.0 MiB, [\d.]+ MiB\/s, \d+ s/, 'bytes, rate and elapsed drawn on a terminal')
    else t.equal(stderr.text + stdout.text, '', `silent (json ${json}, tty ${tty})`)
  }
})

t.test("tar's warnings about the data are notes, its errors are not", async (t) => {
  t.same(tarNote('tar: srv/app/log: file changed as we read it'), { list: 'changed', note: { path: '/srv/app/log', reason: 'file changed as we read it' } })
  // GNU tar capitalises this one: a log truncated during the backup must not fail it.
  t.same(tarNote('tar: srv/app/big.log: File shrank by 251658240 bytes; padding with zeros'), {
    list: 'changed',
    note: { path: '/srv/app/big.log', reason: 'File shrank by 251658240 bytes; padding with zeros' },
  })
  t.same(tarNote('tar: srv/app/gone: File removed before we read it'), { list: 'vanished', note: { path: '/srv/app/gone', reason: 'File removed before we read it' } })
  // Every way tar finds an entry gone between listing and reading it, a symlink's target read included.
  for (const step of ['stat', 'open', 'savedir', 'readlink']) {
    t.equal(tarNote(`tar: srv/app/x: Cannot ${step}: No such file or directory`)?.list, 'vanished', `Cannot ${step}: vanished`)
  }
  t.same(tarNote('tar: srv/app/sock: socket ignored'), { list: 'skipped', note: { path: '/srv/app/sock', reason: 'socket' } })
  t.equal(tarNote('tar: srv/app/secret: Cannot open: Permission denied'), null, 'unreadable: an error, not a note')
})

t.test('multipart part sizes', async (t) => {
  const MiB = 1024 * 1024
  const GiB = 1024 * MiB
  t.equal(partSizeFor(8 * MiB), 8 * MiB, 'no expectation: as configured')
  t.equal(partSizeFor(8 * MiB, 70 * GiB), 8 * MiB, '70 GiB fits 10,000 parts of 8 MiB')
  t.equal(partSizeFor(8 * MiB, 300 * GiB), 31 * MiB, '300 GiB: the smallest whole MiB that fits 10,000 parts')
  t.ok(maxObjectBytes(partSizeFor(8 * MiB, 300 * GiB)) >= 300 * GiB)
  t.ok(maxObjectBytes(30 * MiB) < 300 * GiB, 'and one MiB less would not')
  t.equal(partSizeFor(64 * MiB, 300 * GiB), 64 * MiB, 'never below the configured size')
  t.equal(partSizeFor(8 * MiB, 1e15), 4 * GiB, 'at most 4 GiB, the largest Node.js buffer')
  t.equal(partSizeFor(8 * MiB, NaN), 8 * MiB)
  t.equal(parsePartSize('5MiB'), 5 * MiB)
  t.equal(parsePartSize('4GiB'), 4 * GiB)
  t.throws(() => parsePartSize('4097MiB'), /not a part size/)
})

t.test('lockWaitFailure: a lock wait that ran out, in either of the server phrasings; nothing else', async (t) => {
  const dump = 'pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\npg_dump: detail: Query was: LOCK TABLE public.documents IN ACCESS SHARE MODE;'
  t.match(lockWaitFailure(dump, 1000)?.message, /^pg_dump could not lock public\.documents within 1\.0s/)
  t.match(lockWaitFailure('ERROR:  canceling statement due to lock timeout', 300_000)?.message, /^pg_dump could not lock a table within 5m 00s/)
  t.equal(lockWaitFailure('ERROR:  canceling statement due to statement timeout', 1000), null, 'a statement timeout not around LOCK TABLE is not ours')
  t.equal(lockWaitFailure('FATAL:  password authentication failed', 1000), null)
})

t.test('reclaimer: one young-generation collection per RECLAIM_EVERY_BYTES of streamed data, none without gc', async (t) => {
  const calls: string[] = []
  const note = reclaimer((o) => calls.push(o.type))
  for (let i = 0; i < (2.5 * RECLAIM_EVERY_BYTES) / 65536; i++) note(65536)
  t.same(calls, ['minor', 'minor'])
  t.doesNotThrow(() => reclaimer(undefined)(RECLAIM_EVERY_BYTES * 4))
})

t.test('a check URL as shown: query values, bare keys and the fragment masked; what to scrub from echoes', async (t) => {
  t.equal(shownUrl(new URL('http://h:8080/health')), 'http://h:8080/health')
  t.equal(shownUrl(new URL('http://h/health?token=abc&db=main')), 'http://h/health?token=***&db=***')
  t.equal(shownUrl(new URL('http://h/health?s3cr3tT0ken#frag=secret')), 'http://h/health?***#***')
  t.same(urlSecrets(new URL('http://h/health?token=a%2Fb-secret&x=1&bareKeyToken#fragment')).sort(), ['a%2Fb-secret', 'a/b-secret', 'bareKeyToken', 'fragment'].sort())
})
