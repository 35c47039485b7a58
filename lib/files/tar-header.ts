/**
 * The header half of reading a POSIX (pax) tar as GNU tar writes it:
 * ustar header fields, pax extended records, names kept byte for byte.
 * tar-scan.ts streams members with these.
 */
export type MemberType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo' | 'chardev' | 'blockdev' | 'other'

export interface TarMember {
  /** As stored: relative, '/'-separated, no trailing slash. */
  path: string
  type: MemberType
  /** Permission bits including setuid/setgid/sticky. */
  mode: number
  /** Logical size of a regular file's content (a sparse file's real size); 0 for the rest. */
  size: number
  /** Seconds since the epoch as tar recorded them: "1700000000.123456789" or "1700000000". */
  mtime: string
  uid: number
  gid: number
  /** Target of a symlink or hardlink. */
  link?: string
  sparse: boolean
  /**
   * The name's bytes when they are not UTF-8 (any byte but NUL and '/' is a
   * legal file name): `path` then shows them as U+FFFD, and the file system
   * is addressed with these bytes.
   */
  rawPath?: Buffer
  rawLink?: Buffer
}

export class TarFormatError extends Error {}

export const BLOCK = 512

export function typeOf(flag: string): MemberType {
  switch (flag) {
    case '0':
    case '\0':
    case '7':
      return 'file'
    case '1':
      return 'hardlink'
    case '2':
      return 'symlink'
    case '3':
      return 'chardev'
    case '4':
      return 'blockdev'
    case '5':
      return 'dir'
    case '6':
      return 'fifo'
    default:
      return 'other'
  }
}

export function cBytes(buf: Buffer, start: number, length: number): Buffer {
  const field = buf.subarray(start, start + length)
  const nul = field.indexOf(0)
  return field.subarray(0, nul === -1 ? length : nul)
}

export function cString(buf: Buffer, start: number, length: number): string {
  const field = buf.subarray(start, start + length)
  const nul = field.indexOf(0)
  return field.subarray(0, nul === -1 ? length : nul).toString('utf8')
}

/** Octal, or GNU's base-256 for values that do not fit. */
export function numeric(buf: Buffer, start: number, length: number): number {
  const field = buf.subarray(start, start + length)
  if (field[0]! & 0x80) {
    let value = field[0]! & 0x7f
    for (let i = 1; i < length; i++) value = value * 256 + field[i]!
    return value
  }
  const text = cString(buf, start, length).trim()
  if (text === '') return 0
  if (!/^[0-7]+$/.test(text)) throw new TarFormatError(`bad numeric field ${JSON.stringify(text)}`)
  return parseInt(text, 8)
}

export function checksumOk(header: Buffer): boolean {
  let sum = 0
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!
  return sum === numeric(header, 148, 8)
}

/** "%d key=value\n" records. Values are kept byte for byte (as latin1 strings): a path need not be UTF-8. */
export function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>()
  let pos = 0
  while (pos < data.length) {
    if (data[pos] === 0) break
    const space = data.indexOf(0x20, pos)
    if (space === -1) throw new TarFormatError('bad pax record')
    const length = Number(data.subarray(pos, space).toString('ascii'))
    if (!Number.isSafeInteger(length) || length <= space - pos || pos + length > data.length) throw new TarFormatError('bad pax record length')
    const record = data.subarray(space + 1, pos + length - 1) // without the trailing newline
    const eq = record.indexOf(0x3d)
    if (eq === -1 || data[pos + length - 1] !== 0x0a) throw new TarFormatError('bad pax record')
    records.set(record.subarray(0, eq).toString('utf8'), record.subarray(eq + 1).toString('latin1'))
    pos += length
  }
  return records
}

export const padded = (n: number) => Math.ceil(n / BLOCK) * BLOCK

