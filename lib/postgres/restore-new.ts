import { access, rm } from 'node:fs/promises'
import { makeScratchDir } from '../artifact/scratch-dir.ts'
import { constants } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { critical, interrupted, InterruptedBeforeCritical, onInterrupt } from '../cli/signals.ts'
import { createSessionName } from './own-sessions.ts'
import type { PgConnection } from './connection.ts'
import { withDatabase } from './connection.ts'
import { restoreStaged, restoreStreamed, type DumpSource } from './restore.ts'
import { canStage, stageDump } from './stage-dump.ts'
import { createDatabase, dropDatabase, type DatabaseSettings } from './server.ts'
import { psql } from './client.ts'
import { copyDatabaseProperties } from './swap.ts'

export interface NewDatabaseRestore {
  source: DumpSource
  /** From checkArchive: how much of the archive's start holds its table of contents. */
  tocBytes: number
  /** The database to create; it must not exist. */
  name: string
  settings: DatabaseSettings
  /** An existing database whose settings and grants the new one should get (the one it will replace). */
  propertiesFrom?: string
  jobs: number
  /** Stage the dump for one parallel pg_restore when it can (RESTORE_STAGE_DUMP, default on). */
  stage: boolean
  /** RESTORE_STAGING_DIR: where the dump is staged (or, streamed, its table of contents copied) for pg_restore --jobs; default the system temp dir. */
  stagingDir?: string
  onProgress?: (bytes: number) => void
  /** The dump is staged and pg_restore --jobs starts: no byte counts from here on. */
  onStaged?: () => void
  /** Staging would have been used, but the staging file system is short of room or is memory (tmpfs): streamed instead. */
  onNotStaged?: (why: 'no-room' | 'memory') => void
}

/** A restored database nobody uses yet; the caller swaps it in, renames it, or drops it. */
export interface RestoredDatabase {
  name: string
  drop(): Promise<void>
  /** Stop dropping it on interrupt: it has been swapped in and is no longer ours to remove. */
  keep(): void
}

/**
 * An encrypted dump is streamed, and the head copy it needs is plaintext
 * (its table of contents and possibly the first rows): by default it goes
 * to memory (/dev/shm), not to a disk, so an encrypted backup leaves no
 * decrypted bytes on disk.
 */
async function memoryBackedTmp(): Promise<string> {
  try {
    await access('/dev/shm', constants.W_OK)
    return '/dev/shm'
  } catch {
    return tmpdir()
  }
}

/** How long an interrupted restore waits for its killed CREATE's session to end before dropping (the cleanups have 10 s). */
const CREATE_WAIT_MS = 5000

/** Resolves once no session named `name` is connected, or after `ms`. */
async function sessionGone(conn: PgConnection, name: string, ms: number): Promise<void> {
  const until = Date.now() + ms
  while (Date.now() < until) {
    const left = await psql(withDatabase(conn, 'postgres'), "SELECT count(*) FROM pg_stat_activity WHERE application_name = :'name';\n", { name }).catch(() => '0')
    if (left.trim() === '0') return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * The fast, all-or-nothing restore: create a new database and restore the
 * verified dump into it: staged and with pg_restore --jobs when it can
 * (stage-dump.ts), else streamed (restoreStreamed). Nothing that exists is
 * touched; a failure or an interrupt at any point drops what was created
 * and removes the staging directory (the staged dump, or the copied table
 * of contents).
 */
export async function restoreIntoNewDatabase(conn: PgConnection, opts: NewDatabaseRestore): Promise<RestoredDatabase> {
  const staging = await makeScratchDir(opts.stagingDir ?? (opts.source.encrypted ? await memoryBackedTmp() : tmpdir()), 'conductor-restore-')
  const unstage = () => rm(staging, { recursive: true, force: true })
  const releaseStaging = onInterrupt(unstage)
  const target = withDatabase(conn, opts.name)
  let created = false
  const drop = () => dropDatabase(target, opts.name)
  let releaseDb = () => {}
  try {
    const stagedPath = join(staging, 'postgres.dump')
    const staging$ = canStage(opts.source, opts.stage)
      ? stageDump(opts.source, stagedPath, conn.env, { onProgress: opts.onProgress, chosen: opts.stagingDir !== undefined })
      : Promise.resolve(null)
    // The new database is created while the dump is staged (neither needs the other; ~0.1 s of
    // every restore). Nothing goes into it before the dump has matched its checksum again, and a
    // dump that fails drops it below, as any failure does.
    const creating = (async () => {
      // An interrupt waits for the CREATE, so the drop is registered before the cleanups run.
      await critical(
        'creating the new database',
        async () => {
          // Named, so that a CREATE whose psql was killed can be waited for (below).
          const session = createSessionName()
          try {
            await createDatabase({ ...target, env: { ...target.env, PGAPPNAME: session } }, opts.name, opts.settings)
          } catch (err) {
            // A signal to the whole process group (systemd, timeout) kills psql too, and the server
            // commits the CREATE all the same: once that session is gone, drop what it may have made.
            // Never a database that was there before us (a drill's chosen name).
            if (interrupted() && !/already exists/i.test((err as Error)?.message ?? '')) {
              releaseDb = onInterrupt(async () => {
                await sessionGone(conn, session, CREATE_WAIT_MS)
                await drop()
              })
            }
            throw err
          }
          created = true
          releaseDb = onInterrupt(drop)
        },
        { undone: true },
      )
      if (interrupted()) throw new InterruptedBeforeCritical('restoring into the new database')
    })()
    const [stagedResult, createdResult] = await Promise.allSettled([staging$, creating])
    if (stagedResult.status === 'rejected') throw stagedResult.reason
    if (createdResult.status === 'rejected') throw createdResult.reason
    const outcome = stagedResult.value
    const staged = outcome === 'staged'
    if (outcome === 'no-room' || outcome === 'memory') opts.onNotStaged?.(outcome)
    // An interrupt meanwhile ran the cleanups registered by then, perhaps before the drop was: drop it here.
    if (interrupted()) throw new InterruptedBeforeCritical('restoring into the new database')
    if (staged) {
      opts.onStaged?.()
      await restoreStaged(target, stagedPath, opts.name, opts.jobs)
    } else {
      await restoreStreamed(target, opts.source, opts.name, {
        tocBytes: opts.tocBytes,
        jobs: opts.jobs,
        headPath: join(staging, 'toc.dump'),
        onProgress: opts.onProgress,
      })
    }
    // After pg_restore, not before: the replaced database's settings (default_transaction_read_only
    // = on for a database frozen before the restore, a short statement_timeout, a role to SET) would
    // otherwise apply to pg_restore's own sessions and fail it.
    if (opts.propertiesFrom) await copyDatabaseProperties(conn, opts.propertiesFrom, opts.name)
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
