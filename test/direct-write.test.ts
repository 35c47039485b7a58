// Local artifacts are written by zstd/age themselves and hashed by reading the file back as it grows:
// the digest must be the file's, whatever the pace of the writer, and a failing writer must fail the backup.
import { spawn } from 'node:child_process'
import { openSync, closeSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { followDigest, FLUSH_EVERY } from '../lib/pipeline/follow-file.ts'
import { chainFailure } from '../lib/pipeline/encode.ts'
import { ageKey, BACKUP, DUMP_ENABLED, filesEnv, pgEnv, psql, run, scratchDatabase, sh, sha256Hex, tempDir } from './helpers.ts'

/** A child writing `pieces` to fd 1 with pauses between them (none after the last: it exits at once); resolves with its exit status. */
function slowWriter(fd: number, pieces: string[]): Promise<number> {
  const script = pieces.join('; sleep 0.03; ')
  const child = spawn('sh', ['-c', script], { stdio: ['ignore', fd, 'ignore'] })
  return new Promise((resolve) => child.on('close', (code) => resolve(code ?? 1)))
}

t.test('the digest is of every byte the writer put in the file, however it paced them', async (t) => {
  const dir = tempDir(t)
  const cases: { name: string; pieces: string[] }[] = [
    { name: 'nothing', pieces: ['true'] },
    { name: 'one byte', pieces: ['printf x'] },
    { name: 'pauses between pieces', pieces: ['head -c 3000000 /dev/urandom', 'printf abc', 'head -c 1048576 /dev/urandom'] },
    // Past FLUSH_EVERY: write-back is started while the writer goes on.
    { name: 'more than one flush interval', pieces: [`head -c ${FLUSH_EVERY + 12345} /dev/urandom`, 'printf end'] },
  ]
  for (const c of cases) {
    const path = join(dir, c.name.replace(/ /g, '-'))
    const fd = openSync(path, 'wx+', 0o600)
    try {
      const progress: number[] = []
      const written = slowWriter(fd, c.pieces).then((code) => {
        if (code !== 0) throw new Error(`writer exit ${code}`)
      })
      const digest = await followDigest(fd, written, (n) => progress.push(n))
      const bytes = readFileSync(path)
      t.same(digest, { sha256: sha256Hex(bytes), size: bytes.length }, `${c.name}: digest and size are the file's`)
      t.equal(progress.at(-1) ?? 0, bytes.length, `${c.name}: progress ends at the file's size`)
    } finally {
      closeSync(fd)
    }
  }
})

t.test('a writer that fails rejects with its failure, without waiting for more bytes', async (t) => {
  const path = join(tempDir(t), 'f')
  const fd = openSync(path, 'wx+', 0o600)
  try {
    const written = slowWriter(fd, ['printf partial', 'exit 3']).then((code) => {
      if (code !== 0) throw new Error(`writer exit ${code}`)
    })
    await t.rejects(followDigest(fd, written), /writer exit 3/)
  } finally {
    closeSync(fd)
  }
})

t.test('a file-size limit met by the child that writes the file: one line naming it, exit 1, nothing published', async (t) => {
  const tree = join(tempDir(t), 'tree')
  mkdirSync(tree)
  writeFileSync(join(tree, 'random.bin'), randomBytes(2 * 1024 * 1024))
  const db = scratchDatabase(t)
  // md5 text of random numbers: about half of it survives zstd, well over the limit.
  psql(db, 'CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, 60000) g')
  const { recipient } = ageKey(t)
  const cases: { name: string; args: string[]; env: NodeJS.ProcessEnv; file: RegExp }[] = [
    { name: 'files, zstd writes', args: ['--path', tree], env: filesEnv(), file: /files\.tar\.zst'/ },
    // age writes the file; zstd before it dies of the closed pipe, which must not be what is reported.
    { name: 'files, age writes', args: ['--path', tree], env: filesEnv({ BACKUP_AGE_RECIPIENTS: recipient }), file: /files\.tar\.zst\.age'/ },
    // pg_dump dies of the closed pipe too: the disk, not pg_dump, is the cause.
    { name: 'database, zstd writes', args: [], env: pgEnv(db, DUMP_ENABLED), file: /postgres\.dump\.zst'/ },
    { name: 'database, age writes', args: [], env: pgEnv(db, { ...DUMP_ENABLED, BACKUP_AGE_RECIPIENTS: recipient }), file: /postgres\.dump\.zst\.age'/ },
  ]
  for (const c of cases) {
    const out = tempDir(t)
    // ulimit -f is in KiB: the data cannot fit, the manifest-sized files can.
    const r = await sh(`ulimit -f 256; exec ${BACKUP} --output '${out}' ${c.args.map((a) => `'${a}'`).join(' ')}`, c.env)
    t.equal(r.code, 1, `${c.name}: runtime failure`)
    t.match(r.stderr, /file too large for this file system/, `${c.name}: names the limit`)
    t.match(r.stderr, c.file, `${c.name}: names the file`)
    t.notMatch(r.stderr, /internal error|Broken pipe|Connection reset|at .*\.ts:\d+/, `${c.name}: no pipe noise, no stack`)
    t.same(readdirSync(out), [], `${c.name}: no artifact and no partial directory left`)
  }
})

t.test('which failure of a chain is reported (pure)', async (t) => {
  const cases: { name: string; exits: { what: string; exit: number; stderr: string }[]; expect: RegExp | null }[] = [
    { name: 'all well', exits: [{ what: 'zstd', exit: 0, stderr: '' }, { what: 'age', exit: 0, stderr: '' }], expect: null },
    { name: 'age met a full disk, zstd a closed pipe', exits: [{ what: 'zstd', exit: 141, stderr: '' }, { what: 'age', exit: 1, stderr: 'age: error: write /x: no space left on device' }], expect: /^no space left on device/ },
    { name: 'zstd reports the closed pipe in words', exits: [{ what: 'zstd', exit: 1, stderr: 'zstd: error 70 : Write error : Broken pipe' }, { what: 'age', exit: 1, stderr: 'age: error: something else' }], expect: /^age failed while writing f: age: error: something else/ },
    { name: 'a size limit by signal', exits: [{ what: 'zstd', exit: 153, stderr: '' }], expect: /^file too large/ },
    { name: 'quota, in the last child', exits: [{ what: 'zstd', exit: 0, stderr: '' }, { what: 'age', exit: 1, stderr: 'Disk quota exceeded' }], expect: /^disk quota exceeded/ },
    { name: 'the disk failing under zstd', exits: [{ what: 'zstd', exit: 1, stderr: 'zstd: error 70 : Write error : cannot write block : Input/output error' }], expect: /^I\/O error \('\/a\/f'\)/ },
    { name: 'the mount turned read-only under age', exits: [{ what: 'zstd', exit: 141, stderr: '' }, { what: 'age', exit: 1, stderr: 'age: error: failed to write: write /a/f: read-only file system' }], expect: /^read-only file system/ },
    { name: 'a stale NFS handle', exits: [{ what: 'age', exit: 1, stderr: 'age: error: write /a/f: stale NFS file handle' }], expect: /^stale network file handle/ },
    { name: 'only broken pipes: the first is named', exits: [{ what: 'zstd', exit: 141, stderr: '' }], expect: /^zstd failed while writing f: exit status 141/ },
  ]
  for (const c of cases) {
    const err = chainFailure(c.exits, 'f', '/a/f')
    if (c.expect === null) t.equal(err, null, c.name)
    else t.match(err?.message, c.expect, c.name)
  }
})

t.test('a local backup made this way verifies and its digest is of the stored file', async (t) => {
  const tree = join(tempDir(t), 'tree')
  mkdirSync(tree)
  writeFileSync(join(tree, 'a.txt'), 'conductor '.repeat(100000))
  const out = tempDir(t)
  const r = await run(BACKUP, ['--output', out, '--path', tree, '--json'], filesEnv())
  t.equal(r.code, 0, r.stderr)
  const [name] = readdirSync(out)
  const manifest = JSON.parse(readFileSync(join(out, name!, 'manifest.json'), 'utf8'))
  const archive = manifest.files.find((f: { path: string }) => f.path === 'files.tar.zst')
  const stored = readFileSync(join(out, name!, 'files.tar.zst'))
  t.same({ sha256: archive.sha256, size: archive.size }, { sha256: sha256Hex(stored), size: stored.length })
})
