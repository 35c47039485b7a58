import { availableParallelism } from 'node:os'
import type { PostgresDumped } from '../artifact/manifest.ts'
import { changedAfterVerification, type VerifiedFile } from '../artifact/verified-file.ts'
import { DrError, usageError, verificationError } from '../cli/errors.ts'
import { critical, InterruptedBeforeCritical, noteDone, onInterrupt } from '../cli/signals.ts'
import { DigestMismatch, readVerified } from '../pipeline/checksum.ts'
import { readDecoded } from '../crypto/decrypt-check.ts'
import { allInOrder } from '../pipeline/in-order.ts'
import { createRoles, existingRoles, parseRoles, planRoles } from '../postgres/roles.ts'
import { checkRowCounts, runOperatorChecks } from '../checks/index.ts'
import type { CheckResult, CheckSpec } from '../checks/types.ts'
import { shellWord } from '../cli/escape.ts'
import type { Reporter } from '../cli/report.ts'
import { checkReachable, toolVersion } from '../postgres/client.ts'
import { checkDatabaseName, connectionFromEnv, describeTarget, withDatabase, type PgConnection } from '../postgres/connection.ts'
import { checkWritableDir } from '../artifact/destination.ts'
import { unusedDerivedName } from '../postgres/derived-name.ts'
import { restoreIntoNewDatabase } from '../postgres/restore-new.ts'
import { checkArchive, restoreInPlace, type DumpSource } from '../postgres/restore.ts'
import { createDatabase, databaseExists, databaseOwner, dropDatabase } from '../postgres/server.ts'
import { renameDatabase, swapDatabases } from '../postgres/swap.ts'

/** What the operator is told when the dump has been staged, or could not be for lack of room. */
export function stagingNotes(reporter: Reporter, jobs: number): { onStaged: () => void; onNotStaged: (why: 'no-room' | 'memory') => void } {
  return {
    onStaged: () => {
      reporter.endProgress()
      reporter.line(`postgres: dump verified and staged; schema, data and indexes with pg_restore --jobs=${jobs}`)
    },
    onNotStaged: (why) => {
      reporter.endProgress()
      reporter.line(
        why === 'memory'
          ? 'postgres: the temp directory is a memory file system (tmpfs); streaming the dump instead, data in one process (set RESTORE_STAGING_DIR to a directory on a disk to stage it)'
          : 'postgres: too little room to stage the dump (RESTORE_STAGING_DIR); streaming it instead, data in one process',
      )
    },
  }
}

/** The roles file, and the key to read it when it is encrypted (none in a dry run). */
export interface RolesSource {
  file: VerifiedFile
  encrypted: boolean
  identity?: string
}

export interface PostgresRestoreOptions {
  dryRun: boolean
  /** Old behaviour: replace the dump's objects inside the target, in one transaction, no parallelism. */
  inPlace: boolean
  /** Drop the replaced database after a successful swap instead of keeping it under a dated name. */
  dropOld: boolean
  jobs: number | undefined
  stagingDir: string | undefined
  /** RESTORE_STAGE_DUMP (default on): stage the dump for one parallel pg_restore when there is room. */
  stage: boolean
  checks: CheckSpec | null
  env: NodeJS.ProcessEnv
  now: Date
}

export type PostgresRestoreResult =
  | { status: 'planned'; database: string; mode: 'swap' | 'new' | 'in-place'; rolesCreated: string[] }
  | {
      status: 'restored'
      database: string
      mode: 'swap' | 'new' | 'in-place'
      /** The database the restore replaced, kept under this name (swap without --drop-old). */
      kept?: string
      /** When checks failed before a swap: the restored copy, left for inspection. */
      inspect?: string
      jobs?: number
      rolesCreated: string[]
    }

 /** A roles dump is a few KiB per role; anything near this is not one. */
const ROLES_LIMIT = 16 * 1024 * 1024

/**
 * Roles the dump needs that this server lacks are created first, and only
 * those: existing roles are never altered. Nothing here is undone if the
 * restore then fails; the roles are harmless and the next attempt needs them.
 */
