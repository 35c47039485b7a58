import { MANIFEST_FILE } from './naming.ts'
import { isPgIdentifier } from '../postgres/identifier.ts'
import { verificationError } from '../cli/errors.ts'
import { field, isIsoDate, isObject, isSha, isSize, isString, isText, malformed } from './manifest-fields.ts'
import { parseEncryption, parseFilesystem, type EncryptionSection, type FilesystemSection } from './manifest-tree.ts'

/**
 * The manifest is the artifact's table of contents and its proof of
 * integrity. Every field is typed here and checked on read: restore trusts
 * nothing it has not validated.
 */
export const MANIFEST_FORMAT = 'conductor-backup-manifest'
/**
 * 3: optional application files (filesystem) and age encryption (encryption, files[].encryption).
 * 2: the dump is `pg_dump -Fc -Z0` compressed by zstd (postgres.compression).
 * 1: the dump is `pg_dump -Fc` with its own zlib; still read and restored.
 */
export const MANIFEST_VERSION = 3
export const READABLE_VERSIONS: readonly number[] = [1, 2, 3]

export interface ManifestFile {
  /** Relative to the artifact directory, '/'-separated, never '..'. */
  path: string
  size: number
  /** Lower-case hex SHA-256 of the file's bytes (the ciphertext when encrypted). */
  sha256: string
  /** 'age': the bytes are age ciphertext; decrypt with an identity matching manifest.encryption. */
  encryption?: 'age'
}

export interface PostgresSkipped {
  status: 'skipped'
  /** Why, in words an operator can act on. */
  reason: string
}

/** Rows in one table, counted in the snapshot that pg_dump used: what a restore must reproduce. */
export interface TableCount {
  schema: string
  table: string
  rows: number
}

export interface PostgresDumped {
  status: 'dumped'
  /** Entry in `files` holding the dump. */
  file: string
  /** pg_dump's custom format, restorable with pg_restore. */
  format: 'custom'
  /** 'zstd': the file is zstd-compressed (formatVersion 2); absent: pg_dump's own compression (formatVersion 1). */
  compression?: 'zstd'
  database: string
  /** Recreating a lost database needs these; pg_dump without --create omits them. */
  encoding: string
  collate: string
  ctype: string
  serverVersion: string
  pgDumpVersion: string
  /** Absent in artifacts written before row counts were recorded. */
  tables?: TableCount[]
  /** The cluster's roles (pg_dumpall --roles-only), created on restore where missing. */
  roles?: { file: string; passwords: boolean }
  /** Owner of the database, so a database recreated by restore belongs to the same role. */
  owner?: string
  /** 'icu' databases are recreated with ICU_LOCALE; absent means libc. */
  localeProvider?: 'libc' | 'icu'
  iculocale?: string
}

export type PostgresSection = PostgresSkipped | PostgresDumped

export interface ToolInfo {
  name: string
  version: string
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT
  formatVersion: 1 | 2 | 3
  tool: ToolInfo
  /** Final artifact name, e.g. conductor-backup-20240315T120000Z. */
  artifact: string
  /** ISO-8601 UTC; the moment the backup started (the RPO point). */
  createdAt: string
  /** ISO-8601 UTC; the moment every file was written. */
  completedAt: string
  hostname: string
  postgres: PostgresSection
  /** The application's own files (backup.sh --path); absent when none were asked for. */
  filesystem?: FilesystemSection
  /** Present when files[] holds encrypted entries: how, and to how many recipients (never the keys). */
  encryption?: EncryptionSection
  files: ManifestFile[]
}

/** Is the artifact file `path` stored as age ciphertext? */
export function isEncrypted(manifest: Pick<Manifest, 'files'>, path: string): boolean {
  return manifest.files.find((f) => f.path === path)?.encryption === 'age'
}

export function serializeManifest(manifest: Manifest): string {
  return JSON.stringify(manifest, null, 2) + '\n'
}

/** `sha256sum -c manifest.json.sha256` works on it, for operators without this tool. */
export function manifestSumLine(sha256: string): string {
  return `${sha256}  ${MANIFEST_FILE}\n`
}

export function parseManifestSum(text: string): string {
  const match = /^([0-9a-f]{64}) [ *]manifest\.json\n?$/.exec(text)
  if (!match) throw verificationError('manifest checksum file is malformed', 'the artifact is damaged; use another backup')
  return match[1]
}

export function isSafeRelativePath(path: string): boolean {
  if (path === '' || path.startsWith('/') || path.includes('\\') || path.includes('\0')) return false
  return path.split('/').every((part) => part !== '' && part !== '.' && part !== '..')
}

function parseFile(value: unknown, index: number): ManifestFile {
  const where = `files[${index}].`
  if (!isObject(value)) throw malformed(`files[${index}] must be an object`)
  const path = field(value, 'path', isString, 'a relative path', where)
  if (!isSafeRelativePath(path)) throw malformed(`${where}path '${path}' escapes the artifact`)
  if (value.encryption !== undefined && value.encryption !== 'age') throw malformed(`${where}encryption must be 'age'`)
  return {
    path,
    size: field(value, 'size', isSize, 'a byte count', where),
    sha256: field(value, 'sha256', isSha, 'a hex SHA-256', where),
    ...(value.encryption === 'age' ? { encryption: 'age' as const } : {}),
  }
}

