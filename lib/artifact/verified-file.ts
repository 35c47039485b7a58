import type { FileHandle } from 'node:fs/promises'
import { verificationError } from '../cli/errors.ts'
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

/** A verified file whose bytes differed when they were read again to be applied; `outcome` says what that left behind. */
export function changedAfterVerification(name: string, outcome?: string) {
  return verificationError(
    `${name} changed after it was verified${outcome ? `; ${outcome}` : ''}`,
    'something is writing into the backup directory; stop it, then verify and restore again',
  )
}
