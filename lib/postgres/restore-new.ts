import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { onInterrupt } from '../cli/signals.ts'
import type { PgConnection } from './connection.ts'
import { withDatabase } from './connection.ts'
import { restoreParallel, stageDump, type DumpSource } from './restore.ts'
import { createDatabase, dropDatabase, type DatabaseSettings } from './server.ts'
import { copyDatabaseProperties } from './swap.ts'

export interface NewDatabaseRestore {
  source: DumpSource
  /** The database to create; it must not exist. */
  name: string
  settings: DatabaseSettings
  /** An existing database whose settings and grants the new one should get (the one it will replace). */
  propertiesFrom?: string
  jobs: number
  /** Where the uncompressed dump is staged for pg_restore -j (RESTORE_STAGING_DIR, default the system temp dir). */
  stagingDir?: string
  onStage?: (bytes: number) => void
  onRestoreStart?: () => void
}

/** A restored database nobody uses yet; the caller swaps it in, renames it, or drops it. */
export interface RestoredDatabase {
  name: string
  drop(): Promise<void>
  /** Stop dropping it on interrupt: it has been swapped in and is no longer ours to remove. */
  keep(): void
}

/**
 * The fast, all-or-nothing restore: stage the verified dump, create a new
 * database, pg_restore -j into it. Nothing that exists is touched; a
 * failure or an interrupt at any point drops what was created and removes
 * the staged dump.
 */
export async function restoreIntoNewDatabase(conn: PgConnection, opts: NewDatabaseRestore): Promise<RestoredDatabase> {
  const staging = await mkdtemp(join(opts.stagingDir ?? tmpdir(), 'conductor-restore-'))
  const unstage = () => rm(staging, { recursive: true, force: true })
  const releaseStaging = onInterrupt(unstage)
  const target = withDatabase(conn, opts.name)
  let created = false
  const drop = () => dropDatabase(target, opts.name)
  let releaseDb = () => {}
  try {
    const dumpPath = join(staging, 'dump')
    await stageDump(conn, opts.source, dumpPath, opts.onStage)
    await createDatabase(target, opts.name, opts.settings)
    created = true
    releaseDb = onInterrupt(drop)
    if (opts.propertiesFrom) await copyDatabaseProperties(conn, opts.propertiesFrom, opts.name)
    opts.onRestoreStart?.()
    await restoreParallel(target, dumpPath, opts.name, opts.jobs)
  } catch (err) {
    releaseDb()
    if (created) await drop().catch(() => {})
    throw err
  } finally {
    await unstage()
    releaseStaging()
  }
  return {
    name: opts.name,
    drop: async () => {
      await drop()
      releaseDb()
    },
    keep: () => releaseDb(),
  }
}
