/** Artifact names are part of the runbooks: conductor-backup-20240315T120000Z. */
export const ARTIFACT_PREFIX = 'conductor-backup-'
const ARTIFACT_RE = /^conductor-backup-\d{8}T\d{6}Z$/
const PARTIAL_SUFFIX = '.partial'

export function artifactName(when: Date): string {
  const iso = when.toISOString() // 2024-03-15T12:00:00.000Z
  const stamp = iso.slice(0, 19).replace(/[-:]/g, '') + 'Z'
  return ARTIFACT_PREFIX + stamp
}

export function isArtifactName(name: string): boolean {
  return ARTIFACT_RE.test(name)
}

/**
 * Work in progress lives under a hidden, suffixed name so that nothing
 * listing or restoring artifacts can mistake it for a finished one.
 */
export function partialName(name: string): string {
  return `.${name}${PARTIAL_SUFFIX}`
}

export function isPartialName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(PARTIAL_SUFFIX)
}

/** Files inside an artifact. */
export const MANIFEST_FILE = 'manifest.json'
export const MANIFEST_SUM_FILE = 'manifest.json.sha256'
/** formatVersion 2: pg_dump -Fc -Z0 compressed by zstd. (Version 1 artifacts name theirs in the manifest: postgres.dump.) */
export const POSTGRES_DUMP_ZST_FILE = 'postgres.dump.zst'
/** The cluster's roles and memberships (JSON): what a bare server needs before the dump can be restored. */
export const ROLES_FILE = 'roles.json'
