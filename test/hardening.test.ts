// Each class of hostile input an adversarial run found, with several members each.
import { spawn } from 'node:child_process'
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ExitCode } from '../lib/cli/errors.ts'
import {
  BACKUP,
  backupOf,
  cleanEnv,
  collect,
  completeArtifacts,
  DUMP_ENABLED,
  fillDatabase,
  pathWithWrapped,
  pgEnv,
  psql,
  REPO,
  RESTORE,
  run,
  scratchDatabase,
  snapshot,
  tempDir,
  type RunResult,
} from './helpers.ts'

const EXIT = ExitCode

function oneCleanLine(t: Test, r: RunResult, code: number, message?: RegExp) {
  t.equal(r.code, code, `exit ${code}: ${r.stderr}`)
  const lines = r.stderr.split('\n').filter(Boolean)
  t.equal(lines.length, 1, `exactly one line on stderr: ${JSON.stringify(r.stderr)}`)
  t.match(lines[0] ?? '', /^error: /)
  t.notMatch(r.stderr, /internal error|\n\s+at |\.ts:\d+:\d+/, 'no internal error, no stack')
  t.notMatch(r.stderr + r.stdout, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u2028\u2029]/, 'no raw control characters')
  if (message) t.match(r.stderr, message)
}

/** A PATH whose pg_restore runs `hook` (shell) before the real one, when its argv holds `when`. */
const wrapPgRestore = (t: Test, when: string, hook: string) =>
  pathWithWrapped(t, 'pg_restore', `case " $* " in *" ${when} "*) ${hook} ;; esac\nexec "$REAL" "$@"`)

t.test('1. restore applies exactly the bytes it verified', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 400)
  const backedUp = snapshot(db)
  const { path } = await backupOf(t, db)
  // Another valid dump of the same shape, with other data: what an attacker would swap in.
  const other = scratchDatabase(t)
  fillDatabase(other, 50)
  psql(other, "UPDATE customers SET name = 'SWAPPED';")
  const otherDump = join(tempDir(t), 'other.dump.zst')
  execFileSync('sh', ['-c', `pg_dump -Fc -Z0 -d "$1" | zstd -q -c > "$2"`, 'sh', other, otherDump], { env: cleanEnv() })
  psql(db, "UPDATE customers SET name = 'after the backup';")
  const current = snapshot(db)
  const dump = join(path, 'postgres.dump.zst')
  const size = readFileSync(dump).length

  // Both ways of restoring: the default (staged, parallel, swapped in) and --in-place (streamed into one transaction).
  for (const mode of [['--drop-old'], ['--in-place']]) {
    const restore = (copy: string, bin: string) =>
      run(RESTORE, [...mode, copy], pgEnv(db, { RESTORE_POSTGRES: 'true', PATH: bin }))
    const copyOf = (t: Test, name: string) => {
      const copy = `${path}-${mode[0]}-${name.replace(/\W+/g, '-')}`
      cpSync(path, copy, { recursive: true })
      t.teardown(() => rmSync(copy, { recursive: true, force: true }))
      return copy
    }

    await t.test(`${mode[0]}: a dump replaced by rename after verification: the verified one is restored`, async (t) => {
      const copy = copyOf(t, 'mv')
      const bin = wrapPgRestore(t, '--list', `cp ${otherDump} ${copy}/swap.tmp && mv ${copy}/swap.tmp ${copy}/postgres.dump.zst`)
      const r = await restore(copy, bin)
      t.equal(r.code, 0, r.stderr)
      t.equal(readFileSync(join(copy, 'postgres.dump.zst')).equals(readFileSync(otherDump)), true, 'the swap did happen')
      t.same(snapshot(db), backedUp, 'the database holds the verified backup, not the swapped dump')
      psql(db, "UPDATE customers SET name = 'after the backup';")
    })

    // Changed while pg_restore --list runs: after verification, before the restore reads a byte.
    for (const how of [
      { name: 'rewritten in place (same inode)', hook: (d: string) => `cat ${otherDump} > ${d}/postgres.dump.zst`, message: /changed after it was verified|cannot be read|cannot be decompressed/ },
      { name: 'one byte flipped near its end', hook: (d: string) => `printf '\\377' | dd of=${d}/postgres.dump.zst bs=1 seek=${size - 3} conv=notrunc status=none`, message: /changed after it was verified/ },
      { name: 'truncated in place', hook: (d: string) => `truncate -s 1000 ${d}/postgres.dump.zst`, message: /changed after it was verified|cannot be read|cannot be decompressed/ },
    ]) {
      await t.test(`${mode[0]}: a dump ${how.name} after verification never reaches the database`, async (t) => {
        const copy = copyOf(t, how.name)
        const r = await restore(copy, wrapPgRestore(t, '--list', how.hook(copy)))
        t.not(readFileSync(join(copy, 'postgres.dump.zst')).equals(readFileSync(dump)), true, 'the file did change')
        oneCleanLine(t, r, EXIT.verification, how.message)
        t.same(snapshot(db), current, 'database untouched')
      })
    }

    await t.test(`${mode[0]}: bytes appended after verification are not applied; the verified ones are`, async (t) => {
      const copy = copyOf(t, 'appended')
      const r = await restore(copy, wrapPgRestore(t, '--list', `cat ${otherDump} >> ${copy}/postgres.dump.zst`))
      t.equal(r.code, 0, r.stderr)
      t.same(snapshot(db), backedUp, 'exactly the verified backup was restored')
      psql(db, "UPDATE customers SET name = 'after the backup';")
    })
  }
})

