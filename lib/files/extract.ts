import { constants as fsConstants } from 'node:fs'
import { chmod, chown, copyFile, lstat, mkdir } from 'node:fs/promises'
import { dirname } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { changedAfterVerification, type VerifiedFile } from '../artifact/verified-file.ts'
import { runtimeError, verificationError } from '../cli/errors.ts'
import { oneLine } from '../cli/redact.ts'
import { decodeFailure } from '../crypto/decrypt-check.ts'
import { DigestMismatch, streamOf, verifiedBytes } from '../pipeline/checksum.ts'
import { decoder, type Decoding } from '../pipeline/decode.ts'
import { spawnTool, type Tool } from '../pipeline/spawn.ts'
import { writeAll } from '../pipeline/write-all.ts'
import { memberMatches, type IndexEntry } from './file-index.ts'
import type { RootPlan } from './restore-plan.ts'
import { PathGuard } from './safe-paths.ts'
import { scanTar, TarFormatError, type TarMember } from './tar-scan.ts'
import { stagedBytes, stagedPath } from './verify-tree.ts'

/** tar -x for one root, into its staging directory; the root's leading directories are stripped. */
function extractor(plan: RootPlan, env: NodeJS.ProcessEnv): Tool {
  const strip = plan.member.split('/').length - 1
  const asRoot = process.getuid?.() === 0
  return spawnTool(
    'tar',
    [
      '--extract',
      '--file=-',
      `--directory=${plan.staging}`,
      `--strip-components=${strip}`,
      '--xattrs',
      '--acls',
      '--preserve-permissions',
      // The index records numeric ids; names may map to other ids on a rebuilt host.
      ...(asRoot ? ['--numeric-owner', '--same-owner'] : ['--no-same-owner']),
    ],
    { env: { ...env, LC_ALL: 'C' }, stdin: 'pipe', stdout: 'ignore', missing: runtimeError('tar not found on PATH', 'install GNU tar (apt-get install tar)') },
  )
}

const refused = (why: string) =>
  verificationError(`the file archive is refused, nothing was restored: ${why}`, 'the artifact is damaged or was tampered with; use another backup')

const contentMismatch = (path: string) =>
  verificationError(`${JSON.stringify(path)} does not match the index (content): the archive holds other bytes than the backup hashed; nothing was moved into place`, 'the artifact is damaged or was tampered with; use another backup')

/** An end-of-archive marker for a tar whose members stop here because the next root begins. */
const END_OF_ARCHIVE = Buffer.alloc(1024)

/**
 * Decodes the verified archive and extracts it into each root's staging
 * directory. Every member passes through here first and must be exactly
 * the next entry of the index, inside its root, and not under a symlink
 * planted earlier; anything else stops the extraction before tar sees the
 * member, and the staging directories are discarded by the caller.
 */
