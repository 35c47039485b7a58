// Bad input: the right exit code, one clear line, no stack trace, nothing written.
import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ExitCode } from '../lib/cli/errors.ts'
import { BACKUP, cleanEnv, completeArtifacts, pgEnv, RESTORE, run, scratchDatabase, serverAuthority, tempDir, type RunResult } from './helpers.ts'

const EXIT = ExitCode

function assertCleanFailure(t: Test, r: RunResult, code: number, message: RegExp) {
  t.equal(r.code, code, `exit ${code}: ${r.stderr}`)
  t.match(r.stderr, message)
  const lines = r.stderr.split('\n').filter(Boolean)
  t.equal(lines.length, 1, 'exactly one line on stderr')
  t.match(lines[0], /^error: /)
  t.notMatch(r.stderr, /\n\s+at |\.ts:\d+:\d+/, 'no stack trace')
}


t.test('backup.sh rejects bad input without writing anything', async (t) => {
  const dir = tempDir(t)
  const out = join(dir, 'out')
  const file = join(dir, 'a-file')
  writeFileSync(file, 'x')
  const cases: Array<{ name: string; args: string[]; env?: NodeJS.ProcessEnv; code: number; message: RegExp }> = [
    { name: 'unknown flag', args: ['--outptu', out], code: EXIT.usage, message: /unknown option '--outptu'/ },
    { name: 'missing --output', args: ['--dry-run'], code: EXIT.usage, message: /--output is required/ },
    { name: '--output without a value', args: ['--output'], code: EXIT.usage, message: /--output needs a value/ },
    { name: 'stray argument', args: ['--output', out, 'extra'], code: EXIT.usage, message: /unexpected argument 'extra'/ },
    { name: '--output is a file', args: ['--output', file], code: EXIT.input, message: /is not a directory/ },
    { name: '--output below a file', args: ['--output', join(file, 'sub')], code: EXIT.input, message: /is not a directory/ },
    {
      name: 'misspelt switch value',
      args: ['--output', out],
      env: cleanEnv({ INCLUDE_POSTGRES: 'ture' }),
      code: EXIT.usage,
      message: /INCLUDE_POSTGRES must be true or false/,
    },
    {
      name: 'database that does not exist',
      args: ['--output', out, '--include-postgres'],
      env: pgEnv('cdr_no_such_database', { ENABLE_POSTGRES_DUMP: 'true' }),
      code: EXIT.runtime,
      message: /database "cdr_no_such_database" does not exist/,
    },
    {
      name: 'unparseable DATABASE_URL',
      args: ['--output', out, '--include-postgres'],
      env: cleanEnv({ ENABLE_POSTGRES_DUMP: 'true', DATABASE_URL: 'postgresql://u:pw@h:port/db' }),
      code: EXIT.usage,
      message: /DATABASE_URL is not a valid URL/,
    },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const r = await run(BACKUP, c.args, c.env)
      assertCleanFailure(t, r, c.code, c.message)
      if (existsSync(out)) t.same(readdirSync(out), [], 'nothing written')
    })
  }
})

t.test('--json reports failures as one JSON document on stdout', async (t) => {
  const r = await run(BACKUP, ['--json', '--dry-run'])
  t.equal(r.code, EXIT.usage)
  t.same(JSON.parse(r.stdout), { ok: false, exitCode: 2, error: '--output is required', fix: 'pass --output DIR, e.g. --output /tmp/backups' })
})

t.test('passwords never reach argv, output or the manifest', async (t) => {
  const db = scratchDatabase(t)
  const dir = tempDir(t)
  const bin = join(dir, 'bin')
  const log = join(dir, 'pg_dump.log')
  mkdirSync(bin)
  // A pg_dump in front of the real one that records how it was called.
  writeFileSync(
    join(bin, 'pg_dump'),
    `#!/bin/sh\nprintf '%s\\n' "argv: $*" "env: $PGPASSWORD" >> ${log}\nexec /usr/bin/pg_dump "$@"\n`,
  )
  chmodSync(join(bin, 'pg_dump'), 0o755)
  const secret = 'Sup3r-Secret-Pw'
  const env = pgEnv(db, {
    ENABLE_POSTGRES_DUMP: 'true',
    INCLUDE_POSTGRES: 'true',
    DATABASE_URL: `postgresql://${process.env.PGUSER ?? process.env.USER ?? 'root'}:${secret}@${serverAuthority()}/${db}`,
    PATH: `${bin}:${process.env.PATH}`,
  })
  const out = join(dir, 'out')
  const ok = await run(BACKUP, ['--output', out, '--json'], env)
  t.equal(ok.code, 0, ok.stderr)
  t.notMatch(ok.stdout + ok.stderr, secret)
  const [name] = completeArtifacts(out)
  t.notMatch(readFileSync(join(out, name, 'manifest.json'), 'utf8'), secret)
  const calls = readFileSync(log, 'utf8')
  t.match(calls, `env: ${secret}`, 'the password reached pg_dump through the environment')
  t.notMatch(calls.split('\n').find((l) => l.startsWith('argv:'))!, secret, 'and not through argv')

  const bad = await run(BACKUP, ['--output', out], { ...env, DATABASE_URL: `postgresql://nobody_here:${secret}@${serverAuthority()}/${db}` })
  t.equal(bad.code, EXIT.runtime)
  t.notMatch(bad.stdout + bad.stderr, secret)
})