t.test('2. system errors from operator mistakes get a code and a fix, never "internal error"', async (t) => {
  const dir = tempDir(t)
  const base = join(dir, 'backups')
  t.equal((await run(BACKUP, ['--output', base])).code, 0)
  const [name] = completeArtifacts(base)
  symlinkSync('loop-b', join(dir, 'loop-a'))
  symlinkSync('loop-a', join(dir, 'loop-b'))
  const deep = join(dir, ...Array.from({ length: 18 }, () => 'd'.repeat(250)))
  const withManifestDir = join(base, 'manifest-dir')
  cpSync(join(base, name), withManifestDir, { recursive: true })
  rmSync(join(withManifestDir, 'manifest.json'))
  mkdirSync(join(withManifestDir, 'manifest.json'))
  const withSumDir = join(base, 'sum-dir')
  cpSync(join(base, name), withSumDir, { recursive: true })
  rmSync(join(withSumDir, 'manifest.json.sha256'))
  mkdirSync(join(withSumDir, 'manifest.json.sha256'))
  const withSumLoop = join(base, 'sum-loop')
  cpSync(join(base, name), withSumLoop, { recursive: true })
  rmSync(join(withSumLoop, 'manifest.json.sha256'))
  symlinkSync('manifest.json.sha256', join(withSumLoop, 'manifest.json.sha256'))
  const secret = 'pw%zz-Secret'
  const url = (u: string) => cleanEnv({ ...DUMP_ENABLED, DATABASE_URL: u })

  const cases: Array<{ name: string; script: string; args: string[]; env?: NodeJS.ProcessEnv; code: number; message: RegExp }> = [
    { name: 'artifact name over 255 bytes', script: RESTORE, args: ['n'.repeat(300)], env: cleanEnv({ BACKUP_BASE: base }), code: EXIT.usage, message: /too long/ },
    { name: 'artifact path over 4096 bytes', script: RESTORE, args: [join(deep, 'x')], code: EXIT.usage, message: /too long/ },
    { name: 'BACKUP_BASE over 4096 bytes', script: RESTORE, args: [name], env: cleanEnv({ BACKUP_BASE: deep }), code: EXIT.usage, message: /too long/ },
    { name: '--output over 4096 bytes', script: BACKUP, args: ['--output', deep], code: EXIT.usage, message: /too long/ },
    { name: '--output name over 255 bytes', script: BACKUP, args: ['--output', join(dir, 'o'.repeat(300))], code: EXIT.usage, message: /too long/ },
    { name: 'artifact is a symlink loop', script: RESTORE, args: [join(dir, 'loop-a')], code: EXIT.input, message: /symbolic links/ },
    { name: '--output is a symlink loop', script: BACKUP, args: ['--output', join(dir, 'loop-a')], code: EXIT.input, message: /symbolic links/ },
    { name: '--output below a symlink loop', script: BACKUP, args: ['--output', join(dir, 'loop-a', 'sub')], code: EXIT.input, message: /symbolic links/ },
    { name: 'manifest is a directory', script: RESTORE, args: [withManifestDir], code: EXIT.verification, message: /manifest\.json is not a regular file/ },
    { name: 'sidecar is a directory', script: RESTORE, args: [withSumDir], code: EXIT.verification, message: /manifest\.json\.sha256 is not a regular file/ },
    { name: 'sidecar is a symlink to itself', script: RESTORE, args: [withSumLoop], code: EXIT.verification, message: /manifest\.json\.sha256 cannot be opened/ },
    { name: 'bad %-escape in the password', script: BACKUP, args: ['--output', base], env: url(`postgresql://u:${secret}@127.0.0.1/db`), code: EXIT.usage, message: /malformed %-escape in its password/ },
    { name: 'bad %-escape in the database name', script: BACKUP, args: ['--output', base], env: url('postgresql://u@127.0.0.1/db%E0%A4%A'), code: EXIT.usage, message: /in its database name/ },
    { name: 'bad %-escape in the user name', script: BACKUP, args: ['--output', base], env: url('postgresql://u%G1@127.0.0.1/db'), code: EXIT.usage, message: /in its user name/ },
    { name: 'NUL in the password', script: BACKUP, args: ['--output', base], env: url('postgresql://u:a%00b@127.0.0.1/db'), code: EXIT.usage, message: /NUL byte/ },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const r = await run(c.script, c.args, c.env)
      oneCleanLine(t, r, c.code, c.message)
      t.notMatch(r.stdout + r.stderr, secret, 'the password is never echoed')
    })
  }
  t.same(completeArtifacts(base), [name], 'nothing new was written')
})

