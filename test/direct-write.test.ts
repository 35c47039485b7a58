// Local artifacts are written by zstd/age themselves and hashed by reading the file back as it grows:
// the digest must be the file's, whatever the pace of the writer, and a failing writer must fail the backup.
import { spawn } from 'node:child_process'
import { openSync, closeSync, readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { followDigest, FLUSH_EVERY } from '../lib/pipeline/follow-digest.ts'
import { BACKUP, filesEnv, run, sh, sha256Hex, tempDir } from './helpers.ts'

/** A child writing `pieces` to fd 1 with pauses between them; resolves with its exit status. */
function slowWriter(fd: number, pieces: string[]): Promise<number> {
  const script = pieces.map((p) => `${p}; sleep 0.03`).join('; ')
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

t.test('zstd stopped by a file-size limit: one line naming it, exit 1, nothing published', async (t) => {
  const tree = join(tempDir(t), 'tree')
  mkdirSync(tree)
  writeFileSync(join(tree, 'random.bin'), randomBytes(2 * 1024 * 1024))
  const out = tempDir(t)
  // ulimit -f is in KiB: the archive (2 MiB of random bytes) cannot fit, the tiny index can.
  const r = await sh(`ulimit -f 512; exec ${BACKUP} --output '${out}' --path '${tree}'`, filesEnv())
  t.equal(r.code, 1, 'runtime failure')
  t.match(r.stderr, /file too large for this file system .*files\.tar\.zst/)
  t.notMatch(r.stderr, /internal error|at .*\.ts:\d+/)
  t.same(readdirSync(out), [], 'no artifact and no partial directory left')
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
