/**
 * Data offsets for a staged custom-format dump. pg_dump writing to a pipe
 * (ours goes to zstd) cannot go back to record where each table's data
 * starts, so every `pg_restore --jobs` worker has to walk the archive
 * chunk by chunk to find its table: one chunk per row, millions of them
 * for a big table. Measured on the 1 GiB benchmark database on 2 cores:
 * pg_restore -j2 of the same dump took 5.7 s with offsets and 6.7-9.7 s
 * without (a directory-format dump: 7.0-8.3 s).
 *
 * So while the verified dump is staged, its data blocks are located
 * (BlockWalker) and the offsets are written into the staged copy's table
 * of contents (offsetPatches), in the very fields pg_dump fills when it
 * writes to a file. Only those fields change: every statement and every
 * row pg_restore reads are the verified bytes, and pg_restore itself
 * checks that the block it finds at an offset has the entry's id.
 * Anything this code does not recognise (another archive version, an
 * unexpected layout) means no offsets: the restore works as before.
 */

/** The archive versions whose layout this reads: 1.14 is pg_dump 12 to 15. */
const SUPPORTED = new Set(['1.14'])
const OFFSET_NOT_SET = 1
const OFFSET_SET = 2
const BLK_DATA = 1
const BLK_BLOBS = 3

export interface TocLayout {
  intSize: number
  offSize: number
  /** Where, in the file, each entry still waiting for an offset has its offset field (flag byte first). */
  fields: Map<number, number>
  /** Where the first data block starts. */
  dataStart: number
}

class Short extends Error {}

/** Reads pg_dump's integers and strings from the start of an archive (pg_backup_archiver.c's ReadInt/ReadStr). */
class Reader {
  pos = 0
  intSize = 4
  constructor(private readonly buf: Buffer) {}
  byte(): number {
    if (this.pos >= this.buf.length) throw new Short()
    return this.buf[this.pos++]!
  }
  int(): number {
    if (this.pos + 1 + this.intSize > this.buf.length) throw new Short()
    const value = decodeInt(this.buf, this.pos, this.intSize)
    this.pos += 1 + this.intSize
    return value
  }
  /** Passes over a string; false when it was the NULL string (how dependency lists end). */
  str(): boolean {
    const length = this.int()
    if (length < 0) return false
    if (this.pos + length > this.buf.length) throw new Short()
    this.pos += length
    return true
  }
}

/**
 * Pure: the table of contents of a custom-format archive from its first
 * bytes: 'more' when `head` ends inside it, null when it is not a layout
 * this code knows (then nothing is patched).
 */
export function readTocLayout(head: Buffer): TocLayout | 'more' | null {
  if (head.length < 11) return 'more'
  if (head.toString('latin1', 0, 5) !== 'PGDMP') return null
  if (!SUPPORTED.has(`${head[5]}.${head[6]}`)) return null
  const intSize = head[8]!
  const offSize = head[9]!
  if (head[10] !== 1 || intSize < 1 || intSize > 8 || offSize < 1 || offSize > 8) return null // 1: custom format
  const r = new Reader(head)
  r.intSize = intSize
  r.pos = 11
  try {
    r.int() // compression level
    for (let i = 0; i < 7; i++) r.int() // creation time
    r.str() // database name
    r.str() // server version
    r.str() // pg_dump version
    const count = r.int()
    if (count < 0) return null
    const fields = new Map<number, number>()
    for (let i = 0; i < count; i++) {
      const dumpId = r.int()
      r.int() // had dumper
      for (let s = 0; s < 4; s++) r.str() // table oid, oid, tag, description
      r.int() // section
      for (let s = 0; s < 8; s++) r.str() // definition, drop, copy, namespace, tablespace, table AM, owner, "false" (was WITH OIDS)
      while (r.str()); // dependencies, up to a NULL string
      const field = r.pos
      const state = r.byte()
      r.pos += offSize
      if (r.pos > head.length) throw new Short()
      if (state === OFFSET_NOT_SET) fields.set(dumpId, field)
    }
    return { intSize, offSize, fields, dataStart: r.pos }
  } catch (err) {
    if (err instanceof Short) return 'more'
    throw err
  }
}

/**
 * Walks the data blocks of a custom-format archive as its bytes arrive,
 * recording where each block starts. Chunk lengths are read across chunk
 * boundaries; the bytes between them are only counted.
 */