t.test('missing pg_dump is named, with the fix', async (t) => {
  const dir = tempDir(t)
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  for (const tool of ['node', 'sh', 'bash', 'realpath', 'dirname', 'env']) {
    symlinkSync(`/usr/bin/${tool}`, join(bin, tool))
  }
  const env = cleanEnv({ PATH: bin, INCLUDE_POSTGRES: 'true', ENABLE_POSTGRES_DUMP: 'true' })
  const r = await run(BACKUP, ['--output', join(dir, 'out')], env)
  assertCleanFailure(t, r, EXIT.runtime, /pg_dump not found on PATH.*postgresql-client/)
  t.notOk(existsSync(join(dir, 'out')))
})

t.test('a missing zstd is named as such, not taken for a damaged backup', async (t) => {
  const db = scratchDatabase(t)
  const base = join(tempDir(t), 'backups')
  t.equal((await run(BACKUP, ['--output', base], pgEnv(db, { INCLUDE_POSTGRES: 'true', ENABLE_POSTGRES_DUMP: 'true' }))).code, 0)
  const [name] = completeArtifacts(base)
  const bin = join(tempDir(t), 'bin')
  mkdirSync(bin)
  for (const tool of ['node', 'sh', 'bash', 'realpath', 'dirname', 'env', 'pg_restore', 'pg_isready', 'psql']) {
    symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(bin, tool))
  }
  const r = await run(RESTORE, ['--dry-run', join(base, name!)], pgEnv(db, { PATH: bin, RESTORE_POSTGRES: 'true' }))
  assertCleanFailure(t, r, EXIT.runtime, /zstd not found on PATH.*apt-get install zstd/)
})

t.test('restore.sh rejects bad input', async (t) => {
  const base = join(tempDir(t), 'backups')
  const made = await run(BACKUP, ['--output', base])
  t.equal(made.code, 0, made.stderr)
  const [name] = completeArtifacts(base)
  writeFileSync(join(base, 'not-an-artifact'), 'x')
  mkdirSync(join(base, `.${name}.partial`))
  mkdirSync(join(base, 'no-manifest'))
  const withBase = cleanEnv({ BACKUP_BASE: base })
  const cases: Array<{ name: string; args: string[]; env?: NodeJS.ProcessEnv; code: number; message: RegExp }> = [
    { name: 'no artifact name', args: [], env: withBase, code: EXIT.usage, message: /missing artifact name/ },
    { name: 'no BACKUP_BASE', args: [name], code: EXIT.usage, message: /BACKUP_BASE is not set/ },
    { name: 'unknown flag', args: ['--force', name], env: withBase, code: EXIT.usage, message: /unknown option '--force'/ },
    { name: 'two artifacts', args: [name, name], env: withBase, code: EXIT.usage, message: /expected one artifact/ },
    {
      name: 'BACKUP_BASE missing on disk',
      args: [name],
      env: cleanEnv({ BACKUP_BASE: join(base, 'nope') }),
      code: EXIT.input,
      message: /BACKUP_BASE .* does not exist/,
    },
    { name: 'unknown artifact', args: ['conductor-backup-19990101T000000Z'], env: withBase, code: EXIT.input, message: /artifact not found/ },
    { name: 'a file, not an artifact', args: ['not-an-artifact'], env: withBase, code: EXIT.input, message: /not a directory/ },
    { name: 'an interrupted backup', args: [`.${name}.partial`], env: withBase, code: EXIT.input, message: /incomplete backup/ },
    { name: 'no manifest', args: ['no-manifest'], env: withBase, code: EXIT.verification, message: /manifest.json.sha256 is missing/ },
    {
      name: 'database restore asked of an artifact without a dump',
      args: [name],
      env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true' }),
      code: EXIT.input,
      message: /has no database dump/,
    },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const r = await run(RESTORE, c.args, c.env)
      assertCleanFailure(t, r, c.code, c.message)
    })
  }
  rmSync(join(base, 'no-manifest'), { recursive: true })
})
