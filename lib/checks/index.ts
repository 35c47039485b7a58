/**
 * Checks after a restore: does the restored database hold what the
 * backup held, and does the application work against it? For the
 * operators' guide:
 *
 * - Row counts (always, when the artifact recorded them): every table
 *   the manifest lists must exist in the restored database and hold
 *   exactly the recorded number of rows. The detail names the first few
 *   tables that differ ("public.orders: 10 rows, expected 12") or are
 *   missing. Artifacts from before row counts were recorded pass with
 *   "no row counts recorded in this artifact".
 * - --check-sql FILE (repeatable): the file is run by psql (-X, so no
 *   .psqlrc; ON_ERROR_STOP) against the restored database, fed on stdin,
 *   so \ir includes resolve against the current directory. It passes when
 *   psql exits 0 and every row returned is a single column equal to t
 *   (boolean true); statements that return no rows pass. An error, or any
 *   row that is anything else (f, NULL, 42, two columns), fails; the
 *   detail shows the first. Files over 1 MiB, directories, pipes and
 *   devices are refused.
 * - --check-cmd 'CMD' (repeatable): run as `sh -c CMD` in the current
 *   directory, with PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD,
 *   if set) aimed at the restored database, and DATABASE_URL likewise but
 *   never with the password in it. Exit status 0 passes. On timeout, or
 *   if the tool is interrupted, everything the command started is killed
 *   (its process group: SIGTERM, then SIGKILL after 2 s), as is anything
 *   it leaves running when it exits. Its output tail (4 KiB) goes into
 *   the report, with passwords masked.
 * - --check-url URL (repeatable): HTTP GET, redirects followed; a 2xx
 *   status passes, anything else, a refused connection or a timeout
 *   fails. user:password@ in the URL is sent as Basic authorization and
 *   never shown.
 * - Each operator check has the same timeout (sql too: the query is
 *   cancelled). They run one at a time, in this order: all sql, all cmd,
 *   all url, each in the order given. A failing check does not stop the
 *   others, so the report is complete; the restore then exits with the
 *   check failure status (5).
 * - validateCheckSpec runs before the restore starts, so a missing check
 *   file (exit 3), an empty command or a URL that is not http(s) (exit 2)
 *   fails in seconds instead of after the restore.
 */
import type { PgConnection } from '../postgres/connection.ts'
import { checkCommand } from './command.ts'
import { checkUrl } from './http.ts'
import { checkSql } from './sql.ts'
import type { CheckResult, CheckSpec } from './types.ts'

export type { CheckResult, CheckSpec } from './types.ts'
export { checkRowCounts } from './row-counts.ts'
export { validateCheckSpec } from './validate.ts'
export { databaseUrlWithoutPassword } from './command.ts'

/** `conn` is aimed at the restored database. */
export async function runOperatorChecks(spec: CheckSpec, conn: PgConnection): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  for (const file of spec.sql) results.push(await checkSql(file, conn, spec.timeoutMs))
  for (const cmd of spec.cmd) results.push(await checkCommand(cmd, conn, spec.timeoutMs))
  for (const url of spec.url) results.push(await checkUrl(url, conn.secrets, spec.timeoutMs))
  return results
}
