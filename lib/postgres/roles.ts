import { isPgIdentifier } from './identifier.ts'
import { randomBytes } from 'node:crypto'
import { verificationError } from '../cli/errors.ts'
import { psql } from './client.ts'
import { withDatabase, type PgConnection } from './connection.ts'

/** One role as recorded in the artifact: attributes only, never replayed as SQL text. */
export interface RoleSpec {
  name: string
  superuser: boolean
  inherit: boolean
  createrole: boolean
  createdb: boolean
  login: boolean
  replication: boolean
  bypassrls: boolean
  connectionLimit: number
  validUntil: string | null
  /** The stored hash (SCRAM or md5), only with BACKUP_ROLE_PASSWORDS=true. */
  password?: string | null
}

export interface Membership {
  role: string
  member: string
  admin: boolean
}

export interface RolesDoc {
  roles: RoleSpec[]
  memberships: Membership[]
}

/**
 * The cluster's roles and memberships, read from the catalogs as JSON
 * (roles.json). Structured data, not pg_dumpall's SQL: a restore builds
 * every statement itself with format('%I', …), so nothing a role owner
 * put in a name or a setting can turn into SQL. Password hashes only when
 * asked for (a backup is then a credential store; reading them needs a
 * superuser). Role settings (ALTER ROLE … SET) are not carried.
 */
export async function dumpRoles(conn: PgConnection, withPasswords: boolean): Promise<string> {
  const out = await psql(
    conn,
    `SELECT json_build_object(
       'roles', coalesce((SELECT json_agg(json_build_object(
           'name', r.rolname, 'superuser', r.rolsuper, 'inherit', r.rolinherit, 'createrole', r.rolcreaterole,
           'createdb', r.rolcreatedb, 'login', r.rolcanlogin, 'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
           'connectionLimit', r.rolconnlimit, 'validUntil', r.rolvaliduntil${withPasswords ? ", 'password', a.rolpassword" : ''}) ORDER BY r.rolname)
         FROM pg_roles r${withPasswords ? ' JOIN pg_authid a ON a.oid = r.oid' : ''} WHERE r.rolname !~ '^pg_'), '[]'::json),
       'memberships', coalesce((SELECT json_agg(json_build_object('role', pg_get_userbyid(m.roleid), 'member', pg_get_userbyid(m.member), 'admin', m.admin_option))
         FROM pg_auth_members m), '[]'::json));\n`,
    {},
    withPasswords ? 'reading the roles with their password hashes (needs a superuser)' : 'reading the roles',
  )
  return JSON.stringify(JSON.parse(out), null, 1) + '\n'
}

const bad = (what: string) => verificationError(`roles.json is malformed: ${what}`, 'the artifact is damaged; use another backup')
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const name = (v: unknown, what: string) => {
  if (!isPgIdentifier(v)) throw bad(`${what} must be a role name`)
  return v
}
const bool = (v: unknown, what: string) => {
  if (typeof v !== 'boolean') throw bad(`${what} must be true or false`)
  return v
}

/** rolvaliduntil as PostgreSQL writes it to JSON: a time, or (-)infinity (`VALID UNTIL 'infinity'`, a common idiom). */
const isValidUntil = (v: unknown): boolean => typeof v === 'string' && (v === 'infinity' || v === '-infinity' || !Number.isNaN(Date.parse(v)))

