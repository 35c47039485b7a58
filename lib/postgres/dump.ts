import type { Readable } from 'node:stream'
import type { ManifestFile } from '../artifact/manifest.ts'
import type { EncodedFile } from '../pipeline/encode.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { brokenPipe } from '../pipeline/encode.ts'
import { lockWaitFailure } from './lock-wait.ts'
import { CONNECT_FIX, failed, notFound } from './client.ts'
import { clientCommand } from './client-path.ts'
import type { PgConnection } from './connection.ts'

export interface DumpOptions {
  /** From exportSnapshot: the dump sees exactly what the row counts saw. */
  snapshot: string
  /** pg_dump --lock-wait-timeout: a cron backup must fail, not stall, behind an exclusive lock. */
  lockWaitTimeoutMs: number
}

/**
 * Runs `pg_dump -Fc -Z0` and hands its stdout to `store` (zstd, age and
 * the store, joined by OS pipes; see lib/pipeline/encode.ts): the dump is
 * never held in memory and never read twice.
 */
export async function dumpDatabase(conn: PgConnection, store: (stdout: Readable) => EncodedFile, opts: DumpOptions): Promise<ManifestFile> {
  const dump = spawnTool(
    clientCommand('pg_dump', conn.env),
    ['--format=custom', '--compress=0', '--no-password', `--snapshot=${opts.snapshot}`, `--lock-wait-timeout=${opts.lockWaitTimeoutMs}`],
    { env: conn.env, stdin: 'ignore', stdout: 'pipe', missing: notFound('pg_dump') },
  )
  const encoded = store(dump.stdout!)
  let dumpExit: number
  let file: ManifestFile
  try {
    ;[dumpExit, file] = await Promise.all([dump.exited, encoded.done])
  } catch (err) {
    // A full disk must not leave pg_dump running against the server.
    dump.kill()
    encoded.kill()
    // pg_dump's own failure explains a broken pipe downstream better than the pipe does.
    const exit = await dump.exited.catch(() => 0)
    const pipeOnly = brokenPipe({ what: 'pg_dump', exit, stderr: dump.stderr() })
    if (exit !== 0 && exit !== 128 + 15 && !pipeOnly) throw dumpFailure(conn, exit, dump.stderr(), opts)
    throw err
  }
  if (dumpExit !== 0) throw dumpFailure(conn, dumpExit, dump.stderr(), opts)
  return file
}

function dumpFailure(conn: PgConnection, exitCode: number, stderr: string, opts: DumpOptions) {
  return lockWaitFailure(stderr, opts.lockWaitTimeoutMs) ?? failed(conn, 'pg_dump', { exitCode, stderr }, CONNECT_FIX)
}