export async function extractArchive(
  archive: VerifiedFile,
  decoding: Decoding,
  plans: readonly RootPlan[],
  entries: AsyncIterator<IndexEntry>,
  env: NodeJS.ProcessEnv,
  onProgress: (bytes: number) => void,
): Promise<void> {
  for (const plan of plans) await mkdir(plan.staging, { mode: 0o700 })
  const guard = new PathGuard(plans.map((p) => p.root))
  const unpack = decoder(decoding, env)
  const bytes = verifiedBytes(archive.handle, archive.digest, () => unpack.kill('SIGKILL'), onProgress)
  const fed = pipeline(streamOf(bytes), unpack.stdin!).then(
    () => undefined,
    (err: unknown) => err,
  )
  let current: { index: number; tar: Tool } | null = null
  /** The index entry of the member being passed to tar: its content is hashed on the way and must match. */
  let expected: IndexEntry | null = null
  const crossLinks: { path: string | Buffer; from: string | Buffer; member: TarMember }[] = []
  const finished: Tool[] = []
  const finish = async () => {
    if (!current) return
    const { tar } = current
    current = null
    tar.stdin!.end()
    finished.push(tar)
    const exit = await tar.exited
    if (exit !== 0 && /Cannot hard link|Cannot create symlink|Not a directory|Is a directory/.test(tar.stderr())) {
      // Members that contradict each other (a hardlink to a directory, to nothing archived): a forged archive.
      throw refused(`tar: ${oneLine(tar.stderr())}`)
    }
    if (exit !== 0) {
      const why = oneLine(tar.stderr().replace(/^tar: Exiting with failure status due to previous errors$/m, ''))
      throw runtimeError(`tar could not extract into the staging directory: ${why || `exit status ${exit}`}`, 'check free space and permissions beside the destination')
    }
  }
  const stopAll = () => {
    unpack.kill('SIGKILL')
    current?.tar.kill('SIGKILL')
  }
  try {
    await scanTar(unpack.stdout!, {
      flushBeforeHeader: true,
      dropPadding: true,
      header: async (member) => {
        const next = await entries.next()
        if (next.done) throw refused(`it holds ${JSON.stringify(member.path)}, which is not in the index`)
        const mismatch = memberMatches(member, next.value)
        if (mismatch) throw refused(mismatch)
        expected = next.value
        const verdict = guard.check(member)
        if ('refused' in verdict) throw refused(verdict.refused)
        if (verdict.linkRoot !== undefined) {
          // Linked to a file of another path, which may be on another file system: made a copy after extraction.
          // By their bytes when they are not UTF-8: the decoded text (U+FFFD) names no file.
          const at = (plan: RootPlan, name: string, raw: Buffer | undefined) => (raw ? stagedBytes(plan, raw) : stagedPath(plan, name))
          crossLinks.push({ path: at(plans[verdict.root]!, member.path, member.rawPath), from: at(plans[verdict.linkRoot]!, member.link!, member.rawLink), member })
          return 'drop' as const
        }
        if (current?.index !== verdict.root) {
          if (current) {
            await writeAll(current.tar.stdin!, END_OF_ARCHIVE)
            await finish()
          }
          current = { index: verdict.root, tar: extractor(plans[verdict.root]!, env) }
        }
        return 'pass' as const
      },
      end: (member, sha256) => {
        // The bytes tar was given are the bytes hashed at backup (BorgBackup's check on extract):
        // a mismatch stops the restore here, before anything moves into place.
        if (member.type === 'file' && sha256 !== expected?.sha256) throw contentMismatch(member.path)
      },
      write: async (chunk) => {
        if (!current) throw refused('it starts with data that belongs to no member')
        await writeAll(current.tar.stdin!, chunk)
      },
    })
    await finish()
    for (const link of crossLinks) {
      await copyLinked(link.from, link.path, link.member).catch((err: unknown) => {
        throw refused(`the hardlink ${JSON.stringify(link.member.path)} points at ${JSON.stringify(link.member.link)}, which is not a restored file (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
      })
    }
    const rest = await entries.next()
    if (!rest.done) throw refused(`the index lists ${JSON.stringify(rest.value.path)}, which is not in the archive`)
  } catch (err) {
    stopAll()
    const [feedError, exit] = await Promise.all([fed, unpack.exited])
    // Root causes first: bytes changed after verification, then a key or cipher failure.
    if (feedError instanceof DigestMismatch) throw changedAfterVerification(archive.name, 'nothing was restored')
    // Killed (9) or cut off (SIGPIPE, 13) because we stopped reading: not the decoder's failure.
    if (exit !== 0 && exit !== 128 + 9 && exit !== 128 + 13) throw decodeFailure(unpack.stderr(), archive.name, decoding, exit)
    if (err instanceof TarFormatError) throw refused(err.message)
    throw err
  }
  const [feedError, exit] = await Promise.all([fed, unpack.exited])
  if (feedError instanceof DigestMismatch) throw changedAfterVerification(archive.name, 'nothing was restored')
  if (exit !== 0) throw decodeFailure(unpack.stderr(), archive.name, decoding, exit)
  if (feedError) throw feedError
}

/** The directory part of a path given as text or as bytes (a name need not be UTF-8). */
function parentOf(path: string | Buffer): string | Buffer {
  if (typeof path === 'string') return dirname(path)
  const cut = path.lastIndexOf(0x2f)
  return cut <= 0 ? Buffer.from('/') : path.subarray(0, cut)
}

/**
 * A hardlink between two backed-up paths becomes a copy with the link's
 * metadata; the directory it lands in keeps the times tar gave it.
 */
async function copyLinked(from: string | Buffer, to: string | Buffer, member: TarMember): Promise<void> {
  if (!(await lstat(from)).isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOTFILE' })
  const parent = await lstat(parentOf(to), { bigint: true })
  await copyFile(from, to, fsConstants.COPYFILE_EXCL)
  if (process.getuid?.() === 0) await chown(to, member.uid, member.gid)
  await chmod(to, member.mode)
  // Nanosecond times, as tar sets them: utimes(2) from Node rounds to a double.
  await setMtime(to, member.mtime)
  await setMtime(parentOf(to), `${parent.mtimeNs / 1_000_000_000n}.${String(parent.mtimeNs % 1_000_000_000n).padStart(9, '0')}`)
}

/** touch -h -m, the path passed NUL-terminated on stdin through xargs -0: any bytes, never an option. */
async function setMtime(path: string | Buffer, mtime: string): Promise<void> {
  const touch = spawnTool('xargs', ['-0', '-r', 'touch', '-h', '-m', '-d', `@${mtime}`, '--'], {
    env: { ...process.env, LC_ALL: 'C' },
    stdin: 'pipe',
    stdout: 'ignore',
    missing: runtimeError('xargs not found on PATH', 'install findutils'),
  })
  touch.stdin!.end(Buffer.concat([typeof path === 'string' ? Buffer.from(path) : path, Buffer.from([0])]))
  const exit = await touch.exited
  if (exit !== 0) throw runtimeError(`cannot set the time of ${String(path)}: ${oneLine(touch.stderr())}`, 'check permissions in the staging directory')
}
