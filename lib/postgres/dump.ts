import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { fsyncFile } from '../artifact/durable.ts'
import { DigestStream, type Digest } from '../pipeline/checksum.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { CONNECT_FIX, failed, notFound } from './client.ts'
import type { PgConnection } from './connection.ts'

/**
 * Streams `pg_dump -Fc` straight to `dest`, hashing on the way: the dump
 * is never held in memory and never read twice. The file is fsynced
 * before the digest is returned.
 */
export async function dumpDatabase(
  conn: PgConnection,
  dest: string,
  snapshot: string,
  onProgress?: (bytes: number) => void,
): Promise<Digest> {
  const dump = spawnTool('pg_dump', ['--format=custom', '--no-password', `--snapshot=${snapshot}`], {
    env: conn.env,
    stdin: 'ignore',
    stdout: 'pipe',
    missing: notFound('pg_dump'),
  })
  const digester = new DigestStream(onProgress)
  const written = pipeline(dump.stdout!, digester, createWriteStream(dest, { flags: 'wx', mode: 0o600 }))
  let exitCode: number
  try {
    ;[exitCode] = await Promise.all([dump.exited, written])
  } catch (err) {
    // A full disk must not leave pg_dump running against the server.
    dump.kill()
    throw err
  }
  if (exitCode !== 0) throw failed(conn, 'pg_dump', { exitCode, stderr: dump.stderr() }, CONNECT_FIX)
  await fsyncFile(dest)
  return digester.digest()
}
