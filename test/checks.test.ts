// Checks after a restore, against the real server: row counts, and the operator's sql, cmd and url checks.
import t from 'tap'
import { createServer, type Server } from 'node:http'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { DrError } from '../lib/cli/errors.ts'
import { runCleanups } from '../lib/cli/signals.ts'
import { connectionFromEnv, withDatabase, type PgConnection } from '../lib/postgres/connection.ts'
import { checkRowCounts, databaseUrlWithoutPassword, runOperatorChecks, validateCheckSpec, type CheckSpec } from '../lib/checks/index.ts'
import { cleanEnv, fillDatabase, psql, scratchDatabase, tempDir } from './helpers.ts'

const PASSWORD = 'hunter2-secret-pw'

function connTo(db: string, extra: Record<string, string> = {}): PgConnection {
  return withDatabase(connectionFromEnv(cleanEnv({ PGDATABASE: 'postgres', ...extra })), db)
}

const spec = (s: Partial<CheckSpec>): CheckSpec => ({ sql: [], cmd: [], url: [], timeoutMs: 10_000, ...s })

/** Alive and not a zombie (an orphan's exit may wait to be reaped by a lazy init). */
/** Gone within a grace period: a signal is delivered at once, but a loaded machine may take a moment to end the process. */
async function goneSoon(pid: number, ms = 3000): Promise<boolean> {
  const until = Date.now() + ms
  while (running(pid)) {
    if (Date.now() > until) return false
    await new Promise((r) => setTimeout(r, 50))
  }
  return true
}

function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

const errorOf = (fn: () => unknown): DrError | undefined => {
  try {
    fn()
  } catch (err) {
    if (err instanceof DrError) return err
    throw err
  }
  return undefined
}

t.test('row counts', async (t) => {
  const db = scratchDatabase(t)
  fillDatabase(db, 50)
  const conn = connTo(db)
  const expected = [
    { schema: 'public', table: 'customers', rows: 50 },
    { schema: 'public', table: 'documents', rows: 50 },
    { schema: 'public', table: 'events', rows: 50 },
  ]

  const ok = await checkRowCounts(conn, expected)
  t.equal(ok.ok, true, ok.detail)
  t.equal(ok.kind, 'row-counts')
  t.equal(ok.name, 'row counts')
  t.type(ok.durationMs, 'number')

  psql(db, 'DELETE FROM documents WHERE id = 7;')
  const deleted = await checkRowCounts(conn, expected)
  t.equal(deleted.ok, false)
  t.match(deleted.detail, 'public.documents: 49 rows, expected 50')
  t.notMatch(deleted.detail, 'customers')

  psql(db, 'DROP TABLE events;')
  const dropped = await checkRowCounts(conn, expected)
  t.equal(dropped.ok, false)
  t.match(dropped.detail, 'public.events: missing, expected 50 rows')
  t.match(dropped.detail, '2 of 3 tables')

  const noSchema = await checkRowCounts(conn, [{ schema: 'nosuch', table: 'x', rows: 0 }])
  t.equal(noSchema.ok, false, 'a missing schema is a missing table, not a crash')
  t.match(noSchema.detail, 'nosuch.x: missing')

  const old = await checkRowCounts(conn, [])
  t.same({ ok: old.ok, detail: old.detail }, { ok: true, detail: 'no row counts recorded in this artifact' })
})

t.test('row counts: names with quotes, spaces and unicode', async (t) => {
  const db = scratchDatabase(t)
  psql(
    db,
    `CREATE SCHEMA "we""ird sch'ema";
     CREATE TABLE "we""ird sch'ema"."Ta ble ""q"" 'x'" (id int);
     INSERT INTO "we""ird sch'ema"."Ta ble ""q"" 'x'" SELECT generate_series(1, 4);
     CREATE TABLE "Zoë 山田; DROP TABLE x; --" (id int);
     INSERT INTO "Zoë 山田; DROP TABLE x; --" VALUES (1), (2);`,
  )
  const conn = connTo(db)
  const expected = [
    { schema: `we"ird sch'ema`, table: `Ta ble "q" 'x'`, rows: 4 },
    { schema: 'public', table: 'Zoë 山田; DROP TABLE x; --', rows: 2 },
  ]
  const ok = await checkRowCounts(conn, expected)
  t.equal(ok.ok, true, ok.detail)
  const wrong = await checkRowCounts(conn, [{ ...expected[1]!, rows: 3 }])
  t.equal(wrong.ok, false)
  t.match(wrong.detail, 'public.Zoë 山田; DROP TABLE x; --: 2 rows, expected 3')
})