async function ensureRoles(conn: PgConnection, roles: RolesSource | undefined, dryRun: boolean, reporter: Reporter): Promise<string[]> {
  if (!roles) return []
  if (roles.encrypted && roles.identity === undefined) {
    reporter.line('postgres: the roles are encrypted; missing ones will be created before the restore')
    return []
  }
  const sql = roles.encrypted
    ? await readDecoded(roles.file, { compression: undefined, identity: roles.identity }, conn.env, ROLES_LIMIT)
    : await readVerified(roles.file.handle, roles.file.digest, ROLES_LIMIT).catch((err: unknown) => {
        throw err instanceof DigestMismatch ? changedAfterVerification(roles.file.name) : err
      })
  if (!sql) throw verificationError(`${roles.file.name} is larger than a roles dump can be`, 'the artifact is damaged; use another backup')
  const doc = parseRoles(sql.toString('utf8'))
  if (dryRun) {
    // Which of them exist cannot be known without credentials, and a dry run needs none.
    reporter.line(`postgres: the artifact records ${doc.roles.length} role(s); missing ones will be created before the restore`)
    return []
  }
  const plan = planRoles(doc, await existingRoles(conn))
  const names = plan.create.map((r) => r.name)
  if (names.length === 0) return []
  await createRoles(conn, plan)
  reporter.line(`postgres: created missing roles: ${names.join(', ')} (existing roles were left as they are)`)
  return names
}

/** Databases a swap cannot replace: every admin connection (ours included) lands in one of them. */
const SYSTEM_DATABASES = new Set(['postgres', 'template0', 'template1'])

export const defaultJobs = () => Math.max(1, Math.min(4, availableParallelism()))

async function runChecks(target: PgConnection, pg: PostgresDumped, spec: CheckSpec | null, reporter: Reporter): Promise<CheckResult[]> {
  if (!spec) return []
  const checks = [await checkRowCounts(target, pg.tables ?? []), ...(await runOperatorChecks(spec, target))]
  for (const c of checks) reporter.line(`check ${c.name}: ${c.ok ? 'ok' : 'FAILED'} — ${c.detail}`)
  return checks
}

/**
 * RESTORE_POSTGRES=true. By default the dump is restored with pg_restore
 * -j into a new database beside the target, checked there, and only then
 * swapped in under the target's name in one transaction; the database it
 * replaces is kept under `<name>_pre_restore_<stamp>` (or dropped with
 * --drop-old). A failure or interrupt before the swap leaves the target
 * exactly as it was. --in-place keeps the single-transaction restore
 * inside the existing database.
 */
