import { createHash, type Hash } from 'node:crypto'
import { BLOCK, checksumOk, describe, numeric, padded, parsePax, TarFormatError, type TarMember } from './tar-header.ts'

export { TarFormatError, type MemberType, type TarMember } from './tar-header.ts'

const ZEROS = Buffer.alloc(1024 * 1024)

/**
 * A streaming reader of the POSIX (pax) tar that GNU tar writes, for the
 * two places where the archive passes through this process: at backup,
 * to hash every file from the very bytes that go into the archive (one
 * read of each file) and to drop special files; at restore, to check each
 * member against the index before tar -x ever sees it. It understands
 * ustar headers, pax extended headers and GNU sparse format 1.0, which is
 * what `tar --format=posix --sparse` produces; anything else is reported
 * as type 'other'.
 */

export type Decision = 'pass' | 'drop'

export interface ScanHandlers {
  /** Before any byte of the member is passed on: 'drop' leaves it (and its pax header) out of the output; throwing stops the scan. */
  header(member: TarMember): Decision | Promise<Decision>
  /** After its last byte; `sha256` is the hex digest of a regular file's logical content, null for other types. */
  end(member: TarMember, sha256: string | null): void | Promise<void>
  /** Every byte that is passed on, in order; the promise is backpressure. */
  write(chunk: Buffer): Promise<void>
  /** Deliver everything before a member to write() before header() is asked about it (header() switches where bytes go). */
  flushBeforeHeader?: boolean
  /**
   * Leave out the zero padding after the end-of-archive marker (checked all the same): `tar -x`
   * stops reading at the marker, and a writer still holding up to a 1 MiB record of padding
   * (lib/files/archive.ts) gets EPIPE. The backup stores archives without it; a restore of an
   * older, padded one does not pass it on.
   */
  dropPadding?: boolean
}

/**
 * Reads `input` to its end-of-archive marker, calling `handlers` for each
 * member and passing through the bytes of every member it keeps. Bytes
 * after the end-of-archive marker must be zero padding.
 */
export async function scanTar(input: AsyncIterable<Buffer>, handlers: ScanHandlers): Promise<void> {
  const scanner = new Scanner(handlers)
  for await (const chunk of input) await scanner.push(chunk)
  scanner.finish()
}

type State =
  | { kind: 'header' }
  | { kind: 'pax'; left: number; global: boolean }
  | { kind: 'data'; member: TarMember; left: number; pad: number; pass: boolean; hash: Hash | null; sparse: SparseState | null }
  | { kind: 'trailer' }

interface SparseState {
  /** The map comes first in the data (decimal lines: count, then offset/size pairs), padded to a block. */
  phase: 'map' | 'skip' | 'data'
  mapParts: Buffer[]
  /** Map padding still to skip. */
  skip: number
  segments: { offset: number; size: number }[]
  index: number
  /** Bytes of the current segment still to come, and the logical position hashed so far. */
  segLeft: number
  pos: number
  realSize: number
}

/** The segments and the bytes the map occupies (padded), or null while it is incomplete. */
function parseSparseMap(text: Buffer, path: string): { segments: { offset: number; size: number }[]; bytes: number } | null {
  const lines = text.toString('latin1').split('\n')
  const count = Number(lines[0])
  if (lines.length < 2) return null
  if (!Number.isSafeInteger(count) || count < 0) throw new TarFormatError(`bad sparse map in ${path}`)
  if (lines.length < 2 + 2 * count) return null
  const numbers = lines.slice(1, 1 + 2 * count).map(Number)
  if (numbers.some((n) => !Number.isSafeInteger(n) || n < 0)) throw new TarFormatError(`bad sparse map in ${path}`)
  const segments = []
  for (let i = 0; i < count; i++) segments.push({ offset: numbers[2 * i]!, size: numbers[2 * i + 1]! })
  return { segments, bytes: padded(lines.slice(0, 1 + 2 * count).join('\n').length + 1) }
}