t.test('sql checks', async (t) => {
  const db = scratchDatabase(t)
  psql(db, 'CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3);')
  const conn = connTo(db)
  const dir = tempDir(t)
  const file = (name: string, text: string) => {
    const path = join(dir, name)
    writeFileSync(path, text)
    return path
  }
  const pass = file('pass.sql', "SELECT true;\nSELECT count(*) = 3 FROM t;\nSET search_path = public;\nSELECT 1 WHERE false;\nSELECT 't'::text;\n")
  const falsy = file('false.sql', 'SELECT true;\nSELECT count(*) = 4 FROM t;\n')
  const syntax = file('syntax.sql', 'SELEC true;\n')
  const number = file('number.sql', 'SELECT count(*) FROM t;\n')
  const nul = file('null.sql', 'SELECT NULL::boolean;\n')
  const twoCols = file('two.sql', 'SELECT true, true;\n')
  const multiline = file('multi.sql', "SELECT E't\\nt';\n")
  const many = file('many.sql', 'SELECT true FROM generate_series(1, 100000);\nSELECT false;\n')

  const results = await runOperatorChecks(spec({ sql: [pass, falsy, syntax, number, nul, twoCols, multiline, many] }), conn)
  const [okR, falseR, syntaxR, numberR, nullR, twoR, multiR, manyR] = results
  t.equal(okR!.ok, true, okR!.detail)
  t.equal(okR!.kind, 'sql')
  t.equal(okR!.name, `sql:${pass}`)
  t.match(okR!.detail, '3 of 3 rows true')
  t.equal(falseR!.ok, false)
  t.match(falseR!.detail, "row 2 is 'f'")
  t.equal(syntaxR!.ok, false)
  t.match(syntaxR!.detail, /ERROR: +syntax error at or near "SELEC"/)
  t.equal(numberR!.ok, false)
  t.match(numberR!.detail, "row 1 is '3'")
  t.equal(nullR!.ok, false)
  t.match(nullR!.detail, 'NULL')
  t.equal(twoR!.ok, false)
  t.match(twoR!.detail, "'t|t'")
  t.equal(multiR!.ok, false, 'a value with a newline is one row, not two rows of t')
  t.equal(manyR!.ok, false)
  t.match(manyR!.detail, 'row 100001')

  const empty = file('empty.sql', '-- nothing to check yet\n')
  const [emptyR] = await runOperatorChecks(spec({ sql: [empty] }), conn)
  t.equal(emptyR!.ok, true, 'a file that returns no rows passes')

  const slow = file('slow.sql', 'SELECT pg_sleep(30) IS NOT NULL;\n')
  const started = Date.now()
  const [slowR] = await runOperatorChecks(spec({ sql: [slow], timeoutMs: 500 }), conn)
  t.equal(slowR!.ok, false)
  t.match(slowR!.detail, 'timed out after 500 ms')
  t.ok(Date.now() - started < 5000, 'a slow query fails quickly')
  const sleeping = psql('postgres', `SELECT count(*) FROM pg_stat_activity WHERE datname = '${db}' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid();`)
  t.equal(sleeping.trim(), '0', 'the query was cancelled on the server')

  const gone = join(dir, 'deleted-after-validation.sql')
  const [goneR] = await runOperatorChecks(spec({ sql: [gone] }), conn)
  t.equal(goneR!.ok, false, 'a check file that vanished fails the check, naming the file')
  t.match(goneR!.detail, /--check-sql file '.*deleted-after-validation.sql' does not exist/)
  t.notMatch(goneR!.detail, 'artifact')
})

t.test('cmd checks', async (t) => {
  const db = scratchDatabase(t)
  const conn = connTo(db, { PGPASSWORD: PASSWORD })
  t.ok(conn.secrets.includes(PASSWORD))

  const [pass, fail, leak, url] = await runOperatorChecks(
    spec({
      cmd: [
        `test "$PGDATABASE" = ${db} && psql -X -At -c 'SELECT 1' >/dev/null`,
        'echo checking; echo "orders table empty"; exit 3',
        'echo "pw is $PGPASSWORD"; echo "url is $DATABASE_URL" >&2; exit 1',
        // PGHOST/PGUSER of the test run (kept by cleanEnv) appear in it too: the database is what matters.
        `case "$DATABASE_URL" in "postgresql://"*"/${db}" | "postgresql://"*"/${db}?"*) exit 0 ;; esac; exit 1`,
      ],
    }),
    conn,
  )
  t.equal(pass!.ok, true, pass!.detail)
  t.equal(pass!.kind, 'cmd')
  t.match(pass!.name, /^cmd:test "\$PGDATABASE"/)
  t.equal(fail!.ok, false)
  t.equal(fail!.detail, 'exit status 3: orders table empty')
  t.match(fail!.output, 'checking')
  t.equal(leak!.ok, false)
  t.notMatch(JSON.stringify(leak), PASSWORD, 'no password in the detail or the output')
  t.match(leak!.output, 'pw is ***')
  t.match(leak!.output, new RegExp(`url is postgresql://[^/\\s]*/${db}(\\?|$)`, 'm'))
  t.equal(url!.ok, true, `DATABASE_URL aimed at the restored database: ${url!.detail}`)

  const secretInCommand = await runOperatorChecks(spec({ cmd: [`curl -u admin:${PASSWORD} http://x; exit 1`] }), conn)
  t.notMatch(JSON.stringify(secretInCommand), PASSWORD, 'a password in the command line is not shown either')
})

