import { basename } from 'node:path'
import type { FileNote, FilesystemSection } from '../artifact/manifest-tree.ts'
import type { ManifestFile } from '../artifact/manifest.ts'
import { inputError, runtimeError } from '../cli/errors.ts'
import { escapeControl } from '../cli/escape.ts'
import { formatBytes, type Reporter } from '../cli/report.ts'
import { storeEncoded, type Encoding } from '../pipeline/encode.ts'
import { spawnTool } from '../pipeline/spawn.ts'
import { writeAll } from '../pipeline/write-all.ts'
import type { ArtifactWriter } from '../storage/store.ts'
import { entryFromMember, indexHeader, serializeEntry } from './file-index.ts'
import { memberRoot, PATH_MAX } from './safe-paths.ts'
import { scanTar, type TarMember } from './tar-scan.ts'

export const FILES_ARCHIVE = 'files.tar.zst'
export const FILES_INDEX = 'files.index.jsonl'

/** GNU tar, pax format, everything a restore needs to rebuild the tree as it was. */
export const TAR_CREATE_ARGS = [
  '--create',
  '--file=-',
  // 1 MiB records instead of 10 KiB: tar writes its stream in records, and this process reads
  // every one of them (for the index) before zstd does. Reading 1 GiB from tar took 1.5-1.7
  // CPU-seconds with 10 KiB records, 1.0 with 1 MiB. The archive is padded with zeros to a whole
  // record; the scan below leaves that padding out of the stored archive.
  '--blocking-factor=2048',
  '--format=posix',
  '--sparse',
  '--xattrs',
  '--acls',
  '--directory=/',
  // Names come NUL-terminated on stdin, taken literally: no option or wildcard can hide in one.
  '--null',
  '--verbatim-files-from',
  '--files-from=-',
]

/** More notes than this are counted, not listed: a manifest stays small when a log directory churns. */
const NOTE_LIMIT = 1000

const SPECIAL: Partial<Record<TarMember['type'], string>> = {
  fifo: 'named pipe (FIFO)',
  chardev: 'character device',
  blockdev: 'block device',
  other: 'unsupported file type',
}

/** tar's warnings that describe the data, not a failure: "tar: PATH: MESSAGE". */
const NOTES: { re: RegExp; list: 'changed' | 'vanished' | 'skipped' }[] = [
  // GNU tar writes "file changed as we read it" but "File shrank by N bytes; padding with zeros".
  { re: /^tar: (.*): (file changed as we read it|[Ff]ile shrank by \d+ bytes?; padding with zeros)$/, list: 'changed' },
  { re: /^tar: (.*): (File removed before we read it|Cannot (?:stat|open|savedir|readlink): No such file or directory|Directory renamed before its status could be extracted)$/, list: 'vanished' },
  { re: /^tar: (.*): (socket|door) ignored$/, list: 'skipped' },
]

/** Pure: a line of tar's stderr that describes the data (a note), or null for a real error. */
export function tarNote(line: string): { list: 'changed' | 'vanished' | 'skipped'; note: FileNote } | null {
  for (const { re, list } of NOTES) {
    const m = re.exec(line)
    if (m) return { list, note: { path: '/' + m[1]!, reason: m[2]! } }
  }
  return null
}

class TarNotes {
  readonly changed: FileNote[] = []
  readonly vanished: FileNote[] = []
  readonly skipped: FileNote[] = []
  /** Messages that are none of the above: each one makes the backup fail. */
  readonly errors: string[] = []
  omitted = 0
  private partial = ''

  add(list: 'changed' | 'vanished' | 'skipped', note: FileNote): void {
    if (this.changed.length + this.vanished.length + this.skipped.length >= NOTE_LIMIT) this.omitted++
    else this[list].push(note)
  }

  feed(text: string): void {
    const lines = (this.partial + text).split('\n')
    this.partial = lines.pop() ?? ''
    for (const line of lines) this.line(line)
  }

  end(): void {
    if (this.partial) this.line(this.partial)
    this.partial = ''
  }

  private line(line: string): void {
    if (line === '' || /^tar: Exiting with failure status due to previous errors$/.test(line)) return
    const note = tarNote(line)
    if (note) return this.add(note.list, note.note)
    if (this.errors.length < 20) this.errors.push(line)
  }
}

export interface ArchiveResult {
  section: FilesystemSection
  files: ManifestFile[]
}

/**
 * Streams the trees under `roots` into the artifact as one pax archive
 * (tar | zstd [| age]) and writes its index beside it. The archive passes
 * through this process once, on its way from tar to zstd: every regular
 * file is hashed from exactly the bytes archived (one read of each file),
 * and special files are dropped from the stream with a note.
 */
