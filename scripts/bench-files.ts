#!/usr/bin/env -S sh -c 'd="$(dirname "$(realpath "$0")")/.."; exec node --max-semi-space-size=2 --import "$d/node_modules/tsx/dist/loader.mjs" "$d/node_modules/zx/build/cli.js" "$(realpath "$0")" "$@"'
// Benchmark of the application-files pipeline against plain GNU tar and zstd
// on the same tree in the same run, as throughput ratios (anchor seconds /
// ours: 1 means as fast as the plain tools). Run: npm run bench:files -- --help
import { randomBytes } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { $, quote } from 'zx'
import { parseArgs } from '../lib/cli/args.ts'
import { usageError } from '../lib/cli/errors.ts'
import { formatBytes, type Reporter } from '../lib/cli/report.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { onInterrupt } from '../lib/cli/signals.ts'
import { benchSize, median, timeCommand, type Timed } from './bench-timing.ts'

const USAGE = `Usage: scripts/bench-files.ts [--tree DIR] [--megabytes N] [--runs N] [--json]

Builds once a tree of about N MiB (default 1024) under DIR (default
/var/tmp/cdr-bench-tree-<N>): thousands of small files (1-16 KiB, text-like),
a few hundred medium ones and some large ones (half random bytes, half
compressible text). Then times, median of --runs (default 1), with GNU time:
  backup    backup.sh --path TREE                 vs  tar -cf - TREE | zstd -T0 -3 > out
            (and vs the same plus sync of out: ours fsyncs what it writes, the plain pipe does not)
  backup+age  the same with BACKUP_AGE_RECIPIENTS vs  the same anchor
  restore   RESTORE_FILES=true restore.sh --target (decompress, extract, verify every file)
                                                  vs  zstd -d < out | tar -xf -
  restore+age  the same from the encrypted artifact, with the identity
Ratios are throughput, anchor seconds / ours: the targets are backup >= 0.8,
backup+age >= 0.7, restore >= 0.7; peak RSS (with children) is shown.
Also timed, to show what any design that hashes the archived bytes can reach:
  ceiling   tar -cf - TREE | node | zstd -T0 -3 > out, where node only passes
            the bytes on and SHA-256es every one of them (no parsing, no index,
            no fsync): the least work a backup that hashes each file from the
            bytes tar archives (the index's rule) has to add to the anchor`

const here = fileURLToPath(new URL('.', import.meta.url))
const MiB = 1024 * 1024

/**
 * The ceiling step, run by plain node: tar's output through this process
 * into zstd, every byte hashed once on the way, nothing else. A backup that
 * hashes what tar archives cannot be faster than this on the same machine.
 */
const CEILING = `// bench-files ceiling: node ceiling.mjs TREE OUT
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { openSync } from 'node:fs'
const [tree, out] = process.argv.slice(2)
const tar = spawn('tar', ['-cf', '-', tree], { stdio: ['ignore', 'pipe', 'ignore'] })
const zstd = spawn('zstd', ['-T0', '-3', '-q'], { stdio: ['pipe', openSync(out, 'w'), 'inherit'] })
const hash = createHash('sha256')
tar.stdout.on('data', (chunk) => {
  hash.update(chunk)
  if (!zstd.stdin.write(chunk)) {
    tar.stdout.pause()
    zstd.stdin.once('drain', () => tar.stdout.resume())
  }
})
tar.stdout.on('end', () => zstd.stdin.end())
const code = await new Promise((resolve) => zstd.on('close', resolve))
hash.digest()
process.exit(code)
`

/** Text-like bytes zstd compresses about 3:1, like configuration and logs. */
function textLike(size: number): Buffer {
  const words = ['conductor', 'upload', 'config', 'key', 'value', 'true', 'false', '2024-03-15T12:00:00Z', 'id', 'user', 'path', '/srv/app']
  const parts: string[] = []
  let n = 0
  while (n < size) {
    const w = words[(n * 7 + parts.length) % words.length]! + (parts.length % 13 === 0 ? `${randomBytes(4).toString('hex')}\n` : ' ')
    parts.push(w)
    n += w.length
  }
  return Buffer.from(parts.join('')).subarray(0, size)
}

async function writeBig(path: string, size: number, random: boolean): Promise<void> {
  const out = createWriteStream(path)
  for (let left = size; left > 0; ) {
    const n = Math.min(4 * MiB, left)
    const chunk = random ? randomBytes(n) : textLike(n)
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()))
    left -= n
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())))
}