/** Strict reading of roles.json: every field typed, or the restore stops before touching anything. */
export function parseRoles(text: string): RolesDoc {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw bad('not valid JSON')
  }
  if (!isObj(raw) || !Array.isArray(raw.roles) || !Array.isArray(raw.memberships)) throw bad('roles and memberships must be lists')
  const roles = raw.roles.map((r, i): RoleSpec => {
    if (!isObj(r)) throw bad(`roles[${i}] must be an object`)
    const limit = r.connectionLimit
    if (!Number.isSafeInteger(limit) || (limit as number) < -1) throw bad(`roles[${i}].connectionLimit must be a whole number`)
    if (r.validUntil !== null && !isValidUntil(r.validUntil)) throw bad(`roles[${i}].validUntil must be a time, infinity or null`)
    if (r.password !== undefined && r.password !== null && typeof r.password !== 'string') throw bad(`roles[${i}].password must be a string`)
    return {
      name: name(r.name, `roles[${i}].name`),
      superuser: bool(r.superuser, `roles[${i}].superuser`),
      inherit: bool(r.inherit, `roles[${i}].inherit`),
      createrole: bool(r.createrole, `roles[${i}].createrole`),
      createdb: bool(r.createdb, `roles[${i}].createdb`),
      login: bool(r.login, `roles[${i}].login`),
      replication: bool(r.replication, `roles[${i}].replication`),
      bypassrls: bool(r.bypassrls, `roles[${i}].bypassrls`),
      connectionLimit: limit as number,
      validUntil: r.validUntil as string | null,
      ...(typeof r.password === 'string' ? { password: r.password } : {}),
    }
  })
  const memberships = raw.memberships.map((m, i): Membership => {
    if (!isObj(m)) throw bad(`memberships[${i}] must be an object`)
    return { role: name(m.role, `memberships[${i}].role`), member: name(m.member, `memberships[${i}].member`), admin: bool(m.admin, `memberships[${i}].admin`) }
  })
  return { roles, memberships }
}

export interface RolePlan {
  /** Roles the artifact has and the server lacks. */
  create: RoleSpec[]
  /** Memberships that involve a role created now, between roles that will exist. */
  grants: Membership[]
}

/** Existing roles are never altered: a restore must not change a password or privilege someone set on purpose. */
export function planRoles(doc: RolesDoc, existing: ReadonlySet<string>): RolePlan {
  const create = doc.roles.filter((r) => !existing.has(r.name))
  const fresh = new Set(create.map((r) => r.name))
  const after = new Set([...existing, ...fresh])
  const grants = doc.memberships.filter((m) => (fresh.has(m.role) || fresh.has(m.member)) && after.has(m.role) && after.has(m.member))
  return { create, grants }
}

export async function existingRoles(conn: PgConnection): Promise<Set<string>> {
  const out = await psql(withDatabase(conn, 'postgres'), "SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles;\n", {}, 'listing roles')
  return new Set(JSON.parse(out) as string[])
}

/** A dollar-quote tag that does not occur in `text`, so the JSON goes in as one literal whatever it holds. */
function dollarQuote(text: string): string {
  for (;;) {
    const tag = `$cdr_${randomBytes(6).toString('hex')}$`
    if (!text.includes(tag)) return `${tag}${text}${tag}`
  }
}

/**
 * Runs a plan in one transaction: every missing role is created, or none.
 * The statements are built by the server with format('%I'/'%L') from the
 * plan's JSON, sent on stdin (password hashes never reach argv).
 */
export async function createRoles(conn: PgConnection, plan: RolePlan): Promise<void> {
  if (plan.create.length === 0) return
  const flag = (key: keyof RoleSpec, yes: string) => `CASE WHEN (r->>'${key}')::boolean THEN '${yes}' ELSE 'NO${yes}' END`
  await psql(
    withDatabase(conn, 'postgres'),
    `BEGIN;
SELECT format('CREATE ROLE %I WITH %s %s %s %s %s %s %s CONNECTION LIMIT %s%s%s', r->>'name',
              ${flag('superuser', 'SUPERUSER')}, ${flag('inherit', 'INHERIT')}, ${flag('createrole', 'CREATEROLE')},
              ${flag('createdb', 'CREATEDB')}, ${flag('login', 'LOGIN')}, ${flag('replication', 'REPLICATION')},
              ${flag('bypassrls', 'BYPASSRLS')}, (r->>'connectionLimit')::int,
              CASE WHEN r->>'validUntil' IS NULL THEN '' ELSE format(' VALID UNTIL %L', r->>'validUntil') END,
              CASE WHEN r->>'password' IS NULL THEN '' ELSE format(' PASSWORD %L', r->>'password') END)
  FROM json_array_elements(${dollarQuote(JSON.stringify(plan.create))}::json) AS r
\\gexec
SELECT format('GRANT %I TO %I%s', m->>'role', m->>'member', CASE WHEN (m->>'admin')::boolean THEN ' WITH ADMIN OPTION' ELSE '' END)
  FROM json_array_elements(${dollarQuote(JSON.stringify(plan.grants))}::json) AS m
\\gexec
COMMIT;
`,
    {},
    'creating the missing roles',
  )
}