class Scanner {
  private state: State = { kind: 'header' }
  private pending: Buffer = Buffer.alloc(0)
  private pax = new Map<string, string>()
  private readonly global = new Map<string, string>()
  /** Raw pax blocks, passed on or dropped together with the member they describe. */
  private paxRaw: Buffer[] = []
  private zeroBlocks = 0

  constructor(private readonly h: ScanHandlers) {}

  /**
   * Output is gathered and written once per input chunk: a write per
   * header, data run and padding (five per small file) cost more than the
   * hashing when the archive passed through here.
   */
  private out: Buffer[] = []

  private emit(bytes: Buffer): void {
    if (bytes.length > 0) this.out.push(bytes)
  }

  private async flush(): Promise<void> {
    if (this.out.length === 0) return
    const bytes = this.out.length === 1 ? this.out[0]! : Buffer.concat(this.out)
    this.out = []
    await this.h.write(bytes)
  }

  async push(chunk: Buffer): Promise<void> {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk
    this.pending = Buffer.alloc(0)
    while (buf.length > 0) {
      const used = await this.step(buf)
      if (used === 0) {
        this.pending = Buffer.from(buf)
        break
      }
      buf = buf.subarray(used)
    }
    await this.flush()
  }

  finish(): void {
    if (this.pending.length > 0 || this.state.kind !== 'trailer') {
      throw new TarFormatError(this.state.kind === 'data' ? `the archive ends inside ${this.state.member.path}` : 'the archive ends without its end-of-archive marker')
    }
  }

  /** Consumes a prefix of `buf`; 0 means more bytes are needed first. */
  private async step(buf: Buffer): Promise<number> {
    const state = this.state
    switch (state.kind) {
      case 'trailer': {
        if (buf.some((b) => b !== 0)) throw new TarFormatError('data after the end-of-archive marker')
        if (!this.h.dropPadding) this.emit(buf)
        return buf.length
      }
      case 'header':
        return this.header(buf)
      case 'pax': {
        // A pax header is small; it is collected whole before it is parsed.
        const total = padded(state.left)
        if (buf.length < total) return 0
        const block = buf.subarray(0, total)
        const records = parsePax(block.subarray(0, state.left))
        for (const [k, v] of records) (state.global ? this.global : this.pax).set(k, v)
        if (state.global) this.emit(block)
        else this.paxRaw.push(Buffer.from(block))
        this.state = { kind: 'header' }
        return total
      }
      case 'data':
        return this.data(state, buf)
    }
  }

  private async header(buf: Buffer): Promise<number> {
    if (buf.length < BLOCK) return 0
    const header = buf.subarray(0, BLOCK)
    if (header.every((b) => b === 0)) {
      this.zeroBlocks++
      this.emit(header)
      if (this.zeroBlocks === 2) {
        if (this.paxRaw.length > 0) throw new TarFormatError('a pax header without its member')
        this.state = { kind: 'trailer' }
      }
      return BLOCK
    }
    if (this.zeroBlocks > 0) throw new TarFormatError('a lone zero block inside the archive')
    if (!checksumOk(header)) throw new TarFormatError('a header fails its checksum: not a tar archive, or damaged')
    const flag = String.fromCharCode(header[156]!)
    if (flag === 'x' || flag === 'g') {
      const size = numeric(header, 124, 12)
      if (size > 16 * 1024 * 1024) throw new TarFormatError('an oversized pax header')
      if (flag === 'g') this.emit(header)
      else this.paxRaw.push(Buffer.from(header))
      this.state = { kind: 'pax', left: size, global: flag === 'g' }
      return BLOCK
    }
    const { member, stored } = describe(header, this.pax, this.global)
    if (this.h.flushBeforeHeader) await this.flush()
    const decision = await this.h.header(member)
    const pass = decision === 'pass'
    if (pass) {
      for (const raw of this.paxRaw) this.emit(raw)
      this.emit(header)
    }
    this.paxRaw = []
    this.pax = new Map()
    // Hardlinks, symlinks and directories carry no content (GNU tar writes size 0 for them).
    const hasContent = member.type === 'file' || member.type === 'other'
    const left = hasContent ? stored : 0
    const hash = member.type === 'file' ? createHash('sha256') : null
    const sparse: SparseState | null = member.sparse && hash
      ? { phase: 'map', mapParts: [], skip: 0, segments: [], index: -1, segLeft: 0, pos: 0, realSize: member.size }
      : null
    this.state = { kind: 'data', member, left, pad: padded(left) - left, pass, hash, sparse }
    if (left === 0) {
      await this.endMember()
      this.state = { kind: 'header' }
    }
    return BLOCK
  }