async function buildTree(dir: string, megabytes: number, reporter: Reporter): Promise<void> {
  reporter.line(`building a ${megabytes} MiB tree in ${dir} (kept for later runs)`)
  await mkdir(dir, { recursive: true })
  const small = Math.round((megabytes * 0.15 * MiB) / 8192) // 15%: many small files
  for (let i = 0; i < small; i++) {
    const sub = join(dir, 'small', String(i % 100))
    if (i < 100) await mkdir(sub, { recursive: true })
    await writeFile(join(sub, `f${i}.txt`), textLike(1024 + ((i * 4093) % 15360)))
  }
  const medium = Math.round((megabytes * 0.15 * MiB) / MiB) // 15%: 1 MiB files
  await mkdir(join(dir, 'medium'), { recursive: true })
  for (let i = 0; i < medium; i++) await writeBig(join(dir, 'medium', `m${i}.bin`), MiB, i % 2 === 0)
  await mkdir(join(dir, 'large'), { recursive: true })
  const large = 7
  for (let i = 0; i < large; i++) await writeBig(join(dir, 'large', `l${i}.bin`), Math.round((megabytes * 0.7 * MiB) / large), i % 2 === 0)
  await writeFile(join(dir, '.complete'), '')
}

async function treeBytes(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0
  let bytes = 0
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue
    files++
    bytes += (await stat(join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))).size
  }
  return { files, bytes }
}

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, reporter }) => {
  const { flags, positional } = parseArgs(argv, { boolean: ['json', 'help'], string: ['tree', 'megabytes', 'runs'], alias: { h: 'help' } })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 0) throw usageError(`unexpected argument ${positional[0]}`)
  const { megabytes, runs } = benchSize(flags)
  const tree = String(flags.tree ?? `/var/tmp/cdr-bench-tree-${megabytes}`)
  const work = await mkdtemp(join(tmpdir(), 'cdr-bench-files-'))
  const unregister = onInterrupt(() => rm(work, { recursive: true, force: true }))
  const env: Record<string, string> = { ...(process.env as Record<string, string>), NO_COLOR: '1' }
  for (const k of ['INCLUDE_POSTGRES', 'ENABLE_POSTGRES_DUMP', 'BACKUP_PATHS', 'BACKUP_AGE_RECIPIENTS', 'BACKUP_AGE_RECIPIENTS_FILE', 'BACKUP_ENCRYPTION', 'RESTORE_POSTGRES']) delete env[k]
  try {
    const sh = $({ quiet: true })
    if (!(await stat(join(tree, '.complete')).catch(() => null))) {
      await rm(tree, { recursive: true, force: true })
      await buildTree(tree, megabytes, reporter)
    }
    const size = await treeBytes(tree)
    reporter.heading(`Files benchmark on ${tree}: ${size.files} files, ${formatBytes(size.bytes)} (median of ${runs})`)
    await writeFile(join(work, 'ceiling.mjs'), CEILING)
    await sh`age-keygen -o ${join(work, 'key')}`
    const recipient = (await sh`age-keygen -y ${join(work, 'key')}`).stdout.trim()
    // Untimed: one read of the tree so every timed step starts with it in the page cache.
    await sh`tar -cf /dev/null ${tree}`

    let seq = 0
    const t: Record<string, Timed[]> = {}
    const time = async (key: string, cmd: string[], extra: Record<string, string> = {}) => {
      // Untimed: no step pays for the write-back of the one before it (or of a freshly built tree).
      await $`sync`
      ;(t[key] ??= []).push(await timeCommand(work, ++seq, key, cmd, { ...env, ...extra }))
    }
    let storedBytes = 0
    let anchorBytes = 0
    for (let i = 0; i < runs; i++) {
      const run = join(work, `run${i}`)
      await mkdir(run)
      const plain = join(run, 'plain.tar.zst')
      reporter.line(`run ${i + 1}/${runs}: backups`)
      await time('backup:anchor', ['bash', '-o', 'pipefail', '-c', `tar -cf - ${quote(tree)} | zstd -T0 -3 -q > ${quote(plain)}`])
      // The same, made durable as ours is (ours fsyncs every file before it publishes): the fair anchor on a slow disk.
      await time('backup:anchor+sync', ['bash', '-o', 'pipefail', '-c', `tar -cf - ${quote(tree)} | zstd -T0 -3 -q > ${quote(plain)}.2 && sync ${quote(plain)}.2`])
      await time('backup:ceiling', ['node', join(work, 'ceiling.mjs'), tree, `${plain}.3`])
      await time('backup:ours', [join(here, 'backup.sh'), '--output', join(run, 'out'), '--path', tree, '--json'])
      await time('backup:ours+age', [join(here, 'backup.sh'), '--output', join(run, 'enc'), '--path', tree, '--json'], { BACKUP_AGE_RECIPIENTS: recipient })
      anchorBytes = (await stat(plain)).size
      const [ours] = (await readdir(join(run, 'out'))).filter((n) => !n.startsWith('.'))
      const [enc] = (await readdir(join(run, 'enc'))).filter((n) => !n.startsWith('.'))
      storedBytes = (await stat(join(run, 'out', ours!, 'files.tar.zst'))).size
      reporter.line(`run ${i + 1}/${runs}: restores`)
      await mkdir(join(run, 'x-anchor'))
      await time('restore:anchor', ['bash', '-o', 'pipefail', '-c', `zstd -d -q < ${quote(plain)} | tar -xf - -C ${quote(join(run, 'x-anchor'))}`])
      await time('restore:ours', [join(here, 'restore.sh'), '--json', '--target', join(run, 'x-ours'), ours!], { BACKUP_BASE: join(run, 'out'), RESTORE_FILES: 'true' })
      await time('restore:ours+age', [join(here, 'restore.sh'), '--json', '--target', join(run, 'x-enc'), enc!], {
        BACKUP_BASE: join(run, 'enc'),
        RESTORE_FILES: 'true',
        BACKUP_AGE_IDENTITY_FILE: join(work, 'key'),
      })
      await rm(run, { recursive: true, force: true })
    }
    const sec = (k: string) => median(t[k]!.map((x) => x.seconds))
    const rss = (k: string) => Math.max(...t[k]!.map((x) => x.maxRssKiB)) * 1024
    const rows = ([
      { step: 'backup', ours: 'backup:ours', anchor: 'backup:anchor', target: 0.8 },
      { step: 'ceiling (hash-and-pass)', ours: 'backup:ceiling', anchor: 'backup:anchor', target: null },
      { step: 'backup+age', ours: 'backup:ours+age', anchor: 'backup:anchor', target: 0.7 },
      { step: 'backup (vs anchor + sync)', ours: 'backup:ours', anchor: 'backup:anchor+sync', target: 0.8 },
      { step: 'backup+age (vs anchor + sync)', ours: 'backup:ours+age', anchor: 'backup:anchor+sync', target: 0.7 },
      { step: 'restore', ours: 'restore:ours', anchor: 'restore:anchor', target: 0.7 },
      { step: 'restore+age', ours: 'restore:ours+age', anchor: 'restore:anchor', target: 0.7 },
    ] as { step: string; ours: string; anchor: string; target: number | null }[]).map((r) => ({ ...r, oursS: sec(r.ours), anchorS: sec(r.anchor), throughput: sec(r.anchor) / sec(r.ours), oursRss: rss(r.ours) }))
    reporter.line('')
    reporter.line(`${'step'.padEnd(30)} ${'ours s'.padStart(7)} ${'anchor s'.padStart(9)} ${'throughput'.padStart(10)} ${'target'.padStart(7)}  peak RSS (ours)`)
    for (const r of rows) {
      reporter.line(
        `${r.step.padEnd(30)} ${r.oursS.toFixed(2).padStart(7)} ${r.anchorS.toFixed(2).padStart(9)} ${r.throughput.toFixed(2).padStart(10)} ${(r.target === null ? '-' : `>=${r.target}`).padStart(7)}  ${formatBytes(r.oursRss)}${r.target === null || r.throughput >= r.target ? '' : '  <- below target'}`,
      )
    }
    reporter.line('throughput = anchor seconds / ours: 1 means as fast as plain tar and zstd')
    reporter.line('ceiling: tar | node (SHA-256 of every byte, nothing else) | zstd, the bound for any backup that hashes what tar archives')
    reporter.line(`stored: ours ${formatBytes(storedBytes)}, tar | zstd -3 ${formatBytes(anchorBytes)}`)
    reporter.result({ tree, files: size.files, bytes: size.bytes, runs, results: rows, storedBytes, anchorBytes }, 'files benchmark complete')
  } finally {
    unregister()
    await rm(work, { recursive: true, force: true })
  }
})
