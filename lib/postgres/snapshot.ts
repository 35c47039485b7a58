import { runtimeError } from '../cli/errors.ts'
import type { TableCount } from '../artifact/manifest.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { CONNECT_FIX, failed, notFound, psql } from './client.ts'
import { ownSessionEnv } from './own-sessions.ts'
import { clientCommand } from './client-path.ts'
import { lockWaitFailure } from './lock-wait.ts'
import type { PgConnection } from './connection.ts'

/** A snapshot exported by a session we keep open: it is only importable while that session lives. */
export interface HeldSnapshot {
  id: string
  release(): Promise<void>
}

/**
 * Exports a snapshot from a REPEATABLE READ session so that pg_dump
 * (--snapshot) and the row counts see exactly the same data: the counts
 * in the manifest are then what a restore must reproduce, not an
 * approximation taken a moment earlier or later.
 */
export async function exportSnapshot(conn: PgConnection): Promise<HeldSnapshot> {
  const session = spawnTool(clientCommand('psql', conn.env), ['-X', '-A', '-t', '-q', '-w', '-v', 'ON_ERROR_STOP=1'], {
    env: ownSessionEnv(conn),
    stdin: 'pipe',
    stdout: 'pipe',
    missing: notFound('psql'),
  })
  session.stdout!.setEncoding('utf8')
  session.stdin!.write('BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n')
  let text = ''
  const id = await Promise.race([
    (async () => {
      for await (const chunk of session.stdout!) {
        text += chunk
        if (text.includes('\n')) return text.trim()
      }
      return ''
    })(),
    session.exited.then(() => ''),
  ])
  if (!/^[0-9A-Fa-f-]+$/.test(id)) {
    session.kill()
    const exitCode = await session.exited
    throw failed(conn, 'exporting a snapshot', { exitCode, stderr: session.stderr() }, CONNECT_FIX)
  }
  return {
    id,
    release: async () => {
      session.stdin!.end('COMMIT;\n')
      await session.exited.catch(() => {})
    },
  }
}

/**
 * Every table whose rows pg_dump dumps (ordinary and partitioned tables
 * outside the system schemas, not members of an extension), counted in
 * the exported snapshot. Names travel as JSON, so no name can break the
 * parsing, whatever quotes or newlines it holds.
 */
export async function countRows(conn: PgConnection, snapshot: string, lockTimeoutMs: number): Promise<TableCount[]> {
  const out = await psql(
    conn,
    `BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SET TRANSACTION SNAPSHOT :'snapshot';
SET LOCAL lock_timeout = :'lock_timeout';
-- Beside a running pg_dump on a busy machine, one plain backend is fastest: measured on the
-- benchmark database, parallel workers with JIT made these counts take 1.65 s, this 0.53 s.
SET LOCAL jit = off;
SET LOCAL max_parallel_workers_per_gather = 0;
SELECT format('SELECT json_build_object(''schema'', %L, ''table'', %L, ''rows'', count(*)) FROM %I.%I',
              n.nspname, c.relname, n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d
                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
 ORDER BY n.nspname, c.relname
\\gexec
COMMIT;
`,
    { snapshot, lock_timeout: String(lockTimeoutMs) },
    'counting rows',
  ).catch((err: unknown) => {
    // A table locked past the timeout is that, not a connection problem.
    throw lockWaitFailure((err as Error)?.message ?? '', lockTimeoutMs) ?? err
  })
  const counts: TableCount[] = []
  for (const line of out.split('\n')) {
    if (!line.trim()) continue
    const row = JSON.parse(line) as { schema: string; table: string; rows: number }
    if (typeof row.schema !== 'string' || typeof row.table !== 'string' || !Number.isSafeInteger(row.rows)) {
      throw runtimeError('could not read the row counts from PostgreSQL', CONNECT_FIX)
    }
    counts.push({ schema: row.schema, table: row.table, rows: row.rows })
  }
  return counts
}
