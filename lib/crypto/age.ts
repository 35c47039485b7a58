import type { Readable } from 'node:stream'
import { inputError, runtimeError, usageError, verificationError, type DrError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { readOperatorFile, validateOperatorFile, type OperatorFile } from '../cli/operator-file.ts'
import { oneLine } from '../cli/redact.ts'
import { spawnTool, type Tool } from '../pipeline/spawn.ts'

/**
 * Public-key encryption with age (X25519), through Debian's `age` binary
 * (about 1.4 GB/s here, a few MB of memory). A backup host holds only
 * recipients (public keys): it can write backups it cannot read. Only a
 * restore needs the identity (the private key), from a file.
 */
export const AGE_SUFFIX = '.age'

/** An age X25519 recipient: "age1" and 58 bech32 characters. */
const RECIPIENT_RE = /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/

const missing = runtimeError('age not found on PATH', 'install it (apt-get install age)')

const RECIPIENTS_FILE: OperatorFile = {
  what: 'BACKUP_AGE_RECIPIENTS_FILE',
  fix: 'point it at a readable file with one age1… public key per line',
  limit: 1024 * 1024,
}

const IDENTITY_FILE: OperatorFile = {
  what: 'BACKUP_AGE_IDENTITY_FILE',
  fix: 'point it at the age identity (private key) file that age-keygen wrote',
  limit: 1024 * 1024,
}

export interface Recipients {
  keys: string[]
  /** Where they came from, for messages: BACKUP_AGE_RECIPIENTS or the file's path. */
  source: string
}

const BECH32 = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l'

/** BIP-173 checksum over "age" and the data part: a mistyped key is caught here, not by a broken pipe mid-backup. */
export function bech32ChecksumOk(key: string): boolean {
  const sep = key.lastIndexOf('1')
  const hrp = key.slice(0, sep)
  const data = [...key.slice(sep + 1)].map((c) => BECH32.indexOf(c))
  if (data.some((d) => d < 0)) return false
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]
  let chk = 1
  for (const v of [...[...hrp].map((c) => c.charCodeAt(0) >> 5), 0, ...[...hrp].map((c) => c.charCodeAt(0) & 31), ...data]) {
    const top = chk >>> 25
    chk = ((chk & 0x1ffffff) << 5) ^ v
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= gen[i]!
  }
  return chk === 1
}

/** Anything that looks like part of an age private key, in any case or wrapping; and a whole word holding one. */
const SECRET_RE = /age-?secret-?key/i
const SECRET_WORD = new RegExp(`\\S*${SECRET_RE.source}\\S*`, 'gi')