t.test('3. restore never blocks on, nor reads without bound, a special file', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 50)
  const { base, name } = await backupOf(t, db)
  const variants: Array<{ name: string; file: string; make: (p: string) => void; message: RegExp }> = [
    { name: 'manifest is a FIFO', file: 'manifest.json', make: (p) => execFileSync('mkfifo', [p]), message: /named pipe/ },
    { name: 'sidecar is a FIFO', file: 'manifest.json.sha256', make: (p) => execFileSync('mkfifo', [p]), message: /named pipe/ },
    { name: 'dump is a FIFO', file: 'postgres.dump.zst', make: (p) => execFileSync('mkfifo', [p]), message: /named pipe/ },
    { name: 'manifest links to /dev/zero', file: 'manifest.json', make: (p) => symlinkSync('/dev/zero', p), message: /device/ },
    { name: 'sidecar links to /dev/urandom', file: 'manifest.json.sha256', make: (p) => symlinkSync('/dev/urandom', p), message: /device/ },
    { name: 'dump links to /dev/zero', file: 'postgres.dump.zst', make: (p) => symlinkSync('/dev/zero', p), message: /device/ },
    { name: 'manifest is a 20 MB file', file: 'manifest.json', make: (p) => writeFileSync(p, Buffer.alloc(20 * 1024 * 1024, 0x20)), message: /larger than/ },
  ]
  for (const v of variants) {
    await t.test(v.name, async (t) => {
      const copy = join(base, `copy-${v.name.replace(/\W+/g, '-')}`)
      cpSync(join(base, name), copy, { recursive: true })
      rmSync(join(copy, v.file))
      v.make(join(copy, v.file))
      const started = Date.now()
      const r = await collect(
        spawn(RESTORE, [copy], { cwd: REPO, env: pgEnv(db, { RESTORE_POSTGRES: 'true' }), stdio: ['ignore', 'pipe', 'pipe'], timeout: 20000 }),
      )
      t.ok(Date.now() - started < 15000, 'returned promptly')
      oneCleanLine(t, r, EXIT.verification, v.message)
    })
  }

  await t.test('SIGTERM ends a restore stuck in a child with 130', async (t) => {
    const bin = wrapPgRestore(t, '--list', 'sleep 600')
    const child = spawn(RESTORE, [join(base, name)], {
      cwd: REPO,
      env: pgEnv(db, { RESTORE_POSTGRES: 'true', PATH: bin }),
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const done = collect(child)
    let out = ''
    child.stdout!.on('data', (d: Buffer) => (out += d))
    const until = Date.now() + 20000
    while (!/verified postgres\.dump/.test(out) && Date.now() < until) await new Promise((r) => setTimeout(r, 50))
    await new Promise((r) => setTimeout(r, 300))
    const sent = Date.now()
    child.kill('SIGTERM')
    const r = await done
    t.equal(r.code, EXIT.interrupted, r.stderr)
    t.ok(Date.now() - sent < 12000, 'exited promptly')
    t.match(r.stderr, /interrupted by SIGTERM/)
  })
})