export async function restorePostgres(
  opts: PostgresRestoreOptions,
  pg: PostgresDumped,
  source: DumpSource,
  roles: RolesSource | undefined,
  reporter: Reporter,
): Promise<{ postgres: PostgresRestoreResult; checks: CheckResult[] }> {
  const conn = connectionFromEnv(opts.env)
  // With no database configured, restore to the one that was backed up.
  const database = checkDatabaseName(conn.target.database ?? pg.database, 'the target database')
  if (!opts.inPlace && SYSTEM_DATABASES.has(database)) {
    throw usageError(`${database} cannot be replaced by a swap (the tool's own connections use it)`, 'set PGDATABASE to the application database, or use --in-place')
  }
  const target = withDatabase(conn, database)
  if (opts.stagingDir && !opts.inPlace) await checkWritableDir(opts.stagingDir, 'RESTORE_STAGING_DIR')
  // A dry run has no key: an encrypted dump's table of contents is read by the real run, before it changes anything.
  const readable = source.encrypted && source.identity === undefined ? Promise.resolve({ tocBytes: 0 }) : checkArchive(target, source)
  const [version, { tocBytes }] = await allInOrder([toolVersion(target, 'pg_restore'), readable, checkReachable(target)])
  reporter.line(
    source.encrypted && source.identity === undefined
      ? `${pg.file} is encrypted: its archive is read with the key, before the restore changes anything`
      : `checked ${pg.file} is a readable archive (dumped by ${pg.pgDumpVersion})`,
  )
  const exists = await databaseExists(target, database)
  const mode = opts.inPlace ? 'in-place' : exists ? 'swap' : 'new'
  const jobs = opts.jobs ?? defaultJobs()
  const settings = { encoding: pg.encoding, collate: pg.collate, ctype: pg.ctype, localeProvider: pg.localeProvider, iculocale: pg.iculocale, owner: pg.owner }

  if (mode === 'in-place') {
    reporter.line(`postgres: replace every object of the dump in ${describeTarget(target.target)} with ${version} (one transaction; objects not in the dump are kept)`)
  } else {
    reporter.line(
      `postgres: restore with ${version} into a new database (pg_restore --jobs=${jobs}), then ${
        exists ? `swap it in as ${database}, keeping the current one ${opts.dropOld ? 'until the swap, then dropping it (--drop-old)' : 'under a dated name'}` : `name it ${database}`
      }`,
    )
  }
  const rolesCreated = await ensureRoles(conn, roles, opts.dryRun, reporter)
  if (opts.dryRun) {
    return { postgres: { status: 'planned', database, mode, rolesCreated }, checks: [] }
  }

  if (mode === 'in-place') {
    // A database this run created goes again if the restore into it fails or is interrupted: left
    // empty, a later default restore would take it for an existing target.
    let undoCreate = () => {}
    if (!exists) {
      reporter.line(`postgres: database ${database} does not exist; creating it (${pg.encoding}, collate ${pg.collate || 'default'})`)
      await createDatabase(target, database, settings)
      undoCreate = onInterrupt(() => dropDatabase(conn, database).catch(() => {}))
    }
    reporter.line(`postgres: restoring ${pg.database} into ${database}…`)
    try {
      await restoreInPlace(target, source, database, (bytes) => reporter.progress('restoring database', bytes))
    } catch (err) {
      reporter.endProgress()
      if (!exists) {
        undoCreate()
        await dropDatabase(conn, database).catch(() => {})
        if (err instanceof DrError) throw new DrError(err.kind, `${err.message} (the database ${database} this restore created was dropped again)`, err.fix, err.details)
      }
      throw err
    }
    undoCreate()
    reporter.endProgress()
    return { postgres: { status: 'restored', database, mode, rolesCreated }, checks: await runChecks(target, pg, opts.checks, reporter) }
  }

  const fresh = await unusedDerivedName(conn, database, 'restoring', opts.now)
  const owner = exists ? await databaseOwner(conn, database) : pg.owner
  const restored = await restoreIntoNewDatabase(conn, {
    source,
    tocBytes,
    name: fresh,
    settings: { ...settings, owner },
    propertiesFrom: exists ? database : undefined,
    jobs,
    stagingDir: opts.stagingDir,
    stage: opts.stage,
    onProgress: (bytes) => reporter.progress(`restoring ${pg.file} into ${fresh}`, bytes),
    ...stagingNotes(reporter, jobs),
  })
  reporter.endProgress()
  const checks = await runChecks(withDatabase(conn, fresh), pg, opts.checks, reporter).catch(async (err: unknown) => {
    await restored.drop().catch(() => {})
    throw err
  })
  if (checks.some((c) => !c.ok)) {
    restored.keep()
    return { postgres: { status: 'restored', database, mode, inspect: fresh, jobs, rolesCreated }, checks }
  }
  // Until the swap has committed, the restored copy is ours to drop; a failed swap must not leave it behind.
  const undoCopy = async (err: unknown): Promise<never> => {
    await restored.drop().catch(() => {})
    throw err instanceof DrError
      ? new DrError(err.kind, `${err.message} (the restored copy was dropped; ${database} is unchanged)`, err.fix)
      : err
  }
  if (!exists) {
    await critical(`naming the restored database ${database}`, async () => {
      await renameDatabase(conn, fresh, database)
      restored.keep()
    }).catch(undoCopy)
    // An interrupt from here on (while the files are moved) must not read as 'nothing happened'.
    noteDone(`database ${database} is restored`)
    return { postgres: { status: 'restored', database, mode, jobs, rolesCreated }, checks }
  }
  const kept = await unusedDerivedName(conn, database, 'pre_restore', opts.now)
  await critical(`swapping the restored database in as ${database} (the previous one kept as ${kept})`, async () => {
    await swapDatabases(conn, database, fresh, kept)
    restored.keep()
  }).catch(undoCopy)
  noteDone(`database ${database} is restored (the previous one kept as ${kept})`)
  reporter.line(`postgres: ${database} now holds the restored data; the previous database is ${kept}`)
  if (opts.dropOld) {
    try {
      await critical(`dropping ${kept} (--drop-old)`, () => dropDatabase(conn, kept))
      reporter.line(`postgres: dropped ${kept} (--drop-old)`)
      return { postgres: { status: 'restored', database, mode, jobs, rolesCreated }, checks }
    } catch (err) {
      if (err instanceof InterruptedBeforeCritical) throw err
      // The restore itself succeeded; only the clean-up did not.
      reporter.warn(`restored, but could not drop ${kept}: ${err instanceof Error ? err.message : String(err)}; drop it by hand: dropdb ${shellWord(kept)}`)
    }
  } else {
    reporter.line(`postgres: when satisfied, drop the old one: dropdb ${shellWord(kept)}  (or run with --drop-old)`)
  }
  return { postgres: { status: 'restored', database, mode, kept, jobs, rolesCreated }, checks }
}