export class BlockWalker {
  /** dumpId → file offset of its block. */
  readonly blocks = new Map<number, number>()
  /** Set when the bytes do not follow the layout: no offsets then. */
  broken = false
  private pos: number
  /** Bytes to pass over before the next number. */
  private skip = 0
  private partial: number[] = []
  private state: 'block' | 'chunks' | 'blob' = 'block'
  private blockStart = 0
  private blockType = 0

  constructor(
    private readonly layout: TocLayout,
    /** File offset of the first byte push() will see. */
    start: number,
  ) {
    this.pos = start
    this.skip = layout.dataStart - start
    if (this.skip < 0) this.broken = true
  }

  /** `chunk` starts at the file offset after the previous one. */
  push(chunk: Buffer): void {
    let i = 0
    while (i < chunk.length && !this.broken) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i)
        this.skip -= n
        i += n
        continue
      }
      if (this.state === 'chunks' && this.partial.length === 0) {
        const before = i
        i = this.passChunks(chunk, i)
        if (i !== before) continue
      }
      const want = this.state === 'block' ? 2 + this.layout.intSize : 1 + this.layout.intSize
      if (this.partial.length === 0) {
        if (this.state === 'block') this.blockStart = this.pos + i
        // Nearly always: the whole number is in this chunk.
        if (i + want <= chunk.length) {
          this.number(chunk, i)
          i += want
          continue
        }
      }
      while (this.partial.length < want && i < chunk.length) this.partial.push(chunk[i++]!)
      if (this.partial.length < want) break
      this.number(Buffer.from(this.partial), 0)
      this.partial = []
    }
    this.pos += chunk.length
  }

  /**
   * The hot loop (one chunk per row): passes over whole chunks from `i`;
   * returns where it stopped, leaving a zero length, a number cut by the
   * end of `chunk`, or the rest of a chunk (this.skip) to push().
   */
  private passChunks(chunk: Buffer, i: number): number {
    const size = this.layout.intSize
    const step = 1 + size
    while (i + step <= chunk.length) {
      const n = decodeInt(chunk, i, size)
      if (n <= 0) return i
      i += step
      if (i + n > chunk.length) {
        this.skip = n - (chunk.length - i)
        return chunk.length
      }
      i += n
    }
    return i
  }

  private number(buf: Buffer, at: number): void {
    if (this.state === 'block') {
      this.blockType = buf[at]!
      const id = decodeInt(buf, at + 1, this.layout.intSize)
      if ((this.blockType !== BLK_DATA && this.blockType !== BLK_BLOBS) || !this.layout.fields.has(id) || this.blocks.has(id)) {
        this.broken = true
        return
      }
      this.blocks.set(id, this.blockStart)
      this.state = this.blockType === BLK_DATA ? 'chunks' : 'blob'
      return
    }
    const n = decodeInt(buf, at, this.layout.intSize)
    if (this.state === 'blob') {
      // A large object's oid, then its chunks; oid 0 ends the block. pg_dump writes oids as
      // signed ints, so one of 2^31 or more reads as negative: still an oid.
      this.state = n === 0 ? 'block' : 'chunks'
      return
    }
    if (n < 0) {
      this.broken = true
      return
    }
    if (n > 0) this.skip = n
    else this.state = this.blockType === BLK_BLOBS ? 'blob' : 'block' // a zero length ends the data (or this large object)
  }

  /** Offsets for every entry waiting for one, or null when the walk did not end cleanly between blocks or missed one. */
  result(): Map<number, number> | null {
    if (this.broken || this.skip > 0 || this.partial.length > 0 || this.state !== 'block') return null
    if (this.blocks.size !== this.layout.fields.size) return null
    return this.blocks
  }
}

/** pg_dump's integer at `at`: a sign byte, then `size` bytes, least significant first. */
function decodeInt(buf: Buffer, at: number, size: number): number {
  if (size === 4) return buf[at] !== 0 ? -buf.readUInt32LE(at + 1) : buf.readUInt32LE(at + 1) // every pg_dump there is
  let value = 0
  for (let i = 0; i < size; i++) value += buf[at + 1 + i]! * 2 ** (8 * i)
  return buf[at] !== 0 ? -value : value
}

/** Pure: the bytes to write at each offset field: flag "set", then the offset, least significant byte first. */
export function offsetPatches(layout: TocLayout, blocks: Map<number, number>): { at: number; bytes: Buffer }[] {
  return [...blocks].map(([id, offset]) => {
    const bytes = Buffer.alloc(1 + layout.offSize)
    bytes[0] = OFFSET_SET
    for (let i = 0; i < layout.offSize; i++) bytes[1 + i] = Math.floor(offset / 2 ** (8 * i)) % 256
    return { at: layout.fields.get(id)!, bytes }
  })
}