t.test('4. every switch is strict, in every spelling', async (t) => {
  const db = scratchDatabase(t)
  const dir = tempDir(t)
  let n = 0
  const out = () => join(dir, `out-${n++}`)
  const cases: Array<{ name: string; script: string; args: string[]; env: NodeJS.ProcessEnv; code: number; dumped?: boolean }> = [
    { name: '--include-postgres=no means no', script: BACKUP, args: ['--include-postgres=no'], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: 'true' }), code: 0, dumped: false },
    { name: '--include-postgres=false means no', script: BACKUP, args: ['--include-postgres=false'], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: 'true' }), code: 0, dumped: false },
    { name: '--include-postgres=yes means yes', script: BACKUP, args: ['--include-postgres=yes'], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: 'true' }), code: 0, dumped: true },
    { name: '--include-postgres=maybe', script: BACKUP, args: ['--include-postgres=maybe'], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: 'true' }), code: EXIT.usage },
    { name: '--include-postgres= (empty)', script: BACKUP, args: ['--include-postgres='], env: pgEnv(db), code: EXIT.usage },
    { name: 'INCLUDE_POSTGRES=ture with the flag', script: BACKUP, args: ['--include-postgres'], env: pgEnv(db, { INCLUDE_POSTGRES: 'ture', ENABLE_POSTGRES_DUMP: 'true' }), code: EXIT.usage },
    { name: 'ENABLE_POSTGRES_DUMP=nope', script: BACKUP, args: ['--include-postgres'], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: 'nope' }), code: EXIT.usage },
    { name: 'ENABLE_POSTGRES_DUMP bad even when not included', script: BACKUP, args: [], env: pgEnv(db, { ENABLE_POSTGRES_DUMP: '2' }), code: EXIT.usage },
    { name: '--dry-run=later', script: BACKUP, args: ['--dry-run=later'], env: pgEnv(db), code: EXIT.usage },
    { name: '--dry-run and --no-dry-run together', script: BACKUP, args: ['--dry-run', '--no-dry-run'], env: pgEnv(db), code: EXIT.usage },
    { name: '--json=perhaps', script: BACKUP, args: ['--json=perhaps'], env: pgEnv(db), code: EXIT.usage },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const o = out()
      const r = await run(c.script, ['--output', o, ...c.args], c.env)
      if (c.code !== 0) {
        t.equal(r.code, c.code, r.stderr)
        t.match(r.stderr, /must be true or false|given both on and off/)
        t.same(completeArtifacts(dir).length, 0)
        return
      }
      t.equal(r.code, 0, r.stderr)
      const [name] = completeArtifacts(o)
      const manifest = JSON.parse(readFileSync(join(o, name, 'manifest.json'), 'utf8'))
      t.equal(manifest.postgres.status, c.dumped ? 'dumped' : 'skipped')
    })
  }
  await t.test('RESTORE_POSTGRES=yes please', async (t) => {
    const r = await run(RESTORE, ['--dry-run', 'x'], cleanEnv({ BACKUP_BASE: dir, RESTORE_POSTGRES: 'yes please' }))
    oneCleanLine(t, r, EXIT.usage, /RESTORE_POSTGRES must be true or false/)
  })
  await t.test('--dry-run=false is a real run, --json=0 is human output', async (t) => {
    const o = out()
    const r = await run(BACKUP, ['--output', o, '--dry-run=false', '--json=0'], pgEnv(db))
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /backup complete/)
    t.equal(completeArtifacts(o).length, 1)
  })
})

t.test('5. a dry run approves exactly what the real run accepts', async (t) => {
  const dir = tempDir(t)
  mkdirSync(join(dir, 'real'))
  writeFileSync(join(dir, 'file'), 'x')
  symlinkSync(join(dir, 'nowhere'), join(dir, 'dangling'))
  symlinkSync(join(dir, 'real'), join(dir, 'to-real'))
  symlinkSync(join(dir, 'file'), join(dir, 'to-file'))
  symlinkSync('self', join(dir, 'self'))
  const outputs = {
    'an existing directory': join(dir, 'real'),
    'new nested directories': join(dir, 'new', 'a', 'b'),
    'a symlink to a directory': join(dir, 'to-real'),
    'below a symlink to a directory': join(dir, 'to-real', 'sub'),
    'a dangling symlink': join(dir, 'dangling'),
    'below a dangling symlink': join(dir, 'dangling', 'sub'),
    'a file': join(dir, 'file'),
    'below a file': join(dir, 'file', 'sub'),
    'a symlink to a file': join(dir, 'to-file'),
    'below a self-referencing symlink': join(dir, 'self', 'sub'),
    'a path with a newline': join(dir, 'new\nline'),
  }
  for (const [what, output] of Object.entries(outputs)) {
    await t.test(what, async (t) => {
      const count = () => { try { return completeArtifacts(output).length } catch { return 0 } }
      const before = count()
      const dry = await run(BACKUP, ['--output', output, '--dry-run'])
      const real = await run(BACKUP, ['--output', output])
      t.equal(dry.code, real.code, `dry run exit ${dry.code} (${dry.stderr.trim()}) = real run exit ${real.code} (${real.stderr.trim()})`)
      if (real.code === 0) t.equal(count(), before + 1, 'the real run wrote the artifact')
      else oneCleanLine(t, real, real.code ?? -1)
    })
  }
})

