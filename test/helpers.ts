import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Test } from 'tap'
import type { Reporter } from '../lib/cli/report.ts'
import { manifestSumLine, serializeManifest, type Manifest } from '../lib/artifact/manifest.ts'
import { artifactName, MANIFEST_FILE, MANIFEST_SUM_FILE, POSTGRES_DUMP_ZST_FILE } from '../lib/artifact/naming.ts'

export const REPO = fileURLToPath(new URL('..', import.meta.url))
export const BACKUP = join(REPO, 'scripts', 'backup.sh')
export const RESTORE = join(REPO, 'scripts', 'restore.sh')

/**
 * The tool's own switches are scrubbed so that the caller's shell cannot
 * leak into a test. The server's libpq variables (PGHOST, PGPORT, PGUSER,
 * PGPASSWORD) are kept: they say where the test server is, and unset they
 * mean the local socket. Each test picks its own PGDATABASE.
 */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' }
  for (const name of [
    'INCLUDE_POSTGRES',
    'ENABLE_POSTGRES_DUMP',
    'RESTORE_POSTGRES',
    'BACKUP_BASE',
    'DATABASE_URL',
    'PGDATABASE',
    'DRILL_DATABASE',
    'DR_RPO_TARGET',
    'DR_RTO_TARGET',
    'FORCE_COLOR',
  ]) {
    delete env[name]
  }
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k]
    else env[k] = v
  }
  return env
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function collect(child: ChildProcess): Promise<RunResult> {
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

/** Runs a script as an operator would: a real process, from the repo root. */
export function run(script: string, args: string[], env: NodeJS.ProcessEnv = cleanEnv()): Promise<RunResult> {
  return collect(spawn(script, args, { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] }))
}

/** Runs one line of shell exactly as a runbook would. */
export function sh(line: string, env: NodeJS.ProcessEnv = cleanEnv()): Promise<RunResult> {
  return collect(spawn('bash', ['-c', line], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] }))
}

/**
 * A PATH on which `tool` is a shell script around the real one: `script`
 * runs with $REAL set to the real tool's path, so a test can delay it,
 * fail it or act between two of its calls. Returns the PATH to pass on.
 */
export function pathWithWrapped(t: Test, tool: string, script: string): string {
  const bin = join(tempDir(t), 'bin')
  mkdirSync(bin)
  const real = execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim()
  writeFileSync(join(bin, tool), `#!/bin/sh\nREAL='${real}'\n${script}\n`)
  chmodSync(join(bin, tool), 0o755)
  return `${bin}:${process.env.PATH}`
}

export function tempDir(t: Test, prefix = 'cdr-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export function psql(database: string, sql: string): string {
  return execFileSync('psql', ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', database], {
    input: sql,
    encoding: 'utf8',
    env: cleanEnv(),
  })
}

export function dropDatabase(name: string): void {
  psql('postgres', `DROP DATABASE IF EXISTS "${name}" WITH (FORCE);`)
}

