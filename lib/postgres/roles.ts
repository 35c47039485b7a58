import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { fsyncFile } from '../artifact/durable.ts'
import { DigestStream, type Digest } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { CONNECT_FIX, failed, notFound, psql } from './client.ts'
import { withDatabase, type PgConnection } from './connection.ts'

/**
 * The cluster's roles, as `pg_dumpall --roles-only` writes them: without
 * password hashes unless asked for (a backup is then a credential store),
 * which also lets a non-superuser take it.
 */
export async function dumpRoles(conn: PgConnection, dest: string, withPasswords: boolean): Promise<Digest> {
  const args = ['--roles-only', '--no-password', ...(withPasswords ? [] : ['--no-role-passwords'])]
  const dump = spawnTool('pg_dumpall', args, { env: conn.env, stdin: 'ignore', stdout: 'pipe', missing: notFound('pg_dumpall') })
  const digester = new DigestStream()
  const [exitCode] = await Promise.all([dump.exited, pipeline(dump.stdout!, digester, createWriteStream(dest, { flags: 'wx', mode: 0o600 }))])
  if (exitCode !== 0) throw failed(conn, 'pg_dumpall --roles-only', { exitCode, stderr: dump.stderr() }, CONNECT_FIX)
  await fsyncFile(dest)
  return digester.digest()
}

// quote_ident output: a plain lower-case name, or a double-quoted one with "" for a quote.
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)`
const CREATE_RE = new RegExp(`^CREATE ROLE (${IDENT});$`)
const ALTER_RE = new RegExp(`^ALTER ROLE (${IDENT}) (?:WITH |SET )`)
const GRANT_RE = new RegExp(`^GRANT (${IDENT}) TO (${IDENT})((?: WITH (?:ADMIN|INHERIT|SET) (?:OPTION|TRUE|FALSE))*)(?: GRANTED BY ${IDENT})?;$`)

const unquote = (ident: string) => (ident.startsWith('"') ? ident.slice(1, -1).replace(/""/g, '"') : ident)

export interface RolePlan {
  /** Roles in the dump that the server lacks, in dump order. */
  create: string[]
  /** The statements that create exactly those roles, their attributes and settings, and memberships that involve them. */
  statements: string[]
}

/**
 * Which statements of a roles dump to run on a server that already has
 * `existing`. Existing roles are never altered: a restore must not change
 * a password or privilege someone set on purpose. Per-database role
 * settings (`IN DATABASE`) and comments are left out: the database may not
 * exist yet, and a comment can span lines.
 */
export function planRoles(sql: string, existing: ReadonlySet<string>): RolePlan {
  const lines = sql.split('\n')
  const create: string[] = []
  for (const line of lines) {
    const m = CREATE_RE.exec(line)
    if (m && !existing.has(unquote(m[1]!))) create.push(unquote(m[1]!))
  }
  const fresh = new Set(create)
  const statements: string[] = []
  for (const line of lines) {
    const c = CREATE_RE.exec(line)
    if (c) {
      if (fresh.has(unquote(c[1]!))) statements.push(line)
      continue
    }
    const a = ALTER_RE.exec(line)
    if (a) {
      if (fresh.has(unquote(a[1]!))) statements.push(line)
      continue
    }
    const g = GRANT_RE.exec(line)
    if (g && (fresh.has(unquote(g[1]!)) || fresh.has(unquote(g[2]!)))) {
      // The grantor may not exist here; the restoring role grants instead.
      statements.push(`GRANT ${g[1]} TO ${g[2]}${g[3] ?? ''};`)
    }
  }
  return { create, statements }
}

export async function existingRoles(conn: PgConnection): Promise<Set<string>> {
  const out = await psql(withDatabase(conn, 'postgres'), 'SELECT json_agg(rolname) FROM pg_roles;\n', {}, 'listing roles')
  return new Set(JSON.parse(out) as string[])
}

/** Runs a plan in one transaction: either every missing role is created, or none. */
export async function createRoles(conn: PgConnection, plan: RolePlan): Promise<void> {
  if (plan.statements.length === 0) return
  await psql(withDatabase(conn, 'postgres'), `BEGIN;\n${plan.statements.join('\n')}\nCOMMIT;\n`, {}, 'creating the missing roles')
}
