import { isEncrypted, type PostgresDumped } from '../artifact/manifest.ts'
import type { VerifiedArtifact } from '../artifact/verify.ts'
import { verificationError } from '../cli/errors.ts'
import type { Reporter } from '../cli/report.ts'
import { identityFromEnv, refusePassphraseIdentity } from '../crypto/age.ts'
import { checkIdentity } from '../crypto/decrypt-check.ts'
import type { DumpSource } from '../postgres/restore.ts'
import type { RolesSource } from './restore-postgres.ts'

/**
 * The age identity a real restore (or drill) of this artifact needs:
 * undefined when nothing in it is encrypted. Proven against the artifact
 * before anything is touched: a missing, unreadable or wrong key stops
 * here with its own message.
 */
export async function unlockArtifact(artifact: VerifiedArtifact, env: NodeJS.ProcessEnv, reporter: Reporter): Promise<string | undefined> {
  const encrypted = artifact.manifest.files.filter((f) => f.encryption === 'age')
  if (encrypted.length === 0) return undefined
  const identity = identityFromEnv(env, artifact.manifest.artifact)
  await refusePassphraseIdentity(identity)
  await checkIdentity(
    encrypted.map((f) => artifact.files.get(f.path)!),
    identity,
    env,
    artifact.manifest.artifact,
  )
  reporter.line(`encryption: the identity in BACKUP_AGE_IDENTITY_FILE decrypts this artifact`)
  return identity
}

/** What a dry run can say about an encrypted artifact without its key. */
export function describeEncryption(artifact: VerifiedArtifact, reporter: Reporter): void {
  const enc = artifact.manifest.encryption
  if (!enc) return
  reporter.line(`encryption: age, to ${enc.recipients} recipient(s); checksums verified without a key (a real restore needs BACKUP_AGE_IDENTITY_FILE)`)
}

function verified(artifact: VerifiedArtifact, name: string) {
  const file = artifact.files.get(name)
  if (!file) throw verificationError(`${name} was not verified`, 'the manifest is inconsistent; use another backup')
  return file
}

export function dumpSource(artifact: VerifiedArtifact, pg: PostgresDumped, identity: string | undefined): DumpSource {
  const encrypted = isEncrypted(artifact.manifest, pg.file)
  return { file: verified(artifact, pg.file), compression: pg.compression, encrypted, ...(encrypted && identity !== undefined ? { identity } : {}) }
}

export function rolesSource(artifact: VerifiedArtifact, pg: PostgresDumped, identity: string | undefined): RolesSource | undefined {
  if (!pg.roles) return undefined
  const encrypted = isEncrypted(artifact.manifest, pg.roles.file)
  return { file: verified(artifact, pg.roles.file), encrypted, ...(encrypted && identity !== undefined ? { identity } : {}) }
}