/** The database and what restores and drills derived from it (`<name>_pre_restore_…`, `_restoring_`, `_drill_`). */
export function dropDatabaseAndCopies(name: string): void {
  const copies = psql('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${name}\\_%';`).split('\n').filter(Boolean)
  for (const db of [name, ...copies]) dropDatabase(db)
}

export function databaseExists(name: string): boolean {
  return psql('postgres', `SELECT count(*) FROM pg_database WHERE datname = '${name}';`).trim() === '1'
}

/** host:port of the test server as a URL authority, from the libpq variables (127.0.0.1:5432 when unset). */
export function serverAuthority(): string {
  const host = process.env.PGHOST && !process.env.PGHOST.startsWith('/') ? process.env.PGHOST : '127.0.0.1'
  return `${host.includes(':') ? `[${host}]` : host}:${process.env.PGPORT || '5432'}`
}

let counter = 0
/** A database of its own per test, dropped afterwards even if the test fails. */
export function scratchDatabase(t: Test): string {
  const name = `cdr_test_${process.pid}_${Date.now().toString(36)}_${counter++}`
  psql('postgres', `CREATE DATABASE "${name}";`)
  t.teardown(() => dropDatabaseAndCopies(name))
  return name
}

/**
 * Data chosen to break naive dumps: bytea with every byte value, jsonb with
 * nesting and unicode, multi-script text, NULLs in every nullable column,
 * timestamps with time zones, numerics beyond float precision.
 */
export function fillDatabase(database: string, rows = 3000): void {
  psql(
    database,
    `
    CREATE TABLE customers (
      id bigserial PRIMARY KEY,
      name text NOT NULL,
      email text,
      balance numeric(30, 10),
      created timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE documents (
      id serial PRIMARY KEY,
      customer_id bigint REFERENCES customers(id),
      body bytea,
      meta jsonb
    );
    CREATE TABLE events (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      kind text NOT NULL,
      payload jsonb,
      tags text[],
      at timestamptz
    );
    CREATE INDEX events_kind ON events(kind);
    CREATE VIEW rich_customers AS SELECT id, name FROM customers WHERE balance > 1000;

    INSERT INTO customers (name, email, balance, created)
    SELECT
      (ARRAY['Zoë', 'Łukasz', '山田太郎', 'O''Brien', 'مرحبا', 'tab\there', E'new\\nline', '🙂 emoji'])[1 + i % 8] || ' #' || i,
      CASE WHEN i % 7 = 0 THEN NULL ELSE 'user' || i || '@example.com' END,
      CASE WHEN i % 11 = 0 THEN NULL ELSE (i * 12345.6789012345)::numeric(30, 10) END,
      timestamptz '2024-03-15 12:00:00+00' + i * interval '1 minute'
    FROM generate_series(1, ${rows}) AS i;

    INSERT INTO documents (customer_id, body, meta)
    SELECT
      1 + i % ${rows},
      CASE WHEN i % 13 = 0 THEN NULL ELSE decode(repeat(lpad(to_hex(i % 256), 2, '0'), 1 + i % 300), 'hex') || '\\x00ff0a0d5c27'::bytea END,
      CASE WHEN i % 5 = 0 THEN NULL ELSE jsonb_build_object('i', i, 'nested', jsonb_build_object('ü', ARRAY[i, i * 2]), 'quote', 'it''s "q"') END
    FROM generate_series(1, ${rows}) AS i;

    INSERT INTO events (id, kind, payload, tags, at)
    SELECT
      md5(i::text)::uuid,
      (ARRAY['login', 'logout', 'purchase'])[1 + i % 3],
      CASE WHEN i % 4 = 0 THEN 'null'::jsonb ELSE jsonb_build_array(i, 'ß', NULL) END,
      CASE WHEN i % 6 = 0 THEN NULL ELSE ARRAY['a' || i, 'b,c', 'd"e'] END,
      CASE WHEN i % 9 = 0 THEN NULL ELSE timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second' END
    FROM generate_series(1, ${rows}) AS i;
    `,
  )
}

/** Every row of every table, in a stable order, as PostgreSQL's own text form. */
export function snapshot(database: string): Record<string, string> {
  const tables = psql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;")
    .trim()
    .split('\n')
    .filter(Boolean)
  const out: Record<string, string> = {}
  for (const table of tables) {
    out[table] = execFileSync(
      'psql',
      ['-X', '-q', '-d', database, '-c', `COPY (SELECT * FROM "${table}" ORDER BY 1) TO STDOUT`],
      { encoding: 'utf8', env: cleanEnv(), maxBuffer: 256 * 1024 * 1024 },
    )
  }
  out['sequence:customers_id_seq'] = psql(database, 'SELECT last_value FROM customers_id_seq;')
  out['view:rich_customers'] = psql(database, 'SELECT count(*) FROM rich_customers;')
  return out
}

/** Names in a backup directory that look like finished artifacts. */
export function completeArtifacts(dir: string): string[] {
  return readdirSync(dir).filter((n) => /^conductor-backup-\d{8}T\d{6}Z$/.test(n))
}

export function pgEnv(database: string, extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cleanEnv({ PGDATABASE: database, ...extra })
}

export const DUMP_ENABLED = { INCLUDE_POSTGRES: 'true', ENABLE_POSTGRES_DUMP: 'true' }

/** A real backup of `db`, with the dump, into a fresh directory. */
export async function backupOf(t: Test, db: string): Promise<{ base: string; name: string; path: string }> {
  const base = tempDir(t)
  const r = await run(BACKUP, ['--output', base], pgEnv(db, DUMP_ENABLED))
  t.equal(r.code, 0, r.stderr)
  const [name] = completeArtifacts(base)
  t.ok(name, 'backup produced an artifact')
  return { base, name, path: join(base, name) }
}

/**
 * A database, backed up, then changed: what a restore would replace. `before`
 * is its content after the change, which a failed or interrupted restore
 * must leave exactly as it is.
 */
export async function changedSinceBackup(t: Test, rows: number): Promise<{ db: string; path: string; before: Record<string, string> }> {
  const db = scratchDatabase(t)
  fillDatabase(db, rows)
  const { path } = await backupOf(t, db)
  psql(db, "UPDATE customers SET name = 'current';")
  return { db, path, before: snapshot(db) }
}

// ---------------------------------------------------------------------------
// Application files and encryption (test/files.test.ts, test/encryption.test.ts)
// (Import declarations are hoisted: these sit here to keep the additions in one block.)
import { createHash } from 'node:crypto'
import { existsSync, lstatSync, readFileSync, readlinkSync } from 'node:fs'
import { basename, dirname } from 'node:path'

/** cleanEnv, also scrubbing the files and encryption switches so the caller's shell cannot leak into a test. */
export function filesEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cleanEnv({
    BACKUP_PATHS: undefined,
    RESTORE_FILES: undefined,
    BACKUP_AGE_RECIPIENTS: undefined,
    BACKUP_AGE_RECIPIENTS_FILE: undefined,
    BACKUP_AGE_IDENTITY_FILE: undefined,
    BACKUP_ENCRYPTION: undefined,
    BACKUP_ROLE_PASSWORDS: undefined,
    ...extra,
  })
}

export const sha256Hex = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

/**
 * Everything observable about a tree, keyed by path relative to `dir`
 * ('.' is `dir` itself unless `withRoot` is false): type, permission bits,
 * owner, mtime to the nanosecond, size and SHA-256 of files, link targets,
 * and for files with several links the sorted set of paths sharing the inode.
 * Directory sizes are left out (they depend on the file system's history).
 */
export function treeState(dir: string, opts: { withRoot?: boolean; skip?: (rel: string) => boolean } = {}): Record<string, string> {
  const out: Record<string, string> = {}
  const inodes = new Map<bigint, string[]>()
  const visit = (abs: string, rel: string) => {
    const st = lstatSync(abs, { bigint: true })
    const common = `mode=${(Number(st.mode) & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid} mtime=${st.mtimeNs}`
    if (st.isSymbolicLink()) out[rel] = `symlink -> ${readlinkSync(abs)} mtime=${st.mtimeNs} uid=${st.uid} gid=${st.gid}`
    else if (st.isDirectory()) {
      out[rel] = `dir ${common}`
      for (const name of readdirSync(abs).sort()) {
        const childRel = rel === '.' ? name : `${rel}/${name}`
        if (opts.skip?.(childRel)) continue
        visit(join(abs, name), childRel)
      }
    } else if (st.isFile()) {
      out[rel] = `file ${common} size=${st.size} sha256=${sha256Hex(readFileSync(abs))}`
      if (st.nlink > 1n) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), rel])
    } else out[rel] = `special ${common}`
  }
  if (opts.withRoot === false) {
    for (const name of readdirSync(dir).sort()) {
      if (!opts.skip?.(name)) visit(join(dir, name), name)
    }
  } else visit(dir, '.')
  for (const paths of inodes.values()) {
    for (const p of paths) out[p] += ` links=${JSON.stringify([...paths].sort())}`
  }
  return out
}

/** Flips bit 0 of the byte at `offset` (default: the middle) of a file, in place. */
export function flipByte(path: string, offset?: number): void {
  const data = readFileSync(path)
  const at = offset ?? Math.floor(data.length / 2)
  data[at] = data[at]! ^ 0x01
  writeFileSync(path, data)
}

/**
 * Rewrites an artifact's manifest as a forger would: `edit` may change it,
 * then every files[] size and SHA-256 is recomputed from what is on disk and
 * manifest.json.sha256 is rewritten, so every checksum matches again.
 */
export function resealArtifact(artifact: string, edit: (manifest: any) => void = () => {}): void {
  const manifest = JSON.parse(readFileSync(join(artifact, 'manifest.json'), 'utf8'))
  edit(manifest)
  for (const f of manifest.files as Array<{ path: string; size: number; sha256: string }>) {
    const data = readFileSync(join(artifact, f.path))
    f.size = data.length
    f.sha256 = sha256Hex(data)
  }
  const text = JSON.stringify(manifest, null, 2) + '\n'
  writeFileSync(join(artifact, 'manifest.json'), text)
  writeFileSync(join(artifact, 'manifest.json.sha256'), `${sha256Hex(text)}  manifest.json\n`)
}

/** A fresh age key pair from age-keygen: the identity file and its public key. */
export function ageKey(t: Test): { identity: string; recipient: string } {
  const identity = join(tempDir(t, 'cdr-age-'), 'identity.txt')
  execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' })
  const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim()
  return { identity, recipient }
}

/** Names beside `path` that a files restore leaves: `.NAME.restoring-*` staging and `NAME.pre-restore-*` kept copies. */
export function restoreLeftovers(path: string): { staging: string[]; keptAside: string[] } {
  const parent = dirname(path)
  const name = basename(path)
  const names = existsSync(parent) ? readdirSync(parent) : []
  return {
    staging: names.filter((n) => n.startsWith(`.${name}.restoring-`)).map((n) => join(parent, n)),
    keptAside: names.filter((n) => n.startsWith(`${name}.pre-restore-`)).map((n) => join(parent, n)),
  }
}

/**
 * The files of a minimal complete artifact, in the format test/prune.test.ts
 * writes locally (formatVersion 2; with `database`, a small dump listed in
 * the manifest, which listing never hashes): file name to bytes.
 */
export function syntheticArtifact(when: Date, database?: string): { name: string; files: Record<string, string> } {
  const name = artifactName(when)
  const dump = 'not really a dump'
  const manifest: Manifest = {
    format: 'conductor-backup-manifest',
    formatVersion: 2,
    tool: { name: 'conductor-dr', version: 'test' },
    artifact: name,
    createdAt: when.toISOString(),
    completedAt: new Date(when.getTime() + 1000).toISOString(),
    hostname: 'test',
    postgres: database
      ? {
          status: 'dumped',
          file: POSTGRES_DUMP_ZST_FILE,
          format: 'custom',
          compression: 'zstd',
          database,
          encoding: 'UTF8',
          collate: 'C',
          ctype: 'C',
          serverVersion: '16.0',
          pgDumpVersion: '16.0',
        }
      : { status: 'skipped', reason: 'test artifact' },
    files: database ? [{ path: POSTGRES_DUMP_ZST_FILE, size: dump.length, sha256: sha256Of(dump) }] : [],
  }
  const text = serializeManifest(manifest)
  const files: Record<string, string> = {}
  if (database) files[POSTGRES_DUMP_ZST_FILE] = dump
  files[MANIFEST_SUM_FILE] = manifestSumLine(sha256Of(text))
  files[MANIFEST_FILE] = text // last, as a backup publishes
  return { name, files }
}

const sha256Of = (text: string) => createHash('sha256').update(text).digest('hex')

/** A silent reporter for in-process calls: the tests look at the result (or collect the lines they need). */
export const quiet: Reporter = {
  json: true,
  line: () => {},
  heading: () => {},
  warn: () => {},
  progress: () => {},
  endProgress: () => {},
  result: () => {},
  failure: () => {},
}
