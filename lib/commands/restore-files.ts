import { randomBytes } from 'node:crypto'
import { dirname } from 'node:path'
import { createDestination, planDestination, removeCreated, type DestinationPlan } from '../artifact/destination.ts'
import type { FilesystemSection } from '../artifact/manifest-tree.ts'
import { isEncrypted } from '../artifact/manifest.ts'
import type { VerifiedArtifact } from '../artifact/verify.ts'
import { DrError, inputError, verificationError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { critical, onInterrupt } from '../cli/signals.ts'
import type { Decoding } from '../pipeline/decode.ts'
import { extractArchive } from '../files/extract.ts'
import { indexEntries } from '../files/index-stream.ts'
import { discardStaging, leftoverStaging, placeRoot, type Placed } from '../files/place.ts'
import { inspectRoots, linkUnderTarget, planRoots, type RootPlan } from '../files/restore-plan.ts'
import { PATH_MAX, PathGuard } from '../files/safe-paths.ts'
import { stagedName, verifyStaged } from '../files/verify-tree.ts'
import type { IndexEntry } from '../files/file-index.ts'

export interface FilesRestoreOptions {
  dryRun: boolean
  /** --target DIR: re-root every path under DIR; undefined: the recorded original locations. */
  target: string | undefined
  env: NodeJS.ProcessEnv
  now: Date
}

export interface RootOutcome {
  root: string
  destination: string
  existing: RootPlan['existing']
  /** Where the previous content is (or would be) kept; null when there was none. */
  keptAside: string | null
}

export type FilesRestoreResult =
  | { status: 'planned'; roots: RootOutcome[]; entries: number; bytes: number }
  | { status: 'restored'; roots: RootOutcome[]; entries: number; bytes: number }

function decodingOf(artifact: VerifiedArtifact, name: string, compression: 'zstd' | undefined, identity: string | undefined): Decoding {
  const encrypted = isEncrypted(artifact.manifest, name)
  return { compression, ...(encrypted ? { identity } : {}) }
}

/**
 * Every index entry checked for escapes, for a staged path the system can
 * name (PATH_MAX), and counted against the manifest's totals: nothing is
 * written yet.
 */
async function checkIndex(entries: AsyncIterable<IndexEntry>, section: FilesystemSection, plans: readonly RootPlan[]): Promise<void> {
  const guard = new PathGuard(section.roots)
  const totals = { entries: 0, regularFiles: 0, bytes: 0 }
  for await (const entry of entries) {
    const verdict = guard.check(entry)
    if ('refused' in verdict) throw verificationError(`the file index is refused, nothing was restored: ${verdict.refused}`, 'the artifact is damaged or was tampered with; use another backup')
    const staged = Buffer.byteLength(stagedName(plans[verdict.root]!, entry))
    if (staged > PATH_MAX) {
      throw inputError(
        `${quoteValue(entry.path.slice(0, 80) + '…')} would be ${staged} bytes long in staging, longer than PATH_MAX (4096); nothing was restored`,
        'restore with a shorter --target, or extract that part by hand (zstd -d < files.tar.zst | tar -x)',
      )
    }
    totals.entries++
    if (entry.type === 'file') {
      totals.regularFiles++
      totals.bytes += entry.size
    }
  }
  if (totals.entries !== section.entries || totals.regularFiles !== section.regularFiles || totals.bytes !== section.bytes) {
    throw verificationError(
      `the file index lists ${totals.entries} entries (${totals.bytes} bytes) but the manifest says ${section.entries} (${section.bytes} bytes)`,
      'the artifact is inconsistent; use another backup',
    )
  }
}

/** --target: no directory between DIR and the destination may be a symlink (restore-plan.ts linkUnderTarget). */
async function refuseLinkUnderTarget(target: string | undefined, plan: RootPlan): Promise<void> {
  if (target === undefined) return
  const link = await linkUnderTarget(target, plan.destination)
  if (link === null) return
  throw inputError(
    `${quoteValue(link)} is a symlink inside --target; restoring ${quoteValue(plan.root)} through it would write outside ${quoteValue(target)}`,
    'remove or rename that link, or choose an empty --target directory',
  )
}

function describePlan(plan: RootPlan): string {
  const into = plan.destination === plan.root ? plan.root : `${plan.root} → ${plan.destination}`
  if (plan.existing === 'none') return `${into} (new)`
  return `${into} (replaces the existing ${plan.existing}, which is kept as ${plan.keepAside})`
}

/** What prepareFilesRestore established: the plan, checked, before anything is written. */
export interface PreparedFiles {
  plans: RootPlan[]
  section: FilesystemSection
  archiveDecoding: Decoding
  indexDecoding: Decoding
  /** The index could be read and its paths were checked (false only in a dry run of an encrypted artifact). */
  indexChecked: boolean
  /** Each destination's parent: the directories to create (0700), checked writable, as backup plans --output. */
  parents: DestinationPlan[]
  /** --target DIR, when given: checked again for links before each move. */
  target: string | undefined
}

/**
 * Everything that can refuse a files restore, done before the restore
 * touches anything (the database included, when both are restored): the
 * destinations are inspected, and every path in the index is checked for
 * escapes and counted against the manifest.
 */
export async function prepareFilesRestore(
  opts: FilesRestoreOptions,
  section: FilesystemSection,
  artifact: VerifiedArtifact,
  identity: string | undefined,
  reporter: Reporter,
): Promise<PreparedFiles> {
  const plans = await inspectRoots(planRoots(section, opts.target, opts.now, randomBytes(4).toString('hex')))
  const archiveDecoding = decodingOf(artifact, section.archive, 'zstd', identity)
  const indexDecoding = decodingOf(artifact, section.index, undefined, identity)
  const parents: DestinationPlan[] = []
  for (const plan of plans) {
    await refuseLinkUnderTarget(opts.target, plan)
    if (plan.existing === 'symlink' || plan.existing === 'other') {
      throw inputError(`${quoteValue(plan.destination)} is a ${plan.existing === 'symlink' ? 'symlink' : 'special file'}; restoring over it is refused`, 'move it away, or restore with --target DIR')
    }
    if (plan.mountPoint) {
      throw inputError(`${quoteValue(plan.destination)} is a mount point; a restore swaps whole directories and cannot move it aside`, 'restore with --target DIR and copy the files in, or unmount it first')
    }
    parents.push(await planDestination(dirname(plan.destination), 'the restore destination'))
    for (const left of await leftoverStaging(plan)) reporter.warn(`leftover staging directory from an interrupted restore: ${quoteValue(left)} (not used; once no other restore of this path is running, remove it with rm -rf)`)
  }
  reporter.line(`files: ${section.entries} entries, ${formatBytes(section.bytes)} in ${section.roots.length} path(s)`)
  for (const plan of plans) reporter.line(`files: ${opts.dryRun ? 'would restore' : 'restore'} ${describePlan(plan)}`)
  const encryptedIndex = isEncrypted(artifact.manifest, section.index)
  if (encryptedIndex && indexDecoding.identity === undefined) {
    reporter.line('files: the index is encrypted; its paths are checked with the key, before anything is written')
    return { plans, section, archiveDecoding, indexDecoding, indexChecked: false, parents, target: opts.target }
  }
  await checkIndex(indexEntries(artifact.files.get(section.index)!, indexDecoding, opts.env), section, plans)
  reporter.line('files: every path in the index stays inside its destination')
  return { plans, section, archiveDecoding, indexDecoding, indexChecked: true, parents, target: opts.target }
}

const outcome = (plan: RootPlan, placed?: Placed): RootOutcome => ({
  root: plan.root,
  destination: plan.destination,
  existing: plan.existing,
  keptAside: placed ? placed.keptAside : plan.existing === 'none' ? null : plan.keepAside,
})

export function plannedFiles(prepared: PreparedFiles): FilesRestoreResult {
  return { status: 'planned', roots: prepared.plans.map((p) => outcome(p)), entries: prepared.section.entries, bytes: prepared.section.bytes }
}

/** Files extracted and verified in their staging directories, waiting to be moved into place. */
export interface StagedFiles {
  prepared: PreparedFiles
  entries: number
  bytes: number
  /** Removes the staging directories, and the parents made for them while still empty (a later step failed); nothing else was touched. */
  discard(): Promise<void>
}

/**
 * RESTORE_FILES=true, first half: every member is checked against the
 * index as it is extracted into staging directories beside the
 * destinations, and every staged file against the index once written.
 * Nothing outside the staging directories changes, so this runs before
 * the database is touched: a damaged archive stops the whole restore.
 */
export async function stageFiles(opts: FilesRestoreOptions, prepared: PreparedFiles, artifact: VerifiedArtifact, reporter: Reporter): Promise<StagedFiles> {
  const { plans, section, archiveDecoding, indexDecoding } = prepared
  const archive = artifact.files.get(section.archive)!
  const index = artifact.files.get(section.index)!
  // Parents made for --target go again with the staging when the restore fails: rmdir stops at
  // the first that is not empty, which after a successful restore is the one holding it.
  const created: string[] = []
  // Never throws: a cleanup that fails must not replace the error that called for it.
  const undo = async () => {
    for (const left of await discardStaging(plans)) reporter.warn(`could not remove the staging directory ${quoteValue(left)}; remove it with rm -rf`)
    await removeCreated(created).catch(() => {})
  }
  const release = onInterrupt(undo)
  const discard = async () => {
    release()
    await undo()
  }
  try {
    for (const parent of prepared.parents) await createDestination(parent, created)
  } catch (err) {
    await discard()
    throw err
  }
  try {
    const entries = indexEntries(index, indexDecoding, opts.env)[Symbol.asyncIterator]()
    await extractArchive(archive, archiveDecoding, plans, entries, opts.env, (bytes) => reporter.progress('extracting files', bytes))
    reporter.endProgress()
    reporter.line("files: extracted into staging, every member as the index lists it and every file's content as the backup hashed it; checking what tar wrote")
    const checked = await verifyStaged(plans, indexEntries(index, indexDecoding, opts.env), (bytes) => reporter.progress('verifying restored files', bytes))
    reporter.endProgress()
    reporter.line(`files: ${checked.entries} entries extracted and verified against the index (${formatBytes(checked.bytes)}), staged beside their destinations`)
    return { prepared, entries: checked.entries, bytes: checked.bytes, discard }
  } catch (err) {
    reporter.endProgress()
    await discard()
    throw err
  }
}

/**
 * Second half: each verified path is swapped in, whatever it replaces
 * kept aside. A failure part-way names what was already swapped in.
 */
export async function placeFiles(staged: StagedFiles, reporter: Reporter): Promise<FilesRestoreResult> {
  const { plans } = staged.prepared
  const placed: Placed[] = []
  try {
    await critical('moving restored files into place', async () => {
      for (const plan of plans) {
        // Again, just before the renames: a link made inside --target since the plan (while the
        // archive was extracted) would carry this move out of DIR.
        await refuseLinkUnderTarget(staged.prepared.target, plan)
        const p = await placeRoot(plan)
        placed.push(p)
        reporter.line(`files: ${p.destination} restored${p.keptAside ? `; what it held is kept as ${p.keptAside}` : ''}`)
      }
    })
    await staged.discard()
    return { status: 'restored', roots: plans.map((p, i) => outcome(p, placed[i])), entries: staged.entries, bytes: staged.bytes }
  } catch (err) {
    await staged.discard()
    if (placed.length > 0 && err instanceof DrError) {
      // Some paths were already swapped in: say which, so the operator knows the state of each.
      throw new DrError(err.kind, `${err.message} (already restored: ${placed.map((p) => p.destination).join(', ')}; the rest were left as they were)`, err.fix, err.details)
    }
    throw err
  }
}
