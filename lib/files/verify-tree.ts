import { createHash } from 'node:crypto'
import { lstat, open, readlink } from 'node:fs/promises'
import { READ_CHUNK } from '../pipeline/checksum.ts'
import { join } from 'node:path'
import { verificationError } from '../cli/errors.ts'
import { nameBytes, type IndexEntry } from './file-index.ts'
import type { RootPlan } from './restore-plan.ts'
import { PathGuard } from './safe-paths.ts'

/** "1700000000.5" → 1700000000500000000n: exact, no floating point. */
export function mtimeNs(mtime: string): bigint {
  const negative = mtime.startsWith('-')
  const [whole, frac = ''] = (negative ? mtime.slice(1) : mtime).split('.')
  const ns = BigInt(whole!) * 1_000_000_000n + BigInt((frac + '000000000').slice(0, 9))
  return negative ? -ns : ns
}

/** Where an index entry lands inside its root's staging directory. */
export function stagedPath(plan: RootPlan, entryPath: string): string {
  const base = plan.member.split('/').pop()!
  return join(plan.staging, base, ...entryPath.slice(plan.member.length).split('/').filter((p) => p !== ''))
}

/** The same, as the bytes the file system knows it by: a name need not be UTF-8. */
export function stagedBytes(plan: RootPlan, name: Buffer): Buffer {
  const base = plan.member.split('/').pop()!
  return Buffer.concat([Buffer.from(join(plan.staging, base)), name.subarray(Buffer.byteLength(plan.member))])
}

/** Where an index entry lands in staging, as text when its name is UTF-8 and as bytes when it is not. */
export function stagedName(plan: RootPlan, entry: Pick<IndexEntry, 'path' | 'pathBytes'>): string | Buffer {
  return entry.pathBytes === undefined ? stagedPath(plan, entry.path) : stagedBytes(plan, nameBytes(entry.path, entry.pathBytes))
}

/** Read buffers reused across files: allocating one per file (thousands of small ones) kept the GC busy. */
const spare: Buffer[] = []

async function sha256Of(path: string | Buffer): Promise<string> {
  const hash = createHash('sha256')
  const buf = spare.pop() ?? Buffer.allocUnsafe(READ_CHUNK)
  const handle = await open(path, 'r')
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, buf.length, null)
      if (bytesRead === 0) break
      hash.update(buf.subarray(0, bytesRead))
    }
  } finally {
    await handle.close()
    spare.push(buf)
  }
  return hash.digest('hex')
}

/** Entries checked at once: lstat and readlink are latency-bound, not bandwidth-bound. */
const CONCURRENCY = 4

const mismatch = (path: string, what: string) =>
  verificationError(`restored ${JSON.stringify(path)} does not match the index (${what}); nothing was moved into place`, 'check the disk and free space beside the destination, then restore again')

/**
 * Compares every restored entry in the staging directories with the
 * index: type, permission bits, size, mtime to the nanosecond, owner
 * (when running as root), symlink target and hardlink identity. A
 * regular file's content was hashed as tar received it (extractArchive),
 * so it is not read again; a hardlink across two paths, restored as a
 * copy, is compared byte for byte with its source.
 */
export async function verifyStaged(plans: readonly RootPlan[], entries: AsyncIterable<IndexEntry>, onProgress: (bytes: number) => void): Promise<{ entries: number; bytes: number }> {
  const guard = new PathGuard(plans.map((p) => p.root))
  let count = 0
  let bytes = 0
  let failure: unknown
  const inFlight = new Set<Promise<void>>()
  for await (const entry of entries) {
    if (failure !== undefined) break
    // In index order: the guard's view of planted symlinks depends on it. The reads may overlap.
    const verdict = guard.check(entry)
    if ('refused' in verdict) {
      failure = verificationError(`the file index is refused: ${verdict.refused}`, 'the artifact is damaged or was tampered with; use another backup')
      break
    }
    const task: Promise<void> = checkEntry(plans, entry, verdict).then(
      (size) => {
        count++
        if (entry.type === 'file') {
          bytes += size
          onProgress(bytes)
        }
      },
      (err: unknown) => {
        failure ??= err
      },
    )
    const tracked = task.finally(() => inFlight.delete(tracked))
    inFlight.add(tracked)
    if (inFlight.size >= CONCURRENCY) await Promise.race(inFlight)
  }
  await Promise.all(inFlight)
  if (failure !== undefined) throw failure
  return { entries: count, bytes }
}

/** One staged entry looked at (lstat, readlink) and compared; resolves with a regular file's size. */
async function checkEntry(plans: readonly RootPlan[], entry: IndexEntry, verdict: { root: number; linkRoot?: number }): Promise<number> {
  const asRoot = process.getuid?.() === 0
  const plan = plans[verdict.root]!
  const path = stagedName(plan, entry)
  let st
  try {
    st = await lstat(path, { bigint: true })
  } catch {
    throw mismatch(entry.path, 'missing')
  }
  const type = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other'
  const expectedType = entry.type === 'hardlink' ? 'file' : entry.type
  if (type !== expectedType) throw mismatch(entry.path, `a ${type}, not a ${expectedType}`)
  if (entry.type !== 'symlink') {
    // Without root, tar cannot give files away or keep setuid bits: compare what it can set.
    const modeMask = asRoot ? 0o7777 : 0o777
    if ((Number(st.mode) & modeMask) !== (entry.mode & modeMask) && entry.type !== 'hardlink') throw mismatch(entry.path, 'mode')
    if (asRoot && (Number(st.uid) !== entry.uid || Number(st.gid) !== entry.gid) && entry.type !== 'hardlink') throw mismatch(entry.path, 'owner')
  }
  if (entry.type === 'symlink') {
    if (!(await readlink(path, { encoding: 'buffer' })).equals(nameBytes(entry.link!, entry.linkBytes))) throw mismatch(entry.path, 'link target')
  } else if (entry.type === 'hardlink' && verdict.linkRoot !== undefined) {
    // Linked across two backed-up paths: restored as a copy, so the content must match.
    const from = stagedBytes(plans[verdict.linkRoot]!, nameBytes(entry.link!, entry.linkBytes))
    if ((await sha256Of(path)) !== (await sha256Of(from))) throw mismatch(entry.path, `content differs from ${JSON.stringify(entry.link)}`)
  } else if (entry.type === 'hardlink') {
    const target = await lstat(stagedBytes(plan, nameBytes(entry.link!, entry.linkBytes)), { bigint: true }).catch(() => null)
    if (!target || target.ino !== st.ino || target.dev !== st.dev) throw mismatch(entry.path, `not linked to ${JSON.stringify(entry.link)}`)
  } else {
    if (st.mtimeNs !== mtimeNs(entry.mtime)) throw mismatch(entry.path, 'mtime')
    if (entry.type === 'file') {
      if (Number(st.size) !== entry.size) throw mismatch(entry.path, 'size')
      return entry.size
    }
  }
  return 0
}
