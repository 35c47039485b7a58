import { usageError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { envFlag } from '../cli/switches.ts'

/**
 * Multipart part sizes. S3 allows at most 10,000 parts of 5 MiB to 5 GiB (here 4 GiB, below),
 * and an upload keeps its part size fixed (lib/storage/multipart.ts), so
 * the part size caps the object: 8 MiB parts hold at most 78 GiB. Memory is
 * about (parts in flight + 1) × part size, so the size is only raised
 * where an object needs it.
 */
const MiB = 1024 * 1024
export const MIN_PART_SIZE = 5 * MiB
/** S3 allows 5 GiB, but a part is one Buffer here, and Node.js 20 caps a Buffer at 4 GiB. */
export const MAX_PART_SIZE = 4 * 1024 * MiB
export const MAX_PARTS = 10_000
/** The largest object `partSize` parts can hold. */
export const maxObjectBytes = (partSize: number): number => partSize * MAX_PARTS

/**
 * The part size for an object of at most `expectedBytes`: the configured
 * size, or the smallest whole MiB that fits it in 10,000 parts.
 */
export function partSizeFor(configured: number, expectedBytes?: number): number {
  if (expectedBytes === undefined || !Number.isFinite(expectedBytes) || expectedBytes <= 0) return configured
  const needed = Math.ceil(expectedBytes / MAX_PARTS / MiB) * MiB
  return Math.min(MAX_PART_SIZE, Math.max(configured, needed))
}

const UNITS: Record<string, number> = { '': MiB, mib: MiB, m: MiB, mb: MiB, gib: 1024 * MiB, g: 1024 * MiB, gb: 1024 * MiB }

/** S3_PART_SIZE: "16MiB", "1GiB" or a number of MiB, from 5 MiB to 4 GiB (MB and GB are read as MiB and GiB). */
export function parsePartSize(raw: string, name = 'S3_PART_SIZE'): number {
  const m = /^(\d{1,5})\s*([a-z]*)$/i.exec(raw.trim())
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined
  const bytes = m && unit !== undefined ? Number(m[1]) * unit : NaN
  if (!(bytes >= MIN_PART_SIZE && bytes <= MAX_PART_SIZE)) {
    throw usageError(`${name} ${quoteValue(raw, 20)} is not a part size from 5MiB to 4GiB`, `use a size such as 16MiB (objects up to 10,000 parts: 16MiB holds 156 GiB)`)
  }
  return bytes
}

/** What only an upload uses; parsed (exit 2 when malformed) by the commands that write to a bucket, ignored by the others. */
export interface UploadSettings {
  /** S3_PART_SIZE, when set. */
  partSize?: number
  /** S3_CONTENT_MD5=true: Content-MD5 on every multipart part too (see s3-client.ts). */
  md5Parts: boolean
}

export function uploadSettings(env: NodeJS.ProcessEnv): UploadSettings {
  const partSizeRaw = env.S3_PART_SIZE
  return {
    ...(partSizeRaw?.trim() ? { partSize: parsePartSize(partSizeRaw) } : {}),
    md5Parts: envFlag(env, 'S3_CONTENT_MD5'),
  }
}
