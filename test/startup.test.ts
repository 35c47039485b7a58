// How the scripts start and what they spawn: the bundle cache of lib/cli/launch.sh,
// the direct use of pg_wrapper's chosen binaries, and the double-buffered checksum.
import { createHash, randomBytes } from 'node:crypto'
import { appendFileSync, chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { clientCommand, learnClientVersion } from '../lib/postgres/client-path.ts'
import { digestHandle } from '../lib/pipeline/checksum.ts'
import { cleanEnv, REPO, run, tempDir } from './helpers.ts'

/** A checkout of its own (sources copied, node_modules linked), so editing it cannot disturb other tests. */
function checkout(t: Parameters<typeof tempDir>[0]): string {
  const dir = join(tempDir(t), 'checkout')
  mkdirSync(dir)
  for (const entry of ['lib', 'scripts', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    cpSync(join(REPO, entry), join(dir, entry), { recursive: true, verbatimSymlinks: true })
  }
  symlinkSync(join(REPO, 'node_modules'), join(dir, 'node_modules'))
  return dir
}

const bundles = (dir: string) => (existsSync(join(dir, '.bundle')) ? readdirSync(join(dir, '.bundle')).filter((n) => !n.startsWith('.')) : [])

t.test('the first start writes a bundle keyed by the sources; an edit gets a new one, never the old', async (t) => {
  const dir = checkout(t)
  const backup = join(dir, 'scripts', 'backup.sh')
  const first = await run(backup, ['--help'])
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, /^Usage: backup\.sh/)
  t.equal(bundles(dir).length, 1, 'one bundle after the first start')
  t.ok(existsSync(join(dir, '.bundle', bundles(dir)[0]!, 'backup.mjs')))

  // A change in behaviour, not only in bytes: the usage text the script prints.
  const cli = join(dir, 'scripts', 'backup.ts')
  writeFileSync(cli, readFileSync(cli, 'utf8').replace('Usage: backup.sh', 'Usage (edited): backup.sh'))
  const second = await run(backup, ['--help'])
  t.equal(second.code, 0, second.stderr)
  t.match(second.stdout, /^Usage \(edited\): backup\.sh/, 'the edited source runs, not the cached bundle')
  t.equal(bundles(dir).length, 2, 'a second bundle for the edited sources')

  // A file that only lib/ holds counts too.
  appendFileSync(join(dir, 'lib', 'version.ts'), '\n// touched\n')
  t.equal((await run(backup, ['--help'])).code, 0)
  t.equal(bundles(dir).length, 3)
})

t.test('a checkout where no bundle can be written still runs, through tsx', async (t) => {
  const dir = checkout(t)
  // A file where the cache directory would go: mkdir fails for root too.
  writeFileSync(join(dir, '.bundle'), 'not a directory')
  const r = await run(join(dir, 'scripts', 'backup.sh'), ['--output', join(dir, 'out'), '--json'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stderr, '', 'nothing on stderr about the missing bundle')
  t.equal(JSON.parse(r.stdout).ok, true)
})

t.test('concurrent first starts agree on one bundle and all run', async (t) => {
  const dir = checkout(t)
  const results = await Promise.all(Array.from({ length: 4 }, () => run(join(dir, 'scripts', 'status.sh'), ['--help'])))
  for (const r of results) {
    t.equal(r.code, 0, r.stderr)
    t.match(r.stdout, /^Usage: BACKUP_BASE=DIR status\.sh/)
  }
  t.equal(bundles(dir).length, 1)
  t.same(readdirSync(join(dir, '.bundle')).filter((n) => n.startsWith('.build-')), [], 'no build directory left behind')
})

t.test("pg_wrapper's chosen binary is used directly once its version is known", async (t) => {
  const dir = tempDir(t)
  const bin = join(dir, 'bin')
  mkdirSync(bin)
  writeFileSync(join(dir, 'pg_wrapper'), '#!/bin/sh\nexit 0\n')
  chmodSync(join(dir, 'pg_wrapper'), 0o755)
  symlinkSync(join(dir, 'pg_wrapper'), join(bin, 'psql'))
  writeFileSync(join(bin, 'pg_dump'), '#!/bin/sh\nexit 0\n') // not the wrapper: left alone
  chmodSync(join(bin, 'pg_dump'), 0o755)
  const env = { PATH: bin }
  t.equal(clientCommand('psql', env), 'psql', 'before any version is known: the name, as before')
  learnClientVersion('pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)')
  const major = /\(PostgreSQL\) (\d+)/.exec((await run('/bin/sh', ['-c', 'pg_dump --version'], cleanEnv())).stdout)?.[1]
  const direct = `/usr/lib/postgresql/15/bin/psql`
  if (major === '15' && existsSync(direct)) t.equal(clientCommand('psql', env), direct)
  else t.equal(clientCommand('psql', env), 'psql', 'no such binary here: the wrapper, as before')
  t.equal(clientCommand('pg_dump', env), 'pg_dump', 'a real binary on PATH is spawned by name')
  t.equal(clientCommand('pg_restore', env), 'pg_restore', 'a tool missing from PATH is spawned by name, to fail as before')
  learnClientVersion('pg_dump (PostgreSQL) 16.1') // the first answer stays
  if (existsSync(direct)) t.equal(clientCommand('psql', env), direct)
})

t.test('the checksum of a file: across buffer boundaries, and a file shorter than the manifest says', async (t) => {
  const dir = tempDir(t)
  for (const size of [0, 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 3]) {
    const data = randomBytes(size)
    const path = join(dir, `f${size}`)
    writeFileSync(path, data)
    const handle = await open(path)
    try {
      const seen: number[] = []
      const digest = await digestHandle(handle, size, (b) => seen.push(b))
      t.same(digest, { sha256: createHash('sha256').update(data).digest('hex'), size }, `${size} bytes`)
      t.equal(seen.at(-1) ?? 0, size, 'progress reaches the size')
      const short = await digestHandle(handle, size + 10)
      t.equal(short.size, size, 'a shorter file reads as shorter, for the caller to refuse')
      if (size > 0) {
        const part = await digestHandle(handle, size - 1)
        t.equal(part.sha256, createHash('sha256').update(data.subarray(0, size - 1)).digest('hex'), 'only the first `size` bytes')
      }
    } finally {
      await handle.close()
    }
  }
})