t.test('cmd check timing out kills the whole process group', async (t) => {
  const db = scratchDatabase(t)
  const conn = connTo(db)
  const dir = tempDir(t)
  const pidFile = join(dir, 'pid')
  const started = Date.now()
  const [r] = await runOperatorChecks(
    // A child of the shell, so killing only the shell would leave it behind.
    spec({ cmd: [`sleep 30 & echo $! > ${pidFile}; echo started; wait`], timeoutMs: 500 }),
    conn,
  )
  t.equal(r!.ok, false)
  t.match(r!.detail, 'timed out after 500 ms')
  t.match(r!.output, 'started')
  t.ok(Date.now() - started < 5000, `fails quickly (${Date.now() - started} ms)`)
  t.ok(await goneSoon(Number(readFileSync(pidFile, 'utf8').trim())), 'the backgrounded sleep is gone too')

  const [left] = await runOperatorChecks(spec({ cmd: [`sleep 30 & echo $! > ${pidFile}`] }), conn)
  t.equal(left!.ok, true, left!.detail)
  t.ok(await goneSoon(Number(readFileSync(pidFile, 'utf8').trim())), 'a check leaves nothing running behind')

  const [plain] = await runOperatorChecks(spec({ cmd: ['sleep 30'], timeoutMs: 300 }), conn)
  t.equal(plain!.ok, false)
  t.match(plain!.detail, 'timed out after 300 ms')
})

t.test('an interrupt kills a running cmd check', async (t) => {
  const dir = tempDir(t)
  const pidFile = join(dir, 'pid')
  const started = Date.now()
  const pending = runOperatorChecks(spec({ cmd: [`sleep 30 & echo $! > ${pidFile}; wait`], timeoutMs: 60_000 }), connTo('postgres'))
  while (!existsSync(pidFile) || !readFileSync(pidFile, 'utf8').trim()) await new Promise((r) => setTimeout(r, 20))
  await runCleanups(3000)
  const [r] = await pending
  t.equal(r!.ok, false)
  t.ok(Date.now() - started < 5000, 'stopped at once, not after the timeout')
  t.ok(await goneSoon(Number(readFileSync(pidFile, 'utf8').trim())), 'the whole group is gone')
})

t.test('DATABASE_URL for commands never holds the password', async (t) => {
  t.equal(databaseUrlWithoutPassword({ PGDATABASE: 'app' }), 'postgresql:///app')
  t.equal(
    databaseUrlWithoutPassword({ PGHOST: 'db.example.com', PGPORT: '5433', PGUSER: 'a@b', PGPASSWORD: PASSWORD, PGDATABASE: 'my db' }),
    'postgresql://a%40b@db.example.com:5433/my%20db',
  )
  t.equal(databaseUrlWithoutPassword({ PGHOST: '/var/run/postgresql', PGDATABASE: 'app' }), 'postgresql:///app?host=%2Fvar%2Frun%2Fpostgresql')
  t.equal(databaseUrlWithoutPassword({ PGHOST: '::1', PGDATABASE: 'app' }), 'postgresql://[::1]/app')
})