export async function archiveTrees(
  roots: readonly string[],
  writer: ArtifactWriter,
  encoding: Omit<Encoding, 'compress'>,
  env: NodeJS.ProcessEnv,
  reporter: Reporter,
): Promise<ArchiveResult> {
  const notes = new TarNotes()
  const tar = spawnTool('tar', TAR_CREATE_ARGS, {
    env: { ...env, LC_ALL: 'C' }, // tar's messages are matched, so they must be in English
    stdin: 'pipe',
    stdout: 'pipe',
    missing: runtimeError('tar not found on PATH', 'install GNU tar (apt-get install tar)'),
    onStderr: (text) => notes.feed(text),
  })
  tar.stdin!.end(roots.map((r) => memberRoot(r) + '\0').join(''))
  let stored = 0
  const archive = storeEncoded(writer, FILES_ARCHIVE, 'pipe', { ...encoding, compress: true }, env, (bytes) => {
    stored = bytes
  })
  const index = storeEncoded(writer, FILES_INDEX, 'pipe', { ...encoding, compress: false }, env)
  const totals = { entries: 0, regularFiles: 0, bytes: 0 }
  let longPaths = 0
  const longestBase = Math.max(...roots.map((r) => Buffer.byteLength(basename(r))))
  const stopAll = () => {
    tar.kill()
    archive.kill()
    index.kill()
  }
  const scan = (async () => {
    await writeAll(index.stdin!, Buffer.from(indexHeader()))
    await scanTar(tar.stdout!, {
      // The archive ends right after its end-of-archive marker, not padded to tar's 1 MiB record:
      // an earlier release's restore feeds tar -x every byte, and tar stops reading at the marker.
      dropPadding: true,
      header: (member) => {
        // Archived, but tar -x opens it by its whole name: beyond PATH_MAX (4096) no restore can write it.
        // In staging the path gets its root's base name again and a `.NAME.restoring-STAMP-NONCE/` of ~48 bytes.
        if (Buffer.byteLength(member.rawPath ?? member.path) + longestBase + 48 > PATH_MAX && longPaths++ < 10) {
          reporter.warn(`path of ${Buffer.byteLength(member.rawPath ?? member.path)} bytes, too long to restore in place (PATH_MAX is 4096): /${escapeControl(member.path.slice(0, 120))}…`)
        }
        const special = SPECIAL[member.type]
        if (special === undefined) return 'pass'
        notes.add('skipped', { path: escapeControl('/' + member.path), reason: special })
        return 'drop'
      },
      end: async (member, sha256) => {
        if (SPECIAL[member.type] !== undefined) return
        totals.entries++
        if (member.type === 'file') {
          totals.regularFiles++
          totals.bytes += member.size
          reporter.progress('archiving files', totals.bytes)
        }
        await writeAll(index.stdin!, Buffer.from(serializeEntry(entryFromMember(member, sha256))))
      },
      write: (chunk) => writeAll(archive.stdin!, chunk),
    })
    archive.stdin!.end()
    index.stdin!.end()
  })()
  let tarExit: number
  let files: ManifestFile[]
  try {
    ;[, tarExit, ...files] = await Promise.all([scan, tar.exited, archive.done, index.done])
  } catch (err) {
    stopAll()
    throw err
  } finally {
    reporter.endProgress()
  }
  notes.end()
  // 0: all well; 1: some files changed while read (noted); 2: trouble, fatal unless every message was a note.
  if (tarExit !== 0 && notes.errors.length > 0) {
    throw inputError(`cannot archive the files: ${escapeControl(notes.errors[0]!)}${notes.errors.length > 1 ? ` (and ${notes.errors.length - 1} more)` : ''}`, 'run as a user that can read everything under --path, or leave out what it cannot read')
  }
  if (tarExit > 2) throw runtimeError(`tar failed with exit status ${tarExit}`, 'check the tar installation')
  for (const note of notes.changed) reporter.warn(`changed while being read (archived as read): ${note.path}`)
  for (const note of notes.vanished) reporter.warn(`vanished before it could be read (not archived): ${note.path}`)
  for (const note of notes.skipped) reporter.warn(`skipped ${note.reason}: ${note.path}`)
  reporter.line(`files: ${totals.entries} entries, ${totals.regularFiles} files, ${formatBytes(totals.bytes)} → ${formatBytes(stored)} stored`)
  return {
    files,
    section: {
      status: 'archived',
      archive: files[0]!.path,
      index: files[1]!.path,
      format: 'pax',
      compression: 'zstd',
      roots: [...roots],
      ...totals,
      skipped: notes.skipped,
      changed: notes.changed,
      vanished: notes.vanished,
      notesOmitted: notes.omitted,
    },
  }
}
