#!/usr/bin/env -S sh -c 'd="$(dirname "$(realpath "$0")")/.."; exec node --max-semi-space-size=2 --import "$d/node_modules/tsx/dist/loader.mjs" "$d/node_modules/zx/build/cli.js" "$(realpath "$0")" "$@"'
// Benchmark: backup.sh, restore.sh and drill.sh against the plain tools on the
// same data in the same run, reported as ratios (ours / anchor; below 1 means
// ours is faster). Not part of the tests: timings belong here, never in an
// assertion. Run: npm run bench -- --help
import { randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { $, quote } from 'zx'
import { parseArgs } from '../lib/cli/args.ts'
import { runtimeError, usageError } from '../lib/cli/errors.ts'
import { formatBytes, type Reporter } from '../lib/cli/report.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { onInterrupt } from '../lib/cli/signals.ts'
import { median, tail, timeCommand, type Timed } from './bench-timing.ts'

const USAGE = `Usage: scripts/bench.ts [--database NAME] [--megabytes N] [--runs N] [--rebuild] [--json]

Builds once (again with --rebuild) database NAME (default cdr_bench_v2) of about
N MiB (default 1024, by pg_database_size): pgbench tables (pgbench -i) plus ~20%
varied rows (distinct random bytea, jsonb documents, free text, timestamps, btree,
gin and unique indexes). Then times each step with GNU time (wall, peak RSS with
children), median of --runs (default 1), each step started after \`sync\` and a
CHECKPOINT, against plain tools on the same data:
  backup   backup.sh --json           vs  pg_dump -Fc;  pg_dump -Fc -Z0 | zstd -T0 -3
           (and the artifact's size vs both dump files)
  verify   restore.sh --dry-run       vs  sha256sum;  openssl dgst -sha256 (largest file)
  restore  restore.sh into a new db   vs  createdb + pg_restore --single-transaction;
                                          createdb + pg_restore -j2 of a pg_dump -Fd dump
  drill    drill.sh --json            vs  createdb + pg_restore -j2 (phases and rtoMs shown)
plus the cost of counting every table's rows (as a share of a backup) and the
fixed cost per run of backup.sh and restore.sh --dry-run on a one-table database.

  --database NAME   benchmark database (default cdr_bench_v2); kept for later runs
  --megabytes N     its size when built (default 1024; try 64 for a quick run)
  --runs N          runs per step, the median is reported (default 1)
  --rebuild         rebuild the benchmark database even if it exists
  --json            one JSON document on stdout
  -h, --help        this text

Every other database it creates has a unique name (cdr_bench_*_<pid>_<rand>_<n>)
and is dropped at the end, also on failure; work files go to a fresh temp dir.
Connection: PGHOST, PGPORT, PGUSER, PGPASSWORD (DATABASE_URL is ignored).`

const here = fileURLToPath(new URL('.', import.meta.url))
const MiB = 1024 * 1024
/** Bytes per row measured for scripts/bench-data.sql, indexes and TOAST included. */
const BLOB_ROW_BYTES = 11_800
const DOC_ROW_BYTES = 1_230
/** pgbench -i: about 15 MiB per scale step on an ~8 MiB empty database. */
const PGBENCH_MIB_PER_SCALE = 15

/** What the children see: our own connection settings, none of the caller's DR switches. */
const baseEnv: Record<string, string> = {}
for (const [k, v] of Object.entries(process.env)) {
  if (v === undefined) continue
  if (/^(DATABASE_URL|PGDATABASE|BACKUP_BASE|DRILL_DATABASE|DR_RPO_TARGET|DR_RTO_TARGET|INCLUDE_POSTGRES|ENABLE_POSTGRES_DUMP|RESTORE_POSTGRES)$/.test(k)) continue
  baseEnv[k] = v
}
baseEnv.NO_COLOR = '1'
const sh = $({ quiet: true, nothrow: true, env: baseEnv })

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`
const literal = (text: string) => `'${text.replace(/'/g, "''")}'`

/** Runs a command that must succeed; a failure names the step and shows stderr's tail. */
async function must(step: string, cmd: string[], env: Record<string, string> = {}): Promise<string> {
  const p = await sh({ env: { ...baseEnv, ...env } })`${cmd}`
  if (p.exitCode !== 0) {
    throw runtimeError(`bench step "${step}" failed (exit ${p.exitCode}): ${tail(p.stderr || p.stdout)}`, 'see the step above; no database was left behind')
  }
  return p.stdout
}

