// Roles travel with the dump, so a restore onto a bare server keeps ownership and grants.
import t from 'tap'
import { planRoles } from '../lib/postgres/roles.ts'
import { backupOf, dropDatabaseAndCopies, pgEnv, psql, RESTORE, run, scratchDatabase } from './helpers.ts'

const DUMP = `--
SET default_transaction_read_only = off;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Odd ""Name""";
ALTER ROLE "Odd ""Name""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
ALTER ROLE "Odd ""Name""" SET search_path TO 'x';
ALTER ROLE app IN DATABASE conductor SET work_mem TO '8MB';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$x';
COMMENT ON ROLE app IS 'multi
line';
GRANT "Odd ""Name""" TO app GRANTED BY postgres;
GRANT postgres TO admin WITH ADMIN OPTION GRANTED BY postgres;
`

t.test('planRoles creates only what is missing and never alters an existing role', async (t) => {
  const cases: Array<{ existing: string[]; create: string[]; statements: number }> = [
    { existing: ['postgres', 'app', 'Odd "Name"', 'admin'], create: [], statements: 0 },
    { existing: ['postgres', 'admin'], create: ['app', 'Odd "Name"'], statements: 6 },
    { existing: ['postgres', 'app', 'admin'], create: ['Odd "Name"'], statements: 4 },
    { existing: [], create: ['app', 'Odd "Name"', 'postgres'], statements: 9 },
  ]
  for (const c of cases) {
    const plan = planRoles(DUMP, new Set(c.existing))
    t.same(plan.create, c.create, `existing ${c.existing.join(',')}`)
    t.equal(plan.statements.length, c.statements, plan.statements.join('\n'))
    t.notOk(plan.statements.some((s) => /IN DATABASE|COMMENT|GRANTED BY/.test(s)), 'no per-database settings, comments or grantors')
    for (const role of c.existing) t.notOk(plan.statements.some((s) => s.startsWith(`ALTER ROLE ${role} `)), `${role} is not altered`)
  }
})

t.test('a restore onto a server that lacks the owning role creates it first', async (t) => {
  const role = `cdr_role_${process.pid}`
  t.teardown(() => psql('postgres', `DROP ROLE IF EXISTS ${role};`))
  psql('postgres', `CREATE ROLE ${role} NOLOGIN;`)
  const db = scratchDatabase(t)
  psql(db, `CREATE TABLE owned (id int); INSERT INTO owned VALUES (1), (2); ALTER TABLE owned OWNER TO ${role}; GRANT SELECT ON owned TO PUBLIC;`)
  const { path } = await backupOf(t, db)
  // The bare server: neither the database nor the role exists any more.
  dropDatabaseAndCopies(db)
  psql('postgres', `DROP ROLE ${role};`)

  const r = await run(RESTORE, [path], pgEnv(db, { RESTORE_POSTGRES: 'true' }))
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, new RegExp(`created missing roles: .*${role}`))
  t.equal(psql(db, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned';").trim(), role, 'ownership kept')
  t.equal(psql(db, 'SELECT count(*) FROM owned;').trim(), '2')
  t.equal(psql('postgres', `SELECT rolcanlogin FROM pg_roles WHERE rolname = '${role}';`).trim(), 'f', 'its attributes too')
})
