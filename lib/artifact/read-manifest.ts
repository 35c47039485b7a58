import { join } from 'node:path'
import { verificationError } from '../cli/errors.ts'
import { digestBuffer } from '../pipeline/checksum.ts'
import { parseManifest, parseManifestSum, type Manifest } from './manifest.ts'
import { MANIFEST_FILE, MANIFEST_SUM_FILE } from './naming.ts'
import { readSmall } from './open.ts'

/** Far above any manifest this tool writes; a bound so that a hostile one (a link to /dev/zero) cannot fill memory. */
export const MANIFEST_LIMIT = 16 * 1024 * 1024
export const SUM_LIMIT = 4096

/**
 * The manifest-reading half of verifyArtifact: sidecar, then the manifest
 * bytes it vouches for, then the parse. The data files are NOT hashed:
 * listing must stay cheap on a directory of large dumps, and restore
 * verifies every byte before it uses any. A "complete" entry therefore
 * means "finished and its manifest is intact", not "proven restorable".
 */
export async function readTrustedManifest(dir: string): Promise<Manifest> {
  const expected = parseManifestSum((await readSmall(join(dir, MANIFEST_SUM_FILE), MANIFEST_SUM_FILE, SUM_LIMIT)).toString('utf8'))
  const bytes = await readSmall(join(dir, MANIFEST_FILE), MANIFEST_FILE, MANIFEST_LIMIT)
  return trustManifestBytes(expected, bytes)
}

/**
 * The store-independent half: the manifest's bytes must hash to what the
 * sidecar says (`expected`, from parseManifestSum) before they are parsed.
 * Shared by the local directory and the S3 store, which fetch the bytes
 * their own way (and bound them by MANIFEST_LIMIT and SUM_LIMIT).
 */
export function trustManifestBytes(expected: string, bytes: Buffer): Manifest {
  if (digestBuffer(bytes).sha256 !== expected) {
    throw verificationError(`${MANIFEST_FILE} does not match its checksum`, 'the artifact is damaged; use another backup')
  }
  return parseManifest(bytes.toString('utf8'))
}
