#!/usr/bin/env -S sh -c 'd="$(dirname "$(realpath "$0")")/.."; exec node --import "$d/node_modules/tsx/dist/loader.mjs" "$d/node_modules/zx/build/cli.js" "$(realpath "$0")" "$@"'
// Benchmark: backup.sh and restore.sh against the plain tools on the same data,
// reported as ratios (1.00 = as fast as the plain tool). Not part of the tests:
// timings belong here, never in an assertion. Run: npm run bench -- --help
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { $ } from 'zx'
import { parseArgs } from '../lib/cli/args.ts'
import { runCli, scriptArgs } from '../lib/cli/run.ts'
import { formatBytes } from '../lib/cli/report.ts'

const USAGE = `Usage: scripts/bench.ts [--database NAME] [--megabytes N] [--runs N] [--json]

Builds (once) a database of about N MiB (default 256) of mixed rows and
incompressible bytea, then times, median of --runs (default 3):
  backup     backup.sh with the dump   vs  pg_dump -Fc to a file
  verify     restore.sh --dry-run      vs  sha256sum of the dump
  restore    restore.sh into a new db  vs  pg_restore into a new db
and the peak memory of backup.sh, which must stay flat as the data grows.`

const here = fileURLToPath(new URL('.', import.meta.url))
const sh = $({ quiet: true, env: { ...process.env, NO_COLOR: '1' } })

interface Timed {
  seconds: number
  maxRssKiB: number
}

/** GNU time gives wall clock and peak RSS of the whole command, children included. */
async function timed(cmd: string[], env: Record<string, string> = {}): Promise<Timed> {
  const out = await sh({ env: { ...process.env, NO_COLOR: '1', ...env } })`/usr/bin/time -f '%e %M' ${cmd} 2>&1 >/dev/null | tail -n 1`
  const [seconds, rss] = out.stdout.trim().split(' ').map(Number)
  return { seconds, maxRssKiB: rss }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

async function ensureDatabase(db: string, megabytes: number): Promise<void> {
  const exists = (await sh`psql -XAtd postgres -c ${`SELECT 1 FROM pg_database WHERE datname = '${db}'`}`).stdout.trim()
  if (exists === '1') return
  await sh`psql -Xqd postgres -c ${`CREATE DATABASE "${db}"`}`
  const blobs = Math.max(1, Math.round(megabytes / 2))
  await sh`psql -Xqd ${db} -v ON_ERROR_STOP=1 -c ${`
    CREATE TABLE rows AS SELECT i AS id, md5(i::text) AS name, jsonb_build_object('i', i, 's', repeat('x', i % 50)) AS meta
      FROM generate_series(1, ${megabytes * 2000}) i;
    CREATE TABLE blobs AS SELECT i AS id, (SELECT string_agg(decode(md5(random()::text || j), 'hex'), '') FROM generate_series(1, 65536) j) AS body
      FROM generate_series(1, ${blobs}) i;`}`
}

await runCli(scriptArgs(process.argv, import.meta.url), async ({ argv, reporter }) => {
  const { flags } = parseArgs(argv, { boolean: ['json', 'help'], string: ['database', 'megabytes', 'runs'], alias: { h: 'help' } })
  if (flags.help) {
    process.stdout.write(USAGE + '\n')
    return
  }
  const db = String(flags.database ?? 'cdr_bench')
  const megabytes = Number(flags.megabytes ?? 256)
  const runs = Number(flags.runs ?? 3)
  reporter.heading(`Benchmark on database ${db} (${runs} runs each)`)
  await ensureDatabase(db, megabytes)
  const size = Number((await sh`psql -XAtd ${db} -c 'SELECT pg_database_size(current_database())'`).stdout.trim())
  reporter.line(`database size: ${formatBytes(size)}`)

  const work = await mkdtemp(join(tmpdir(), 'cdr-bench-'))
  try {
    const pg = { PGDATABASE: db, INCLUDE_POSTGRES: 'true', ENABLE_POSTGRES_DUMP: 'true' }
    const rows: Array<{ step: string; ours: number; plain: number; ratio: number; maxRssKiB: number }> = []
    const ours: Record<string, Timed[]> = { backup: [], verify: [], restore: [] }
    const plain: Record<string, Timed[]> = { backup: [], verify: [], restore: [] }
    for (let i = 0; i < runs; i++) {
      const out = join(work, `run${i}`)
      plain.backup.push(await timed(['pg_dump', '-Fc', '-f', join(work, `plain${i}.dump`), db]))
      ours.backup.push(await timed([join(here, 'backup.sh'), '--output', out, '--json'], pg))
      const artifact = (await sh`ls ${out}`).stdout.trim()
      plain.verify.push(await timed(['sha256sum', join(out, artifact, 'postgres.dump')]))
      ours.verify.push(await timed([join(here, 'restore.sh'), '--dry-run', join(out, artifact)]))
      for (const [kind, list] of [['plain', plain.restore], ['ours', ours.restore]] as const) {
        const target = `cdr_bench_restore_${kind}`
        await sh`psql -Xqd postgres -c ${`DROP DATABASE IF EXISTS "${target}"`}`
        if (kind === 'plain') {
          await sh`psql -Xqd postgres -c ${`CREATE DATABASE "${target}"`}`
          list.push(await timed(['pg_restore', '--single-transaction', '-d', target, join(out, artifact, 'postgres.dump')]))
        } else {
          list.push(await timed([join(here, 'restore.sh'), join(out, artifact)], { PGDATABASE: target, RESTORE_POSTGRES: 'true' }))
        }
        await sh`psql -Xqd postgres -c ${`DROP DATABASE IF EXISTS "${target}"`}`
      }
      await rm(out, { recursive: true, force: true })
    }
    for (const step of ['backup', 'verify', 'restore']) {
      const o = median(ours[step].map((x) => x.seconds))
      const p = median(plain[step].map((x) => x.seconds))
      const rss = Math.max(...ours[step].map((x) => x.maxRssKiB))
      rows.push({ step, ours: o, plain: p, ratio: p > 0 ? o / p : NaN, maxRssKiB: rss })
      reporter.line(`${step.padEnd(8)} ours ${o.toFixed(2)} s   plain ${p.toFixed(2)} s   ratio ${(o / p).toFixed(2)}   peak RSS ${formatBytes(rss * 1024)}`)
    }
    reporter.result({ database: db, bytes: size, runs, results: rows }, 'benchmark complete')
  } finally {
    await rm(work, { recursive: true, force: true })
  }
})