t.test('url checks', async (t) => {
  const seen: (string | undefined)[] = []
  const server: Server = createServer((req, res) => {
    seen.push(req.headers.authorization)
    if (req.url === '/health') res.writeHead(200).end('ok')
    else if (req.url === '/moved') res.writeHead(302, { location: '/health' }).end()
    else if (req.url === '/slow') setTimeout(() => res.writeHead(200).end('late'), 5000).unref()
    else res.writeHead(503).end('database not ready\n')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  // A port that was open a moment ago and is now closed.
  const closed = createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const closedPort = (closed.address() as AddressInfo).port
  await new Promise<void>((resolve) => closed.close(() => resolve()))

  const conn = connTo('postgres')
  const results = await runOperatorChecks(
    spec({
      url: [
        `${base}/health`,
        `${base}/down`,
        `http://127.0.0.1:${closedPort}/health`,
        `${base}/moved`,
        `http://admin:${PASSWORD}@127.0.0.1:${(server.address() as AddressInfo).port}/down`,
        `${base}/slow`,
      ],
      timeoutMs: 1000,
    }),
    conn,
  )
  const [ok, down, refused, moved, auth, slow] = results
  t.equal(ok!.ok, true, ok!.detail)
  t.equal(ok!.kind, 'url')
  t.equal(ok!.name, `url:${base}/health`)
  t.match(ok!.detail, 'HTTP 200')
  t.equal(down!.ok, false)
  t.match(down!.detail, 'HTTP 503 Service Unavailable')
  t.match(down!.output, 'database not ready')
  t.equal(refused!.ok, false)
  t.match(refused!.detail, 'connection refused')
  t.equal(moved!.ok, true, 'redirects are followed')
  t.equal(auth!.ok, false)
  t.equal(auth!.name, `url:${base}/down`, 'credentials are not in the name')
  t.notMatch(JSON.stringify(auth), PASSWORD)
  t.ok(seen.includes(`Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}`), 'credentials sent as Basic authorization')
  t.equal(slow!.ok, false)
  t.match(slow!.detail, 'timed out after 1.0 s')
})

t.test('checks run in order: sql, cmd, url', async (t) => {
  const dir = tempDir(t)
  const sqlFile = join(dir, 'a.sql')
  writeFileSync(sqlFile, 'SELECT true;\n')
  const results = await runOperatorChecks(
    { url: ['http://127.0.0.1:1/'], cmd: ['true'], sql: [sqlFile], timeoutMs: 2000 },
    connTo('postgres'),
  )
  t.same(
    results.map((r) => r.kind),
    ['sql', 'cmd', 'url'],
  )
})

t.test('validateCheckSpec turns typos away before a restore', async (t) => {
  const dir = tempDir(t)
  const good = join(dir, 'good.sql')
  writeFileSync(good, 'SELECT true;\n')
  mkdirSync(join(dir, 'sub'))

  t.equal(errorOf(() => validateCheckSpec(spec({ sql: [good], cmd: ['./smoke.sh'], url: ['https://example.com/health'] }))), undefined)

  const missing = errorOf(() => validateCheckSpec(spec({ sql: [join(dir, 'nope.sql')] })))
  t.equal(missing?.kind, 'input')
  t.match(missing?.message, /--check-sql file '.*nope.sql' does not exist/)
  t.notMatch(missing?.line, 'artifact')

  const directory = errorOf(() => validateCheckSpec(spec({ sql: [join(dir, 'sub')] })))
  t.equal(directory?.kind, 'input')
  t.match(directory?.message, 'is a directory')

  const fifo = join(dir, 'fifo.sql')
  execFileSync('mkfifo', [fifo])
  t.equal(errorOf(() => validateCheckSpec(spec({ sql: [fifo] })))?.kind, 'input', 'a named pipe is refused without blocking')

  const big = join(dir, 'big.sql')
  writeFileSync(big, Buffer.alloc(1024 * 1024 + 1, 0x20))
  t.match(errorOf(() => validateCheckSpec(spec({ sql: [big] })))?.message, 'larger than')

  const ftp = errorOf(() => validateCheckSpec(spec({ url: ['ftp://x'] })))
  t.equal(ftp?.kind, 'usage')
  t.match(ftp?.message, 'http:// or https://')

  const withPw = errorOf(() => validateCheckSpec(spec({ url: ['ftp://user:pw@host/x'] })))
  t.equal(withPw?.kind, 'usage')
  t.notMatch(withPw?.line, 'pw')
  t.notMatch(withPw?.line, 'user')

  const bad = errorOf(() => validateCheckSpec(spec({ url: ['http://user:pw@host:notaport/'] })))
  t.equal(bad?.kind, 'usage')
  t.match(bad?.message, 'not a valid URL')
  t.notMatch(bad?.line, ':pw')

  t.equal(errorOf(() => validateCheckSpec(spec({ url: ['not a url'] })))?.kind, 'usage')
  t.equal(errorOf(() => validateCheckSpec(spec({ url: ['http://user:pw@host/'] }))), undefined, 'credentials are allowed')

  t.equal(errorOf(() => validateCheckSpec(spec({ cmd: [''] })))?.kind, 'usage')
  t.equal(errorOf(() => validateCheckSpec(spec({ cmd: ['   '] })))?.kind, 'usage')
  t.equal(errorOf(() => validateCheckSpec(spec({ timeoutMs: 0 })))?.kind, 'usage')
})

t.test('a check file that is a FIFO at run time fails the check, not the run', async (t) => {
  const dir = tempDir(t)
  const fifo = join(dir, 'fifo.sql')
  execFileSync('mkfifo', [fifo])
  const [r] = await runOperatorChecks(spec({ sql: [fifo] }), connTo('postgres'))
  t.equal(r!.ok, false)
  t.match(r!.detail, 'not a regular file')
})