const psql = (step: string, db: string, sql: string) => must(step, ['psql', '-XAtqd', db, '-v', 'ON_ERROR_STOP=1', '-c', sql])

async function filesUnder(dir: string): Promise<Array<{ path: string; bytes: number }>> {
  const out: Array<{ path: string; bytes: number }> = []
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) out.push(...(await filesUnder(path)))
    else if (entry.isFile()) out.push({ path, bytes: (await stat(path)).size })
  }
  return out
}

class Bench {
  private seq = 0
  private readonly tag = `${process.pid}_${randomBytes(2).toString('hex')}`
  /** Databases this run created (or may have: restore.sh and drill.sh create theirs). */
  readonly databases = new Set<string>()

  constructor(readonly work: string) {}

  /** A database name no other run uses; registered for dropping before anything can create it. */
  name(kind: string): string {
    const db = `cdr_bench_${kind}_${this.tag}_${++this.seq}`
    this.databases.add(db)
    return db
  }

  async drop(db: string): Promise<void> {
    // FORCE: a failed or interrupted step may still hold a connection.
    const p = await sh`psql -XAtqd postgres -c ${`DROP DATABASE IF EXISTS ${ident(db)} WITH (FORCE)`}`
    if (p.exitCode !== 0) throw runtimeError(`could not drop database ${db}: ${tail(p.stderr)}`, `drop it by hand: dropdb ${db}`)
    this.databases.delete(db)
  }

  async dropAll(): Promise<string[]> {
    const left: string[] = []
    for (const db of [...this.databases]) {
      try {
        await this.drop(db)
      } catch {
        left.push(db)
      }
    }
    return left
  }

  /**
   * GNU time: wall seconds and peak RSS of the whole command, children
   * included. Every step starts settled (untimed: `sync`, then a server
   * CHECKPOINT), so none pays for the write-back of the step before it: the
   * untimed 1 GiB directory dump used to land on whichever restore ran next.
   */
  async timed(step: string, cmd: string[], env: Record<string, string> = {}): Promise<Timed> {
    await sh`sync`
    await sh`psql -XAtqd postgres -c CHECKPOINT`
    return timeCommand(this.work, ++this.seq, step, cmd, { ...baseEnv, ...env })
  }
}

async function databaseExists(db: string): Promise<boolean> {
  return (await psql('look up database', 'postgres', `SELECT 1 FROM pg_database WHERE datname = ${literal(db)}`)).trim() === '1'
}

const databaseSize = async (db: string) => Number((await psql('database size', db, 'SELECT pg_database_size(current_database())')).trim())

/**
 * Built under a unique name and renamed at the end, so a half-built database
 * never passes for a finished one and two runs building at once do not collide.
 */
async function buildDatabase(bench: Bench, db: string, megabytes: number, rebuild: boolean, reporter: Reporter) {
  // pgbench takes ~80% of the size (scale ≈ 0.055 × MiB), the varied rows the rest (at least 20%).
  const scale = Math.max(1, Math.round((0.8 * megabytes - 8) / PGBENCH_MIB_PER_SCALE))
  const build = bench.name('build')
  reporter.line(`building ${db} (~${megabytes} MiB, pgbench scale ${scale}) as ${build}`)
  await must('build: createdb', ['createdb', build])
  await must('build: pgbench -i', ['pgbench', '-i', '-s', String(scale), '-q', build])
  const pgbenchMiB = (await databaseSize(build)) / MiB
  const variedMiB = Math.max(0.2 * megabytes, megabytes - pgbenchMiB)
  const blobRows = Math.max(16, Math.round((variedMiB / 2) * MiB / BLOB_ROW_BYTES))
  const docRows = Math.max(100, Math.round((variedMiB / 2) * MiB / DOC_ROW_BYTES))
  reporter.line(`pgbench tables ${pgbenchMiB.toFixed(0)} MiB; adding ${blobRows} blobs and ${docRows} documents (~${variedMiB.toFixed(0)} MiB)`)
  await must('build: varied rows', ['psql', '-Xq', '-v', 'ON_ERROR_STOP=1', '-v', `blob_rows=${blobRows}`, '-v', `doc_rows=${docRows}`, '-f', join(here, 'bench-data.sql'), build])
  if (rebuild) await psql('build: drop old database', 'postgres', `DROP DATABASE IF EXISTS ${ident(db)}`)
  const renamed = await sh`psql -XAtqd postgres -v ON_ERROR_STOP=1 -c ${`ALTER DATABASE ${ident(build)} RENAME TO ${ident(db)}`}`
  if (renamed.exitCode !== 0) {
    if (!rebuild && (await databaseExists(db))) {
      reporter.warn(`${db} was built by another run meanwhile; using that one`)
      await bench.drop(build)
      return
    }
    throw runtimeError(`bench step "build: rename" failed: ${tail(renamed.stderr)}`)
  }
  bench.databases.delete(build)
}

