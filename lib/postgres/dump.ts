import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { fsyncFile } from '../artifact/durable.ts'
import { runtimeError } from '../cli/errors.ts'
import { DigestStream, type Digest } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { compressor } from '../pipeline/zstd.ts'
import { formatDuration } from '../policy/duration.ts'
import { CONNECT_FIX, failed, notFound } from './client.ts'
import type { PgConnection } from './connection.ts'

export interface DumpOptions {
  /** From exportSnapshot: the dump sees exactly what the row counts saw. */
  snapshot: string
  /** pg_dump --lock-wait-timeout: a cron backup must fail, not stall, behind an exclusive lock. */
  lockWaitTimeoutMs: number
  onProgress?: (bytes: number) => void
}

/**
 * Streams `pg_dump -Fc -Z0 | zstd -T0` straight to `dest`, hashing the
 * compressed bytes on the way: the dump is never held in memory and never
 * read twice. pg_dump's output reaches zstd through an OS pipe, not
 * through this process. The file is fsynced before the digest is returned.
 */
export async function dumpDatabase(conn: PgConnection, dest: string, opts: DumpOptions): Promise<Digest> {
  const dump = spawnTool(
    'pg_dump',
    ['--format=custom', '--compress=0', '--no-password', `--snapshot=${opts.snapshot}`, `--lock-wait-timeout=${opts.lockWaitTimeoutMs}`],
    { env: conn.env, stdin: 'ignore', stdout: 'pipe', missing: notFound('pg_dump') },
  )
  const zstd = compressor(dump.stdout!, conn.env)
  const digester = new DigestStream(opts.onProgress)
  const written = pipeline(zstd.stdout!, digester, createWriteStream(dest, { flags: 'wx', mode: 0o600 }))
  let dumpExit: number
  let zstdExit: number
  try {
    ;[dumpExit, zstdExit] = await Promise.all([dump.exited, zstd.exited, written])
  } catch (err) {
    // A full disk must not leave pg_dump running against the server.
    dump.kill()
    zstd.kill()
    throw err
  }
  if (dumpExit !== 0) {
    const stderr = dump.stderr()
    if (/lock timeout/i.test(stderr)) {
      const table = /LOCK TABLE (\S+)/.exec(stderr)?.[1]
      throw runtimeError(
        `pg_dump could not lock ${table ?? 'a table'} within ${formatDuration(opts.lockWaitTimeoutMs)}: another session holds an exclusive lock`,
        'run again later, or raise --lock-wait-timeout (PG_LOCK_WAIT_TIMEOUT)',
      )
    }
    throw failed(conn, 'pg_dump', { exitCode: dumpExit, stderr }, CONNECT_FIX)
  }
  if (zstdExit !== 0) throw runtimeError(`zstd failed while compressing the dump: ${zstd.stderr().trim() || `exit status ${zstdExit}`}`, 'check the zstd installation and free space')
  await fsyncFile(dest)
  return digester.digest()
}
