import { verificationError } from '../cli/errors.ts'
import type { MemberType, TarMember } from './tar-scan.ts'

/**
 * The file index: one JSON line per archive member, in archive order,
 * after a header line. It is what a restore checks the archive and then
 * the restored files against, so every field is validated on read.
 */
export const INDEX_FORMAT = 'conductor-file-index'
export const INDEX_VERSION = 1

export type EntryType = Extract<MemberType, 'file' | 'dir' | 'symlink' | 'hardlink'>
const ENTRY_TYPES: readonly string[] = ['file', 'dir', 'symlink', 'hardlink']

/** One archive member as the index records it: what tar stored, and the content's SHA-256 for a regular file. */
export type IndexEntry = Omit<TarMember, 'type' | 'sparse' | 'rawPath' | 'rawLink'> & {
  type: EntryType
  /** SHA-256 of a regular file's content, from the bytes that went into the archive. */
  sha256?: string
  /** Base64 of the name's bytes, present only when they are not UTF-8 (`path` shows them as U+FFFD). */
  pathBytes?: string
  linkBytes?: string
}

/** The bytes that name an entry (or its link target) on the file system. */
export function nameBytes(text: string, base64: string | undefined): Buffer {
  return base64 === undefined ? Buffer.from(text) : Buffer.from(base64, 'base64')
}

export function indexHeader(): string {
  return JSON.stringify({ format: INDEX_FORMAT, version: INDEX_VERSION }) + '\n'
}

export function entryFromMember(member: TarMember, sha256: string | null): IndexEntry {
  const entry: IndexEntry = {
    path: member.path,
    type: member.type as EntryType,
    mode: member.mode,
    size: member.size,
    mtime: member.mtime,
    uid: member.uid,
    gid: member.gid,
  }
  if (member.link !== undefined) entry.link = member.link
  if (sha256 !== null) entry.sha256 = sha256
  if (member.rawPath) entry.pathBytes = member.rawPath.toString('base64')
  if (member.rawLink) entry.linkBytes = member.rawLink.toString('base64')
  return entry
}

export function serializeEntry(entry: IndexEntry): string {
  return JSON.stringify(entry) + '\n'
}

const damaged = (detail: string) =>
  verificationError(`the file index is malformed: ${detail}`, 'the artifact is damaged or not a Conductor backup; use another backup')

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0

export function parseIndexHeader(line: string): void {
  let raw: unknown
  try {
    raw = JSON.parse(line)
  } catch {
    throw damaged('its first line is not JSON')
  }
  const header = raw as { format?: unknown; version?: unknown }
  if (header?.format !== INDEX_FORMAT) throw damaged(`its first line does not name ${INDEX_FORMAT}`)
  if (header.version !== INDEX_VERSION) {
    throw verificationError(`the file index is version ${String(header.version)}; this tool reads ${INDEX_VERSION}`, 'restore with the tool version named in manifest.json "tool"')
  }
}

export function parseEntry(line: string, lineNo: number): IndexEntry {
  let raw: unknown
  try {
    raw = JSON.parse(line)
  } catch {
    throw damaged(`line ${lineNo} is not JSON`)
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw damaged(`line ${lineNo} is not an object`)
  const e = raw as Record<string, unknown>
  const at = `line ${lineNo}`
  if (typeof e.path !== 'string' || e.path === '') throw damaged(`${at}: path must be a string`)
  if (typeof e.type !== 'string' || !ENTRY_TYPES.includes(e.type)) throw damaged(`${at}: type must be file, dir, symlink or hardlink`)
  if (!isCount(e.mode) || e.mode > 0o7777) throw damaged(`${at}: mode must be permission bits`)
  if (!isCount(e.size)) throw damaged(`${at}: size must be a byte count`)
  if (typeof e.mtime !== 'string' || !/^-?\d+(\.\d{1,9})?$/.test(e.mtime)) throw damaged(`${at}: mtime must be decimal seconds`)
  if (!isCount(e.uid) || !isCount(e.gid)) throw damaged(`${at}: uid and gid must be numbers`)
  const type = e.type as EntryType
  const entry: IndexEntry = { path: e.path, type, mode: e.mode, size: e.size, mtime: e.mtime, uid: e.uid, gid: e.gid }
  if (type === 'symlink' || type === 'hardlink') {
    if (typeof e.link !== 'string' || e.link === '') throw damaged(`${at}: a ${type} needs its target`)
    entry.link = e.link
  } else if (e.link !== undefined) throw damaged(`${at}: only links have a target`)
  for (const key of ['pathBytes', 'linkBytes'] as const) {
    if (e[key] === undefined) continue
    if (typeof e[key] !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(e[key]) || (e[key] as string).length === 0) throw damaged(`${at}: ${key} must be base64`)
    entry[key] = e[key] as string
  }
  if (entry.linkBytes !== undefined && entry.link === undefined) throw damaged(`${at}: linkBytes without a link`)
  if (type === 'file') {
    if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) throw damaged(`${at}: a file needs its SHA-256`)
    entry.sha256 = e.sha256
  } else {
    if (e.sha256 !== undefined) throw damaged(`${at}: only files have a SHA-256`)
    if (e.size !== 0) throw damaged(`${at}: only files have a size`)
  }
  return entry
}

/**
 * The lines of a decrypted index stream, header checked, entries parsed;
 * memory holds one line at a time however many files there are.
 */
export async function* readIndex(lines: AsyncIterable<string>): AsyncGenerator<IndexEntry> {
  let lineNo = 0
  for await (const line of lines) {
    lineNo++
    if (lineNo === 1) {
      parseIndexHeader(line)
      continue
    }
    if (line === '') continue
    yield parseEntry(line, lineNo)
  }
  if (lineNo === 0) throw damaged('it is empty')
}

/** Does an archive member say exactly what its index entry says? The archive is applied only if so. */
export function memberMatches(member: TarMember, entry: IndexEntry): string | undefined {
  if (member.path !== entry.path) return `the archive holds ${JSON.stringify(member.path)} where the index expects ${JSON.stringify(entry.path)}`
  const differs = (what: string) => `${JSON.stringify(entry.path)}: the archive's ${what} differs from the index`
  if (member.type !== entry.type) return differs('type')
  if (member.mode !== entry.mode) return differs('mode')
  if (member.size !== entry.size) return differs('size')
  if (member.mtime !== entry.mtime) return differs('mtime')
  if ((member.link ?? undefined) !== entry.link) return differs('link target')
  if ((member.rawPath?.toString('base64') ?? undefined) !== entry.pathBytes) return differs('name bytes')
  if ((member.rawLink?.toString('base64') ?? undefined) !== entry.linkBytes) return differs('link target bytes')
  return undefined
}