  private async data(state: Extract<State, { kind: 'data' }>, buf: Buffer): Promise<number> {
    if (state.left === 0) {
      // Only padding remains.
      const take = Math.min(state.pad, buf.length)
      if (state.pass) this.emit(buf.subarray(0, take))
      state.pad -= take
      if (state.pad === 0) this.state = { kind: 'header' }
      return take
    }
    const take = Math.min(state.left, buf.length)
    const part = buf.subarray(0, take)
    if (state.sparse) this.hashSparse(state, state.sparse, part)
    else state.hash?.update(part)
    if (state.pass) this.emit(part)
    state.left -= take
    if (state.left === 0) {
      await this.endMember()
      if (state.pad === 0) this.state = { kind: 'header' }
    }
    return take
  }

  private hashSparse(state: Extract<State, { kind: 'data' }>, sp: SparseState, part: Buffer): void {
    const hash = state.hash!
    let off = 0
    while (off < part.length) {
      if (sp.phase === 'map') {
        const rest = part.subarray(off)
        sp.mapParts.push(Buffer.from(rest))
        const text = Buffer.concat(sp.mapParts)
        const map = parseSparseMap(text, state.member.path)
        if (!map) {
          if (text.length > 1024 * 1024) throw new TarFormatError(`a sparse map that never ends in ${state.member.path}`)
          return
        }
        sp.mapParts = []
        sp.segments = map.segments
        const endInRest = map.bytes - (text.length - rest.length)
        if (endInRest > rest.length) {
          sp.phase = 'skip'
          sp.skip = endInRest - rest.length
          return
        }
        off += endInRest
        sp.phase = 'data'
        continue
      }
      if (sp.phase === 'skip') {
        const n = Math.min(sp.skip, part.length - off)
        off += n
        sp.skip -= n
        if (sp.skip === 0) sp.phase = 'data'
        continue
      }
      while (sp.segLeft === 0) {
        sp.index++
        if (sp.index >= sp.segments.length) throw new TarFormatError(`more data than the sparse map of ${state.member.path} describes`)
        this.zeroFill(hash, sp, sp.segments[sp.index]!.offset)
        sp.segLeft = sp.segments[sp.index]!.size
      }
      const n = Math.min(sp.segLeft, part.length - off)
      hash.update(part.subarray(off, off + n))
      sp.pos += n
      sp.segLeft -= n
      off += n
    }
  }

  /** Hashes the hole up to logical offset `to`. */
  private zeroFill(hash: Hash, sp: SparseState, to: number): void {
    if (to < sp.pos) throw new TarFormatError('a sparse map out of order')
    while (sp.pos < to) {
      const n = Math.min(ZEROS.length, to - sp.pos)
      hash.update(ZEROS.subarray(0, n))
      sp.pos += n
    }
  }

  private async endMember(): Promise<void> {
    const state = this.state as Extract<State, { kind: 'data' }>
    const sp = state.sparse
    if (sp) {
      if (sp.phase !== 'data' || sp.segLeft !== 0) throw new TarFormatError(`the sparse data of ${state.member.path} is cut short`)
      // Trailing segments of size 0 (GNU tar ends the map with one) and the final hole.
      while (sp.index + 1 < sp.segments.length) {
        sp.index++
        this.zeroFill(state.hash!, sp, sp.segments[sp.index]!.offset)
        if (sp.segments[sp.index]!.size !== 0) throw new TarFormatError(`the sparse data of ${state.member.path} is cut short`)
      }
      this.zeroFill(state.hash!, sp, sp.realSize)
    }
    await this.h.end(state.member, state.hash ? state.hash.digest('hex') : null)
  }
}
