import type { FileHandle } from 'node:fs/promises'
import type { Digest } from '../pipeline/checksum.ts'

/**
 * A file of an artifact whose checksum was verified, held open: every
 * later step reads this handle, never the path, so a file swapped in
 * after verification is never applied.
 */
export interface VerifiedFile {
  handle: FileHandle
  digest: Digest
  /** As the manifest names it, for messages. */
  name: string
}