/** A name as the file system has it: text when it is UTF-8, and its bytes as well when it is not. */
export function decodeName(bytes: Buffer): { text: string; raw?: Buffer } {
  const text = bytes.toString('utf8')
  return Buffer.byteLength(text) === bytes.length && Buffer.from(text).equals(bytes) ? { text } : { text, raw: Buffer.from(bytes) }
}

/** The only sparse encoding tar --format=posix --sparse writes (1.0): its keys. */
const SPARSE_1_0 = new Set(['GNU.sparse.major', 'GNU.sparse.minor', 'GNU.sparse.name', 'GNU.sparse.realsize'])

/**
 * Whether a member is sparse (format 1.0, whose map leads its data).
 * GNU tar also extracts the older pax encodings (0.0, 0.1: the map in the
 * header) and old-GNU 'S' members as sparse; their stored bytes are not
 * the file's content, so a hash of them would vouch for a file tar writes
 * differently. None of them is produced here, so each is refused.
 */
function sparseFormat(pax: Map<string, string>, global: Map<string, string>, flag: string): boolean {
  if (flag === 'S') throw new TarFormatError('an old GNU sparse member, which this tool never writes')
  let any = false
  for (const records of [pax, global]) {
    for (const key of records.keys()) {
      if (!key.startsWith('GNU.sparse.')) continue
      if (!SPARSE_1_0.has(key) || records === global) throw new TarFormatError(`an unsupported sparse encoding (${key})`)
      any = true
    }
  }
  if (!any) return false
  if (pax.get('GNU.sparse.major') !== '1' || pax.get('GNU.sparse.minor') !== '0') throw new TarFormatError('an unsupported sparse encoding (not 1.0)')
  return true
}

export function describe(header: Buffer, pax: Map<string, string>, global: Map<string, string>): { member: TarMember; stored: number } {
  const get = (key: string) => pax.get(key) ?? global.get(key)
  const bytesOf = (key: string) => {
    const v = get(key)
    return v === undefined ? undefined : Buffer.from(v, 'latin1')
  }
  const flag = String.fromCharCode(header[156]!)
  const prefix = cBytes(header, 345, 155)
  const name = cBytes(header, 0, 100)
  const ustarPath = cString(header, 257, 6) === 'ustar' && prefix.length > 0 ? Buffer.concat([prefix, Buffer.from('/'), name]) : name
  const sparse = sparseFormat(pax, global, flag)
  let pathBytes = (sparse ? bytesOf('GNU.sparse.name') : undefined) ?? bytesOf('path') ?? ustarPath
  while (pathBytes.length > 0 && pathBytes[pathBytes.length - 1] === 0x2f) pathBytes = pathBytes.subarray(0, -1)
  const decoded = decodeName(pathBytes)
  const path = decoded.text
  const num = (key: string, fallback: number) => {
    const value = get(key)
    if (value === undefined) return fallback
    const n = Number(value)
    if (!Number.isSafeInteger(n) || n < 0) throw new TarFormatError(`bad pax ${key} ${JSON.stringify(value)}`)
    return n
  }
  const stored = num('size', numeric(header, 124, 12))
  const type = typeOf(flag)
  const mtime = get('mtime') ?? String(numeric(header, 136, 12))
  if (!/^-?\d+(\.\d+)?$/.test(mtime)) throw new TarFormatError(`bad mtime ${JSON.stringify(mtime)}`)
  const member: TarMember = {
    path,
    type,
    mode: numeric(header, 100, 8) & 0o7777,
    size: type === 'file' ? (sparse ? num('GNU.sparse.realsize', 0) : stored) : 0,
    mtime,
    uid: num('uid', numeric(header, 108, 8)),
    gid: num('gid', numeric(header, 116, 8)),
    sparse: type === 'file' && sparse,
  }
  if (decoded.raw) member.rawPath = decoded.raw
  if (type === 'symlink' || type === 'hardlink') {
    const link = decodeName(bytesOf('linkpath') ?? cBytes(header, 157, 100))
    member.link = link.text
    if (link.raw) member.rawLink = link.raw
  }
  return { member, stored }
}