function parseTables(value: unknown): TableCount[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw malformed('postgres.tables must be a list')
  return value.map((t, i) => {
    const where = `postgres.tables[${i}].`
    if (!isObject(t)) throw malformed(`postgres.tables[${i}] must be an object`)
    return {
      schema: field(t, 'schema', isString, 'a schema name', where),
      table: field(t, 'table', isString, 'a table name', where),
      rows: field(t, 'rows', isSize, 'a row count', where),
    }
  })
}

function parsePostgres(value: unknown, files: ManifestFile[]): PostgresSection {
  if (!isObject(value)) throw malformed('postgres must be an object')
  const where = 'postgres.'
  if (value.status === 'skipped') {
    return { status: 'skipped', reason: field(value, 'reason', isString, 'a string', where) }
  }
  if (value.status !== 'dumped') throw malformed(`postgres.status must be 'skipped' or 'dumped'`)
  const file = field(value, 'file', isString, 'a file name', where)
  if (!files.some((f) => f.path === file)) throw malformed(`postgres.file '${file}' is not listed in files`)
  if (value.format !== 'custom') throw malformed(`postgres.format must be 'custom'`)
  const tables = parseTables(value.tables)
  if (value.compression !== undefined && value.compression !== 'zstd') throw malformed(`postgres.compression must be 'zstd'`)
  if (value.localeProvider !== undefined && value.localeProvider !== 'libc' && value.localeProvider !== 'icu') {
    throw malformed(`postgres.localeProvider must be 'libc' or 'icu'`)
  }
  let roles: { file: string; passwords: boolean } | undefined
  if (value.roles !== undefined) {
    if (!isObject(value.roles)) throw malformed('postgres.roles must be an object')
    const rolesFile = field(value.roles, 'file', isString, 'a file name', 'postgres.roles.')
    if (!files.some((f) => f.path === rolesFile)) throw malformed(`postgres.roles.file '${rolesFile}' is not listed in files`)
    if (typeof value.roles.passwords !== 'boolean') throw malformed('postgres.roles.passwords must be true or false')
    roles = { file: rolesFile, passwords: value.roles.passwords }
  }
  const optionalText = (key: string) => (value[key] === undefined ? {} : { [key]: field(value, key, isString, 'a string', where) })
  return {
    status: 'dumped',
    file,
    format: 'custom',
    database: field(value, 'database', isPgIdentifier, 'a PostgreSQL database name (1 to 63 bytes, no NUL)', where),
    encoding: field(value, 'encoding', isString, 'an encoding name', where),
    collate: field(value, 'collate', isText, 'a locale name', where),
    ctype: field(value, 'ctype', isText, 'a locale name', where),
    serverVersion: field(value, 'serverVersion', isString, 'a version', where),
    pgDumpVersion: field(value, 'pgDumpVersion', isString, 'a version', where),
    ...(value.compression === 'zstd' ? { compression: 'zstd' as const } : {}),
    ...(tables ? { tables } : {}),
    ...(roles ? { roles } : {}),
    ...optionalText('owner'),
    ...(value.localeProvider ? { localeProvider: value.localeProvider as 'libc' | 'icu' } : {}),
    ...optionalText('iculocale'),
  }
}

/** Parses and validates; any deviation is a verification failure, never a crash. */
export function parseManifest(text: string): Manifest {
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw malformed('not valid JSON (truncated or corrupted)')
  }
  if (!isObject(raw)) throw malformed('top level must be an object')
  if (raw.format !== MANIFEST_FORMAT) throw malformed(`format must be '${MANIFEST_FORMAT}'`)
  if (typeof raw.formatVersion !== 'number') throw malformed('formatVersion must be a number')
  if (!READABLE_VERSIONS.includes(raw.formatVersion)) {
    throw verificationError(
      `manifest formatVersion ${raw.formatVersion} is not supported (this tool reads ${READABLE_VERSIONS.join(' and ')})`,
      'restore with the tool version named in manifest.json "tool"',
    )
  }
  const tool = raw.tool
  if (!isObject(tool)) throw malformed('tool must be an object')
  if (!Array.isArray(raw.files)) throw malformed('files must be a list')
  const files = raw.files.map(parseFile)
  const seen = new Set<string>()
  for (const f of files) {
    if (seen.has(f.path)) throw malformed(`files lists '${f.path}' twice`)
    seen.add(f.path)
  }
  const filesystem = raw.filesystem === undefined ? undefined : parseFilesystem(raw.filesystem, files)
  const encryption = raw.encryption === undefined ? undefined : parseEncryption(raw.encryption)
  if (files.some((f) => f.encryption) && !encryption) throw malformed('files are encrypted but encryption is missing')
  return {
    format: MANIFEST_FORMAT,
    formatVersion: raw.formatVersion as 1 | 2 | 3,
    tool: {
      name: field(tool, 'name', isString, 'a string', 'tool.'),
      version: field(tool, 'version', isString, 'a string', 'tool.'),
    },
    artifact: field(raw, 'artifact', isString, 'the artifact name', ''),
    createdAt: field(raw, 'createdAt', isIsoDate, 'an ISO-8601 UTC time', ''),
    completedAt: field(raw, 'completedAt', isIsoDate, 'an ISO-8601 UTC time', ''),
    hostname: field(raw, 'hostname', isString, 'a host name', ''),
    postgres: parsePostgres(raw.postgres, files),
    ...(filesystem ? { filesystem } : {}),
    ...(encryption ? { encryption } : {}),
    files,
  }
}