interface Row {
  step: string
  anchor: string
  oursS: number
  anchorS: number
  ratio: number
  oursMaxRssKiB: number
  anchorMaxRssKiB: number
}

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, reporter }) => {
  const { flags, positional } = parseArgs(argv, {
    boolean: ['json', 'help', 'rebuild'],
    string: ['database', 'megabytes', 'runs'],
    alias: { h: 'help' },
  })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  if (positional.length > 0) throw usageError(`unexpected argument ${positional[0]}`)
  const db = String(flags.database ?? 'cdr_bench_v2')
  const megabytes = Number(flags.megabytes ?? 1024)
  const runs = Number(flags.runs ?? 1)
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(db)) throw usageError(`--database ${db}: use letters, digits and _ only`)
  if (!Number.isFinite(megabytes) || megabytes < 16) throw usageError('--megabytes must be a number, at least 16')
  if (!Number.isInteger(runs) || runs < 1) throw usageError('--runs must be a whole number, at least 1')

  const work = await mkdtemp(join(tmpdir(), 'cdr-bench-'))
  const bench = new Bench(work)
  const cleanup = async () => {
    const left = await bench.dropAll()
    await rm(work, { recursive: true, force: true })
    return left
  }
  const unregister = onInterrupt(async () => {
    await cleanup()
  })
  // A closed stdout (`| head`) would crash the process past the finally below: clean up as on Ctrl-C.
  process.stdout.once('error', () => process.kill(process.pid, 'SIGTERM'))
  let failed = true
  try {
    reporter.heading(`Benchmark on database ${db} (median of ${runs} run${runs === 1 ? '' : 's'} per step)`)
    if (flags.rebuild || !(await databaseExists(db))) await buildDatabase(bench, db, megabytes, Boolean(flags.rebuild), reporter)
    const size = await databaseSize(db)
    const [blobRows, distinctBlobs] = (await psql('distinct-blob check', db, 'SELECT count(*), count(DISTINCT body) FROM bench_blobs'))
      .trim().split('|').map(Number)
    reporter.line(`database size: ${formatBytes(size)} (pg_database_size)`)
    reporter.line(`distinct blobs: ${distinctBlobs} of ${blobRows}${distinctBlobs === blobRows ? '' : '  <- NOT all different'}`)
    if (distinctBlobs !== blobRows) reporter.warn(`only ${distinctBlobs} of ${blobRows} blobs differ: rebuild with --rebuild`)

    const tables = (await psql('list tables', db,
      `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`))
      .trim().split('\n').filter(Boolean)
    const countSql = `SELECT ${tables.map((t) => `(SELECT count(*) FROM ${t})`).join(', ')}`

    const pgEnv = { PGDATABASE: db, INCLUDE_POSTGRES: 'true', ENABLE_POSTGRES_DUMP: 'true' }
    const t: Record<string, Timed[]> = {}
    const add = (key: string, x: Timed) => (t[key] ??= []).push(x)

    // Untimed: the directory-format dump the parallel restore anchor reads.
    const dirDump = join(work, 'plain.dir')
    reporter.line('pg_dump -Fd -j2 (untimed, for the pg_restore -j2 anchor)')
    await must('pg_dump -Fd -j2', ['pg_dump', '-Fd', '-j2', '-f', dirDump, db])

    let drillDoc: { phases?: Array<{ name: string; status: string; ms: number }>; rtoMs?: number | null } = {}
    let artifactBytes = 0
    let fcBytes = 0
    let zstdBytes = 0
    for (let i = 0; i < runs; i++) {
      const run = join(work, `run${i}`)
      const out = join(run, 'out')
      const fc = join(run, 'plain.dump')
      const zst = join(run, 'plain.dump.zst')
      await mkdir(run)
      reporter.line(`run ${i + 1}/${runs}: row counts, backups`)
      // First: reads every table once, so the backups after it all start warm.
      add('rowCounts', await bench.timed('row counts', ['psql', '-XAtqd', db, '-c', countSql]))
      add('backup:pg_dump -Fc', await bench.timed('backup anchor pg_dump -Fc', ['pg_dump', '-Fc', '-f', fc, db]))
      add('backup:ours', await bench.timed('backup.sh', [join(here, 'backup.sh'), '--output', out, '--json'], pgEnv))
      add('backup:pg_dump -Z0 | zstd', await bench.timed('backup anchor pg_dump | zstd',
        ['bash', '-o', 'pipefail', '-c', `pg_dump -Fc -Z0 ${quote(db)} | zstd -T0 -3 -q > ${quote(zst)}`]))
      const artifacts = (await readdir(out, { withFileTypes: true })).filter((e) => e.isDirectory())
      if (artifacts.length !== 1) throw runtimeError(`bench step "backup.sh" left ${artifacts.length} artifact directories in ${out}, expected 1`)
      const artifact = join(out, artifacts[0].name)
      const files = await filesUnder(artifact)
      const biggest = files.reduce((a, b) => (b.bytes > a.bytes ? b : a))
      artifactBytes = files.reduce((n, f) => n + f.bytes, 0)
      fcBytes = (await stat(fc)).size
      zstdBytes = (await stat(zst)).size

      reporter.line(`run ${i + 1}/${runs}: verify`)
      add('verify:ours', await bench.timed('restore.sh --dry-run', [join(here, 'restore.sh'), '--dry-run', artifact]))
      add('verify:sha256sum', await bench.timed('verify anchor sha256sum', ['sha256sum', biggest.path]))
      add('verify:openssl', await bench.timed('verify anchor openssl', ['openssl', 'dgst', '-sha256', biggest.path]))

      reporter.line(`run ${i + 1}/${runs}: restores`)
      let target = bench.name('r')
      add('restore:ours', await bench.timed('restore.sh', [join(here, 'restore.sh'), artifact], { PGDATABASE: target, RESTORE_POSTGRES: 'true' }))
      await bench.drop(target)
      target = bench.name('r')
      add('restore:pg_restore -1', await bench.timed('restore anchor pg_restore --single-transaction',
        ['sh', '-c', `createdb ${quote(target)} && pg_restore --single-transaction -d ${quote(target)} ${quote(fc)}`]))
      await bench.drop(target)
      target = bench.name('r')
      add('restore:pg_restore -j2', await bench.timed('restore anchor pg_restore -j2',
        ['sh', '-c', `createdb ${quote(target)} && pg_restore -j2 -d ${quote(target)} ${quote(dirDump)}`]))
      await bench.drop(target)

      reporter.line(`run ${i + 1}/${runs}: drill`)
      const scratch = bench.name('drill')
      const drill = await bench.timed('drill.sh', [join(here, 'drill.sh'), '--json', artifact], { PGDATABASE: db, DRILL_DATABASE: scratch })
      add('drill:ours', drill)
      await bench.drop(scratch)
      try {
        drillDoc = JSON.parse(drill.stdout.trim().split('\n').pop() ?? '{}')
      } catch {
        throw runtimeError(`bench step "drill.sh": --json output is not JSON: ${tail(drill.stdout, 2)}`)
      }
      await rm(run, { recursive: true, force: true })
    }

    // Fixed cost: the same commands on a one-table database, where nearly all the time is overhead.
    reporter.line('fixed cost: backup.sh and restore.sh --dry-run on a one-table database')
    const tiny = bench.name('tiny')
    await must('tiny: createdb', ['createdb', tiny])
    await psql('tiny: table', tiny, 'CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, \'one\')')
    const tinyRuns = Math.max(3, runs)
    for (let i = 0; i < tinyRuns; i++) {
      const out = join(work, `tiny${i}`)
      add('fixed:backup', await bench.timed('tiny backup.sh', [join(here, 'backup.sh'), '--output', out, '--json'], { ...pgEnv, PGDATABASE: tiny }))
      const [name] = (await readdir(out)).filter((n) => !n.startsWith('.'))
      add('fixed:verify', await bench.timed('tiny restore.sh --dry-run', [join(here, 'restore.sh'), '--dry-run', join(out, name)]))
      await rm(out, { recursive: true, force: true })
    }
    await bench.drop(tiny)

    const sec = (key: string) => median(t[key].map((x) => x.seconds))
    const rss = (key: string) => Math.max(...t[key].map((x) => x.maxRssKiB))
    const rows: Row[] = []
    const row = (step: string, anchor: string, oursKey: string, anchorKey: string) =>
      rows.push({ step, anchor, oursS: sec(oursKey), anchorS: sec(anchorKey), ratio: sec(oursKey) / sec(anchorKey), oursMaxRssKiB: rss(oursKey), anchorMaxRssKiB: rss(anchorKey) })
    row('backup', 'pg_dump -Fc', 'backup:ours', 'backup:pg_dump -Fc')
    row('backup', 'pg_dump -Z0 | zstd -3', 'backup:ours', 'backup:pg_dump -Z0 | zstd')
    row('verify', 'sha256sum', 'verify:ours', 'verify:sha256sum')
    row('verify', 'openssl sha256', 'verify:ours', 'verify:openssl')
    row('restore', 'pg_restore -1', 'restore:ours', 'restore:pg_restore -1')
    row('restore', 'pg_restore -j2', 'restore:ours', 'restore:pg_restore -j2')
    row('drill', 'pg_restore -j2', 'drill:ours', 'restore:pg_restore -j2')

    const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-')
    reporter.line('')
    reporter.line(`${'step'.padEnd(8)} ${'anchor'.padEnd(22)} ${'ours s'.padStart(8)} ${'anchor s'.padStart(9)} ${'ratio'.padStart(6)}  peak RSS (ours)`)
    for (const r of rows) {
      reporter.line(`${r.step.padEnd(8)} ${r.anchor.padEnd(22)} ${fmt(r.oursS).padStart(8)} ${fmt(r.anchorS).padStart(9)} ${fmt(r.ratio).padStart(6)}  ${formatBytes(r.oursMaxRssKiB * 1024)}`)
    }
    reporter.line('ratio = ours / anchor: below 1 means ours is faster')
    reporter.line('')
    reporter.line(`artifact size: ours ${formatBytes(artifactBytes)}, pg_dump -Fc ${formatBytes(fcBytes)}, pg_dump -Z0 | zstd -3 ${formatBytes(zstdBytes)}`)
    const verifyGBps = artifactBytes / 1e9 / sec('verify:ours')
    const verifyNetGBps = artifactBytes / 1e9 / (sec('verify:ours') - sec('fixed:verify'))
    reporter.line(`verify throughput (ours): ${verifyGBps.toFixed(2)} GB/s of the artifact's bytes end to end; ${verifyNetGBps > 0 ? verifyNetGBps.toFixed(2) : '-'} GB/s net of the fixed cost of a dry run`)
    const phases = (drillDoc.phases ?? []).map((p) => ({ name: p.name, status: p.status, ms: p.ms }))
    const drillRatio = sec('drill:ours') / sec('restore:pg_restore -j2')
    reporter.line(`drill phases: ${phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(2)} s${p.status === 'ok' ? '' : ` (${p.status})`}`).join(', ') || '(none reported)'}`)
    reporter.line(`drill rtoMs ${drillDoc.rtoMs ?? '-'}; wall ${fmt(sec('drill:ours'))} s = ${fmt(drillRatio)} × plain pg_restore -j2`)
    const rowCountS = sec('rowCounts')
    const rowCountShare = rowCountS / sec('backup:ours')
    reporter.line(`row counts (${tables.length} tables, one psql): ${fmt(rowCountS)} s; row counts recorded in the manifest cost ≈ ${(rowCountShare * 100).toFixed(1)}% of a backup, run concurrently with the dump`)
    reporter.line(`fixed cost per run (one-table database, median of ${tinyRuns}): backup.sh ${fmt(sec('fixed:backup'))} s, restore.sh --dry-run ${fmt(sec('fixed:verify'))} s`)

    failed = false
    reporter.result(
      {
        database: db,
        bytes: size,
        blobs: blobRows,
        distinctBlobs,
        runs,
        results: rows,
        sizes: { artifactBytes, pgDumpFcBytes: fcBytes, pgDumpZstdBytes: zstdBytes },
        verifyGBps,
        verifyNetGBps,
        drill: { phases, rtoMs: drillDoc.rtoMs ?? null, seconds: sec('drill:ours'), ratioToPgRestoreJ2: drillRatio },
        rowCounts: { tables: tables.length, seconds: rowCountS, shareOfBackup: rowCountShare },
        fixedCost: { runs: tinyRuns, backupSeconds: sec('fixed:backup'), verifySeconds: sec('fixed:verify') },
      },
      'benchmark complete',
    )
  } finally {
    unregister()
    const left = await cleanup()
    if (left.length > 0) {
      const err = runtimeError(`could not drop ${left.join(', ')}`, `drop by hand: dropdb ${left.join('; dropdb ')}`)
      if (!failed) throw err
      reporter.warn(err.line)
    }
  }
})