t.test('6. one message is one line, whatever the input holds', async (t) => {
  const dir = tempDir(t)
  const hostile = ['evil\nerror: injected line', 'cr\rreturn', 'esc\x1b[31mred', 'line\u2028sep', 'c1\u009bcsi', 'tab\there', 'bell\x07']
  for (const name of hostile) {
    // The subtest's own name is escaped: a raw U+2028 would break tap's output.
    await t.test(name.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`), async (t) => {
      const r = await run(RESTORE, [name], cleanEnv({ BACKUP_BASE: dir }))
      oneCleanLine(t, r, EXIT.input, /artifact not found/)
      const j = await run(RESTORE, ['--json', name], cleanEnv({ BACKUP_BASE: dir }))
      t.equal(j.stdout.trim().split('\n').length, 1, 'one JSON line')
      t.notMatch(j.stdout, /[\u2028\u2029\u0080-\u009f]/, 'no raw separators in JSON')
      t.match(JSON.parse(j.stdout), { ok: false, exitCode: EXIT.input })
      const u = await run(BACKUP, ['--output', join(dir, 'x'), `--${name}`])
      oneCleanLine(t, u, EXIT.usage, /unknown option/)
    })
  }
  await t.test('a warning about a hostile leftover name stays on one line', async (t) => {
    const out = join(dir, 'with-leftover')
    mkdirSync(out, { mode: 0o700 })
    mkdirSync(join(out, '.evil\nname.partial'))
    const r = await run(BACKUP, ['--output', out])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.stderr.split('\n').filter(Boolean).length, 1)
    t.match(r.stderr, /evil\\nname/)
  })
  void readdirSync
})

t.test('7. drill.sh, status.sh and the restore options refuse bad input in one line, before any work', async (t) => {
  const dir = tempDir(t)
  const base = join(dir, 'backups')
  t.equal((await run(BACKUP, ['--output', base])).code, 0)
  const [name] = completeArtifacts(base)
  execFileSync('mkfifo', [join(dir, 'fifo.md')])
  mkdirSync(join(dir, 'a-dir.md'))
  const DRILL = join(REPO, 'scripts', 'drill.sh')
  const STATUS = join(REPO, 'scripts', 'status.sh')
  const withBase = cleanEnv({ BACKUP_BASE: base })
  const cases: Array<{ name: string; script: string; args: string[]; env?: NodeJS.ProcessEnv; code: number; message: RegExp }> = [
    { name: 'drill --rto without a unit', script: DRILL, args: ['--dry-run', '--rto', '30'], env: withBase, code: EXIT.usage, message: /--rto must be a duration/ },
    { name: 'drill --window zero', script: DRILL, args: ['--dry-run', '--window', '0s'], env: withBase, code: EXIT.usage, message: /--window must be greater than zero/ },
    { name: 'drill DR_RPO_TARGET garbage', script: DRILL, args: ['--dry-run'], env: cleanEnv({ BACKUP_BASE: base, DR_RPO_TARGET: 'daily' }), code: EXIT.usage, message: /DR_RPO_TARGET must be a duration/ },
    { name: 'drill --report is a FIFO', script: DRILL, args: ['--dry-run', '--report', join(dir, 'fifo.md')], env: withBase, code: EXIT.input, message: /not a regular file/ },
    { name: 'drill --report is a directory', script: DRILL, args: ['--dry-run', '--report', join(dir, 'a-dir.md')], env: withBase, code: EXIT.input, message: /not a regular file/ },
    { name: 'drill --report in a missing directory', script: DRILL, args: ['--dry-run', '--report', join(dir, 'nope', 'r.md')], env: withBase, code: EXIT.input, message: /does not exist/ },
    { name: 'drill --summary without --report', script: DRILL, args: ['--summary'], env: withBase, code: EXIT.usage, message: /--summary needs --report/ },
    { name: 'drill --summary with no history yet', script: DRILL, args: ['--summary', '--report', join(dir, 'never.md')], env: withBase, code: EXIT.input, message: /no drill history/ },
    { name: 'drill --check-url that is not http', script: DRILL, args: ['--dry-run', '--check-url', 'ftp://x/'], env: withBase, code: EXIT.usage, message: /check-url/ },
    { name: "drill --check-url on a port fetch never connects to", script: DRILL, args: ['--dry-run', '--check-url', 'http://127.0.0.1:6000/health?k=v'], env: withBase, code: EXIT.usage, message: /port 6000.*check-cmd/ },
    { name: 'drill with no BACKUP_BASE', script: DRILL, args: ['--dry-run'], code: EXIT.usage, message: /BACKUP_BASE is not set/ },
    { name: 'status --max-age garbage', script: STATUS, args: ['--max-age', 'soon'], env: withBase, code: EXIT.usage, message: /--max-age must be a duration/ },
    { name: 'restore --jobs 0', script: RESTORE, args: ['--jobs', '0', name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true' }), code: EXIT.usage, message: /--jobs must be a whole number/ },
    { name: 'restore --jobs=lots', script: RESTORE, args: ['--jobs=lots', name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true' }), code: EXIT.usage, message: /--jobs must be a whole number/ },
    { name: 'restore RESTORE_JOBS=abc', script: RESTORE, args: [name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true', RESTORE_JOBS: 'abc' }), code: EXIT.usage, message: /RESTORE_JOBS must be a whole number from 1 to 64, got 'abc'; e\.g\. RESTORE_JOBS=2/ },
    { name: 'restore RESTORE_STAGE_DUMP=ture', script: RESTORE, args: [name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true', RESTORE_STAGE_DUMP: 'ture' }), code: EXIT.usage, message: /RESTORE_STAGE_DUMP must be true or false, got 'ture'/ },
    { name: 'restore RESTORE_JOBS=2x', script: RESTORE, args: [name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true', RESTORE_JOBS: '2x' }), code: EXIT.usage, message: /RESTORE_JOBS must be a whole number/ },
    { name: 'restore --in-place with --drop-old', script: RESTORE, args: ['--in-place', '--drop-old', name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true' }), code: EXIT.usage, message: /not to --in-place/ },
    { name: 'restore --in-place with --jobs', script: RESTORE, args: ['--in-place', '--jobs', '2', name], env: cleanEnv({ BACKUP_BASE: base, RESTORE_POSTGRES: 'true' }), code: EXIT.usage, message: /not to --in-place/ },
    { name: 'restore checks without RESTORE_POSTGRES', script: RESTORE, args: ['--check', name], env: withBase, code: EXIT.usage, message: /checks run against a restored database/ },
    { name: 'a real drill of artifacts without a dump', script: DRILL, args: [], env: withBase, code: EXIT.input, message: /no complete backup with a database dump/ },
    {
      name: 'restore that would swap out the postgres database',
      script: RESTORE,
      args: ['--dry-run', join(REPO, 'test', 'fixtures', 'v1', 'conductor-backup-20261126T131913Z')],
      env: cleanEnv({ RESTORE_POSTGRES: 'true', PGDATABASE: 'postgres' }),
      code: EXIT.usage,
      message: /postgres cannot be replaced by a swap/,
    },
    { name: 'backup --lock-wait-timeout garbage', script: BACKUP, args: ['--output', base, '--lock-wait-timeout', 'forever'], code: EXIT.usage, message: /--lock-wait-timeout must be a duration/ },
    { name: 'backup --lock-wait-timeout beyond what PostgreSQL takes', script: BACKUP, args: ['--output', base, '--dry-run', '--lock-wait-timeout', '4w'], code: EXIT.usage, message: /--lock-wait-timeout is longer than PostgreSQL takes \(at most 24d\)/ },
  ]
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      const r = await run(c.script, c.args, c.env)
      oneCleanLine(t, r, c.code, c.message)
    })
  }
  t.same(completeArtifacts(base), [name], 'nothing new was written')
})