/** Public keys only: they may be printed, logged and put on argv. */
export function parseRecipientList(text: string, source: string): string[] {
  const keys: string[] = []
  for (const raw of text.split(/\r?\n/)) {
    // Whole-line and trailing comments: `age1…  # laptop of the on-call`.
    const line = raw.replace(/#.*$/, '').trim()
    if (line === '') continue
    for (const word of line.split(/[\s,]+/)) {
      if (word === '') continue
      if (RECIPIENT_RE.test(word) && !bech32ChecksumOk(word)) {
        throw usageError(`${source} holds ${quoteValue(word)}, whose checksum is wrong (a typo?)`, 'copy the recipient again from age-keygen -y IDENTITY_FILE')
      }
      if (!RECIPIENT_RE.test(word)) {
        // A private key pasted by mistake must not be echoed back, however it is wrapped
        // (quotes from an env file, a prefix, lower case).
        const secret = SECRET_RE.test(word)
        const shown = secret ? 'an age identity (private key)' : quoteValue(word.length > 80 ? `${word.slice(0, 80)}…` : word)
        const fix = secret
          ? 'give the public key (age-keygen -y IDENTITY_FILE prints it); keep the identity off the backup host'
          : 'give age X25519 public keys (age1…), as printed by age-keygen'
        throw usageError(`${source} holds ${shown}, which is not an age recipient`, fix)
      }
      keys.push(word)
    }
  }
  return [...new Set(keys)]
}

/**
 * BACKUP_AGE_RECIPIENTS (keys separated by spaces, commas or newlines)
 * and BACKUP_AGE_RECIPIENTS_FILE (one per line, # comments) combine.
 * Null when neither is set.
 */
export async function recipientsFromEnv(env: NodeJS.ProcessEnv): Promise<Recipients | null> {
  const keys: string[] = []
  const sources: string[] = []
  // Set but empty is a mistake (an unset variable expanded in a cron line), never a request for plaintext.
  const inline = env.BACKUP_AGE_RECIPIENTS
  if (inline !== undefined) {
    const fromInline = parseRecipientList(inline, 'BACKUP_AGE_RECIPIENTS')
    if (fromInline.length === 0) throw usageError('BACKUP_AGE_RECIPIENTS is set but holds no recipient', 'give age1… public keys, or unset it to back up without encryption')
    keys.push(...fromInline)
    sources.push('BACKUP_AGE_RECIPIENTS')
  }
  const file = env.BACKUP_AGE_RECIPIENTS_FILE
  if (file === '') throw usageError('BACKUP_AGE_RECIPIENTS_FILE is set but empty', 'give the path of the recipients file, or unset it to back up without encryption')
  if (file !== undefined) {
    const text = (await readOperatorFile(file, RECIPIENTS_FILE)).toString('utf8')
    const fromFile = parseRecipientList(text, `BACKUP_AGE_RECIPIENTS_FILE ${quoteValue(file)}`)
    if (fromFile.length === 0) throw usageError(`BACKUP_AGE_RECIPIENTS_FILE ${quoteValue(file)} lists no recipient`, 'put one age1… public key per line')
    keys.push(...fromFile)
    sources.push(`BACKUP_AGE_RECIPIENTS_FILE ${quoteValue(file)}`)
  }
  if (keys.length === 0) return null
  return { keys: [...new Set(keys)], source: sources.join(' and ') }
}

/** `age -e -r KEY…`: reads `input` (another child's stdout, joined by the OS), writes the ciphertext. */
/** `output`: 'pipe' to read it here, or a descriptor to write a file directly. */
export function encryptor(input: Readable | 'pipe', recipients: Recipients, env: NodeJS.ProcessEnv, output: 'pipe' | number = 'pipe'): Tool {
  return spawnTool('age', ['-e', ...recipients.keys.flatMap((k) => ['-r', k])], { env, stdin: input, stdout: output, missing })
}

/** `age -d -i FILE`: the identity stays in its file; only its path is on the command line. */
export function decryptor(identityFile: string, env: NodeJS.ProcessEnv, input: Readable | 'pipe' = 'pipe'): Tool {
  return spawnTool('age', ['-d', '-i', identityFile], { env, stdin: input, stdout: 'pipe', missing })
}

/**
 * What a failed `age -d` means, in the operator's terms. age's own words
 * are matched, not shown: they might quote a line of the identity file.
 */
export function decryptionFailure(stderr: string, file: string, identityFile: string): DrError {
  const shownId = quoteValue(identityFile)
  if (/no identity matched/.test(stderr)) {
    return inputError(`the identity in ${shownId} cannot decrypt ${file}: it is not one of the recipients this backup was encrypted to`, 'set BACKUP_AGE_IDENTITY_FILE to the private key that matches one of the backup\'s recipients')
  }
  if (/reading ".*": |failed to open file|unknown identity type|malformed secret key|no secret keys/.test(stderr)) {
    return inputError(`BACKUP_AGE_IDENTITY_FILE ${shownId} is not a readable age identity file`, 'point it at the file age-keygen wrote (AGE-SECRET-KEY-1…)')
  }
  if (/failed to decrypt identity file|could not read passphrase|incorrect passphrase/i.test(stderr)) return passphraseIdentity(identityFile)
  if (/failed to read header|parsing age header|failed to decrypt|authenticate|unexpected EOF|truncated/i.test(stderr)) {
    return verificationError(`${file} is damaged: its ciphertext does not decrypt`, 'the artifact is damaged; use another backup')
  }
  return runtimeError(`age could not decrypt ${file} (${oneLine(stderr.replace(SECRET_WORD, '[identity]'), 200) || 'no message'})`, 'check the age installation and BACKUP_AGE_IDENTITY_FILE')
}

/**
 * An identity file that is itself age-encrypted (age -p, armored or not):
 * age would ask for its passphrase on the terminal, once per process, or
 * fail without one. Told apart from a damaged backup before age runs.
 */
export async function refusePassphraseIdentity(file: string): Promise<void> {
  const head = (await readOperatorFile(file, IDENTITY_FILE)).subarray(0, 64).toString('latin1')
  if (head.startsWith('age-encryption.org/') || head.startsWith('-----BEGIN AGE ENCRYPTED FILE-----')) throw passphraseIdentity(file)
}

const passphraseIdentity = (file: string) =>
  inputError(
    `BACKUP_AGE_IDENTITY_FILE ${quoteValue(file)} is protected by a passphrase, which a restore cannot ask for`,
    'decrypt it to a file only this user can read (age -d -o key.txt FILE) and point BACKUP_AGE_IDENTITY_FILE at that; remove it afterwards',
  )

/** Restore of an encrypted artifact: the identity file must be named before anything starts. */
export function identityFromEnv(env: NodeJS.ProcessEnv, what: string): string {
  const file = env.BACKUP_AGE_IDENTITY_FILE
  if (file === undefined || file === '') {
    throw usageError(`${what} is encrypted and BACKUP_AGE_IDENTITY_FILE is not set`, 'set BACKUP_AGE_IDENTITY_FILE to the age identity (private key) file that matches the backup\'s recipients')
  }
  validateOperatorFile(file, IDENTITY_FILE)
  return file
}

/** BACKUP_ENCRYPTION=required: refuse to write plaintext rather than fall back to it. */
export type EncryptionPolicy = 'required' | 'optional'

export function encryptionPolicyFromEnv(env: NodeJS.ProcessEnv): EncryptionPolicy {
  const value = (env.BACKUP_ENCRYPTION ?? '').trim().toLowerCase()
  if (value === '' || value === 'optional') return 'optional'
  if (value === 'required') return 'required'
  throw usageError(`BACKUP_ENCRYPTION=${quoteValue(env.BACKUP_ENCRYPTION ?? '')} is not understood`, 'set it to required or optional')
}
