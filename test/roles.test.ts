// Roles travel with the dump, so a restore onto a bare server keeps ownership and grants.
import t from 'tap'
import { DrError } from '../lib/cli/errors.ts'
import { parseRoles, planRoles, type RoleSpec } from '../lib/postgres/roles.ts'
import { backupOf, dropDatabaseAndCopies, pgEnv, psql, RESTORE, run, scratchDatabase } from './helpers.ts'

const role = (name: string, extra: Partial<RoleSpec> = {}): RoleSpec => ({
  name,
  superuser: false,
  inherit: true,
  createrole: false,
  createdb: false,
  login: false,
  replication: false,
  bypassrls: false,
  connectionLimit: -1,
  validUntil: null,
  ...extra,
})

t.test('planRoles creates only what is missing and never alters an existing role', async (t) => {
  const doc = {
    roles: [role('app', { login: true }), role('Odd "Name"'), role('postgres', { superuser: true })],
    memberships: [
      { role: 'Odd "Name"', member: 'app', admin: false },
      { role: 'postgres', member: 'admin', admin: true },
      { role: 'app', member: 'gone', admin: false },
    ],
  }
  const cases: Array<{ existing: string[]; create: string[]; grants: number }> = [
    { existing: ['postgres', 'app', 'Odd "Name"', 'admin'], create: [], grants: 0 },
    { existing: ['postgres', 'admin'], create: ['app', 'Odd "Name"'], grants: 1 },
    { existing: ['postgres', 'app', 'admin'], create: ['Odd "Name"'], grants: 1 },
    { existing: [], create: ['app', 'Odd "Name"', 'postgres'], grants: 1 },
  ]
  for (const c of cases) {
    const plan = planRoles(doc, new Set(c.existing))
    t.same(plan.create.map((r) => r.name), c.create, `existing ${c.existing.join(',')}`)
    t.equal(plan.grants.length, c.grants, 'only memberships of new roles, between roles that will exist')
  }
})

t.test('parseRoles refuses anything that is not exactly a roles document', async (t) => {
  const good = { roles: [role('a')], memberships: [] }
  t.same(parseRoles(JSON.stringify(good)).roles[0]!.name, 'a')
  for (const v of ['infinity', '-infinity', '2030-01-01T00:00:00+00:00']) {
    t.equal(parseRoles(JSON.stringify({ roles: [role('a', { validUntil: v })], memberships: [] })).roles[0]!.validUntil, v, `validUntil ${v}`)
  }
  const bad: Array<[string, unknown]> = [
    ['not JSON', '{'],
    ['no lists', {}],
    ['a name that is not a string', { roles: [{ ...role('a'), name: 7 }], memberships: [] }],
    ['a name over 63 bytes', { roles: [role('x'.repeat(64))], memberships: [] }],
    ['a flag that is a string', { roles: [{ ...role('a'), superuser: 'true' }], memberships: [] }],
    ['a bad connection limit', { roles: [{ ...role('a'), connectionLimit: 1.5 }], memberships: [] }],
    ['a bad validUntil', { roles: [{ ...role('a'), validUntil: 'tomorrow' }], memberships: [] }],
    ['a membership without a member', { roles: [], memberships: [{ role: 'a', admin: false }] }],
  ]
  for (const [name, doc] of bad) {
    let kind = 'no error'
    try {
      parseRoles(typeof doc === 'string' ? doc : JSON.stringify(doc))
    } catch (err) {
      kind = err instanceof DrError ? err.kind : String(err)
    }
    t.equal(kind, 'verification', name)
  }
})

t.test('a restore onto a server that lacks the owning roles creates them first, names and settings are never run as SQL', async (t) => {
  const suffix = process.pid
  const owner = `cdr_role_${suffix}`
  // A name built to break SQL that is assembled from text; it must be created literally.
  const hostile = `cdr_x_${suffix}"; ALTER ROLE cdr_role_${suffix} SUPERUSER; --`
  t.teardown(() => psql('postgres', `DROP ROLE IF EXISTS ${owner}; DROP ROLE IF EXISTS "${hostile.replace(/"/g, '""')}";`))
  psql('postgres', `CREATE ROLE ${owner} NOLOGIN CONNECTION LIMIT 3 VALID UNTIL 'infinity'; CREATE ROLE "${hostile.replace(/"/g, '""')}" NOLOGIN VALID UNTIL '2030-01-01 00:00:00+00'; GRANT ${owner} TO "${hostile.replace(/"/g, '""')}";`)
  // A role setting that spans lines and holds SQL: not carried, and never executed.
  psql('postgres', `ALTER ROLE ${owner} SET application_name = E'a\\n; ALTER ROLE ${owner} WITH SUPERUSER; SELECT ''';`)
  const db = scratchDatabase(t)
  psql(db, `CREATE TABLE owned (id int); INSERT INTO owned VALUES (1), (2); ALTER TABLE owned OWNER TO ${owner}; GRANT SELECT ON owned TO PUBLIC;`)
  const { path } = await backupOf(t, db)
  // The bare server: neither the database nor the roles exist any more.
  dropDatabaseAndCopies(db)
  psql('postgres', `DROP ROLE "${hostile.replace(/"/g, '""')}"; DROP ROLE ${owner};`)

  const r = await run(RESTORE, [path], pgEnv(db, { RESTORE_POSTGRES: 'true' }))
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`created missing roles: .*${owner}`))
  t.equal(psql(db, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned';").trim(), owner, 'ownership kept')
  t.equal(psql(db, 'SELECT count(*) FROM owned;').trim(), '2')
  t.equal(psql('postgres', `SELECT rolcanlogin || ' ' || rolconnlimit || ' ' || rolsuper FROM pg_roles WHERE rolname = '${owner}';`).trim(), 'false 3 false', 'attributes as recorded, and not superuser')
  t.equal(psql('postgres', `SELECT count(*) FROM pg_roles WHERE rolname = '${hostile.replace(/'/g, "''")}';`).trim(), '1', 'the hostile name was created literally')
  t.equal(psql('postgres', `SELECT rolvaliduntil FROM pg_roles WHERE rolname = '${owner}';`).trim(), 'infinity', "VALID UNTIL 'infinity' kept")
  t.equal(psql('postgres', `SELECT rolvaliduntil AT TIME ZONE 'UTC' FROM pg_roles WHERE rolname = '${hostile.replace(/'/g, "''")}';`).trim(), '2030-01-01 00:00:00', 'VALID UNTIL a date kept')
  t.equal(
    psql('postgres', `SELECT count(*) FROM pg_auth_members WHERE roleid = '${owner}'::regrole AND member = (SELECT oid FROM pg_roles WHERE rolname = '${hostile.replace(/'/g, "''")}');`).trim(),
    '1',
    'membership restored',
  )
})
