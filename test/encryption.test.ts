// Encrypted artifacts (age) of a real database and a real directory: what is written, what a
// restore needs, and what it refuses without touching the database or the files.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { ExitCode } from '../lib/cli/errors.ts'
import {
  ageKey,
  BACKUP,
  completeArtifacts,
  databaseExists,
  dropDatabase,
  DUMP_ENABLED,
  fillDatabase,
  filesEnv,
  flipByte,
  psql,
  REPO,
  RESTORE,
  resealArtifact,
  restoreLeftovers,
  run,
  scratchDatabase,
  snapshot,
  tempDir,
  treeState,
  type RunResult,
} from './helpers.ts'

const DRILL = join(REPO, 'scripts', 'drill.sh')
const EXIT = ExitCode
const DATA_FILES = ['postgres.dump.zst.age', 'roles.json.age', 'files.tar.zst.age', 'files.index.jsonl.age']

/** A secret key's body (the fix hints quote only the prefix, 'AGE-SECRET-KEY-1…'). */
const SECRET_KEY = /AGE-SECRET-KEY-1[0-9A-Z]{20,}/

const CANARY_ROW = `canary-row-${process.pid}-${Date.now().toString(36)}`
const CANARY_FILE = `canary-file-content-${process.pid}-${Date.now().toString(36)}`
const CANARY_NAME = `canary-name-${process.pid}`

/** Exactly one `error: ` line on stderr, no stack, and no secret key material anywhere in the output. */
function failsCleanly(t: Test, r: RunResult, code: number, message?: RegExp) {
  t.equal(r.code, code, `exit ${code}: ${r.stderr}`)
  const lines = r.stderr.split('\n').filter(Boolean)
  t.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`)
  t.match(lines[0] ?? '', /^error: /)
  t.notMatch(r.stderr, /internal error|\n\s+at |\.ts:\d+:\d+/, 'no internal error, no stack')
  t.notMatch(r.stdout + r.stderr, SECRET_KEY, 'no secret key in the output')
  if (message) t.match(r.stderr, message)
}

// ---------------------------------------------------------------------------
// One database and one directory, backed up encrypted to key A, then changed: the state that
// every refused restore must leave exactly as it is.

const keyA = ageKey(t)
const stranger = ageKey(t)
const db = scratchDatabase(t)
fillDatabase(db, 400)
psql(db, `INSERT INTO customers (name, email, balance) VALUES ('${CANARY_ROW}', 'canary@example.com', 42);`)
const original = snapshot(db)
const S = tempDir(t, 'cdr-enc-')
const app = join(S, 'app')
mkdirSync(join(app, 'conf'), { recursive: true })
writeFileSync(join(app, 'conf', 'settings.ini'), `secret = ${CANARY_FILE}\n`, { mode: 0o600 })
writeFileSync(join(app, CANARY_NAME), 'a name that must not be readable in the artifact\n')
writeFileSync(join(app, 'data.bin'), Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 13 + (i >> 8)) % 256)))
symlinkSync('conf/settings.ini', join(app, 'settings'))
const originalApp = treeState(app)

const out = join(tempDir(t, 'cdr-enc-out-'), 'backups')
const made = await run(BACKUP, ['--output', out, '--path', app], filesEnv({ ...DUMP_ENABLED, PGDATABASE: db, BACKUP_AGE_RECIPIENTS: keyA.recipient }))
const [name] = completeArtifacts(out)
const artifact = join(out, name ?? 'missing')
const manifestText = readFileSync(join(artifact, 'manifest.json'), 'utf8')
const manifest = JSON.parse(manifestText)

psql(db, "UPDATE customers SET name = 'changed after the backup' WHERE id % 2 = 0; INSERT INTO events (kind) VALUES ('after the backup');")
const current = snapshot(db)
writeFileSync(join(app, 'conf', 'settings.ini'), 'secret = rotated after the backup\n', { mode: 0o600 })
writeFileSync(join(app, 'new-since-backup.txt'), 'new\n')
const currentApp = treeState(app)
const currentS = treeState(S, { withRoot: false })

const withKey = (identity: string | undefined, extra: Record<string, string | undefined> = {}) =>
  filesEnv({ PGDATABASE: db, RESTORE_POSTGRES: 'true', RESTORE_FILES: 'true', BACKUP_AGE_IDENTITY_FILE: identity, ...extra })

/** Databases derived from `db` by a restore: `_restoring_`, `_pre_restore_`. */
const derivedDatabases = () => psql('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_%' ORDER BY 1;`).split('\n').filter(Boolean)

/** The database, the directory and everything beside it exactly as before the attempt. */
function untouched(t: Test) {
  t.same(snapshot(db), current, 'every row of the database as it was')
  t.same(derivedDatabases(), [], 'no database was created beside it')
  t.same(treeState(app), currentApp, 'the directory as it was')
  t.same(treeState(S, { withRoot: false }), currentS, 'nothing appeared beside it (no staging, no kept copy)')
}

function copyOfArtifact(t: Test): string {
  const copy = join(tempDir(t, 'cdr-enc-copy-'), name!)
  cpSync(artifact, copy, { recursive: true })
  return copy
}

t.test('every data file is encrypted; the manifest holds no key; nothing readable is left in the artifact', async (t) => {
  t.equal(made.code, 0, made.stderr)
  t.match(made.stdout, /encrypted/)
  t.same(readdirSync(artifact).sort(), [...DATA_FILES, 'manifest.json', 'manifest.json.sha256'].sort())
  t.same(manifest.files.map((f: any) => f.path).sort(), [...DATA_FILES].sort())
  for (const f of manifest.files) t.equal(f.encryption, 'age', `${f.path}: encryption age`)
  t.same(manifest.encryption, { scheme: 'age', recipients: 1 })
  t.equal(manifest.postgres.file, 'postgres.dump.zst.age')
  t.equal(manifest.postgres.roles.file, 'roles.json.age')
  t.equal(manifest.filesystem.archive, 'files.tar.zst.age')
  t.equal(manifest.filesystem.index, 'files.index.jsonl.age')
  t.notMatch(manifestText, keyA.recipient, 'the recipient is not recorded')
  t.notMatch(manifestText, /AGE-SECRET-KEY|age1[a-z0-9]{20,}/, 'no key of any kind in the manifest')
  t.notMatch(made.stdout + made.stderr, SECRET_KEY)

  t.equal(statSync(artifact).mode & 0o777, 0o700, 'the artifact directory is 0700')
  for (const f of readdirSync(artifact)) {
    t.equal(statSync(join(artifact, f)).mode & 0o777, 0o600, `${f} is 0600`)
  }
  for (const f of DATA_FILES) {
    const data = readFileSync(join(artifact, f))
    t.equal(data.subarray(0, 22).toString(), 'age-encryption.org/v1\n', `${f} is age ciphertext`)
    for (const needle of [CANARY_ROW, CANARY_FILE, CANARY_NAME, 'PGDMP', 'conductor-file-index']) {
      t.equal(data.indexOf(needle), -1, `${f} does not contain ${needle}`)
    }
  }
  t.equal(manifestText.indexOf(CANARY_ROW) + manifestText.indexOf(CANARY_FILE) + manifestText.indexOf(CANARY_NAME), -3, 'nor does the manifest')

  // The control: with the key, the same files do hold the plaintext.
  const plain = (f: string, zstd: boolean) =>
    execFileSync('sh', ['-c', `age -d -i "$1" "$2"${zstd ? ' | zstd -d -q -c' : ''}`, 'sh', keyA.identity, join(artifact, f)], { maxBuffer: 256 * 1024 * 1024 })
  t.ok(plain('files.tar.zst.age', true).includes(CANARY_FILE), 'the archive decrypts to the file content')
  t.ok(plain('files.index.jsonl.age', false).toString().includes(CANARY_NAME), 'the index decrypts to the names')
  t.equal(plain('postgres.dump.zst.age', true).subarray(0, 5).toString(), 'PGDMP', 'the dump decrypts to a pg_dump archive')
})

t.test('--dry-run restore and drill.sh --dry-run verify every checksum without a key', async (t) => {
  const r = await run(RESTORE, ['--dry-run', artifact], withKey(undefined))
  t.equal(r.code, 0, r.stderr)
  for (const f of DATA_FILES) t.match(r.stdout, new RegExp(`verified ${f.replace(/\./g, '\\.')} \\(.*sha256 ok\\)`))
  t.match(r.stdout, /encryption: age, to 1 recipient\(s\); checksums verified without a key/)
  t.match(r.stdout, /the index is encrypted; its paths are checked with the key/)
  t.match(r.stdout, /dry run: nothing was changed/)
  const json = await run(RESTORE, ['--dry-run', '--json', artifact], withKey(undefined))
  t.equal(json.code, 0, json.stderr)
  const doc = JSON.parse(json.stdout)
  t.equal(doc.encrypted, true)
  t.same([...doc.verified].sort(), [...DATA_FILES].sort())

  const d = await run(DRILL, ['--dry-run', name!], filesEnv({ BACKUP_BASE: out, PGDATABASE: db }))
  t.equal(d.code, 0, d.stderr)
  for (const f of DATA_FILES) t.match(d.stdout, f)
  t.match(d.stdout, /checksums verified without a key/)

  // A real drill needs the key, like a restore, and restores into a scratch database it drops.
  const noKey = await run(DRILL, [name!], filesEnv({ BACKUP_BASE: out, PGDATABASE: db }))
  failsCleanly(t, noKey, EXIT.usage, /BACKUP_AGE_IDENTITY_FILE is not set/)
  const drill = await run(DRILL, ['--json', name!], filesEnv({ BACKUP_BASE: out, PGDATABASE: db, BACKUP_AGE_IDENTITY_FILE: keyA.identity }))
  t.equal(drill.code, 0, drill.stderr)
  t.match(JSON.parse(drill.stdout), { ok: true })
  untouched(t)
})

t.test('without the right key a restore stops before it touches anything', async (t) => {
  const dir = tempDir(t, 'cdr-enc-ids-')
  const garbage = join(dir, 'garbage')
  writeFileSync(garbage, 'this is not an age identity\n')
  const publicOnly = join(dir, 'public-only')
  writeFileSync(publicOnly, keyA.recipient + '\n')
  const malformed = join(dir, 'malformed-secret')
  const bogusSecret = 'AGE-SECRET-KEY-1' + 'Q'.repeat(58)
  writeFileSync(malformed, `# a damaged key\n${bogusSecret}\n`)
  // An identity file that is itself age-encrypted (age -p makes such; its header is the same as
  // here): age would prompt for a passphrase, or fail, and that must not read as a damaged backup.
  const sealed = join(dir, 'sealed-identity.age')
  execFileSync('age', ['-r', stranger.recipient, '-o', sealed, keyA.identity])
  const sealedArmored = join(dir, 'sealed-identity.asc')
  execFileSync('age', ['-a', '-r', stranger.recipient, '-o', sealedArmored, keyA.identity])
  const cases: Array<{ name: string; identity: string | undefined; code: number; message: RegExp }> = [
    { name: 'no BACKUP_AGE_IDENTITY_FILE', identity: undefined, code: EXIT.usage, message: /is encrypted and BACKUP_AGE_IDENTITY_FILE is not set/ },
    { name: 'BACKUP_AGE_IDENTITY_FILE that does not exist', identity: join(dir, 'missing'), code: EXIT.input, message: /does not exist/ },
    { name: 'an identity that is not a recipient', identity: stranger.identity, code: EXIT.input, message: /cannot decrypt .*not one of the recipients/ },
    { name: 'an identity file of garbage', identity: garbage, code: EXIT.input, message: /is not a readable age identity file/ },
    { name: 'the public key instead of the identity', identity: publicOnly, code: EXIT.input, message: /is not a readable age identity file/ },
    { name: 'a malformed secret key', identity: malformed, code: EXIT.input, message: /is not a readable age identity file/ },
    { name: 'a passphrase-protected identity', identity: sealed, code: EXIT.input, message: /is protected by a passphrase, which a restore cannot ask for; decrypt it/ },
    { name: 'a passphrase-protected identity, armored', identity: sealedArmored, code: EXIT.input, message: /is protected by a passphrase/ },
  ]
  // All refused before anything is touched, so they may run together; each is judged after.
  const results = await Promise.all(cases.map(async (c) => ({ ...c, r: await run(RESTORE, [artifact], withKey(c.identity)) })))
  for (const c of results) {
    await t.test(c.name, async (t) => {
      const r = c.r
      failsCleanly(t, r, c.code, c.message)
      t.notMatch(r.stdout + r.stderr, bogusSecret.slice(16, 40), 'the identity file is not quoted')
      untouched(t)
    })
  }
  await t.test('files only, with the wrong key', async (t) => {
    const r = await run(RESTORE, [artifact], withKey(stranger.identity, { RESTORE_POSTGRES: undefined }))
    failsCleanly(t, r, EXIT.input, /cannot decrypt/)
    untouched(t)
  })
})

t.test('one flipped bit in any encrypted file fails its checksum: exit 4, nothing touched', async (t) => {
  for (const f of DATA_FILES) {
    await t.test(f, async (t) => {
      const copy = copyOfArtifact(t)
      flipByte(join(copy, f))
      const r = await run(RESTORE, [copy], withKey(keyA.identity))
      failsCleanly(t, r, EXIT.verification, new RegExp(`${f.replace(/\./g, '\\.')} failed its SHA-256 check`))
      untouched(t)
    })
  }
})

/**
 * Tampered ciphertext whose checksums were recomputed (manifest and sidecar forged): only age's
 * own authentication can notice. `restoreFiles`/`restorePostgres` pick what is asked for.
 */
async function forged(t: Test, file: string, damage: (path: string) => void, ask: { postgres: boolean; files: boolean }) {
  const copy = copyOfArtifact(t)
  damage(join(copy, file))
  resealArtifact(copy)
  const r = await run(RESTORE, [copy], withKey(keyA.identity, { RESTORE_POSTGRES: ask.postgres ? 'true' : undefined, RESTORE_FILES: ask.files ? 'true' : undefined }))
  t.not(r.code, 0, `refused: ${r.stderr.trim()}`)
  t.ok(r.code === EXIT.verification || r.code === EXIT.input, `exit 4 (or 3), not a runtime failure: ${r.code}`)
  t.notMatch(r.stderr, /internal error|\n\s+at /)
  t.notMatch(r.stdout + r.stderr, SECRET_KEY)
  return r
}

const flipMiddle = (p: string) => flipByte(p)
const truncate = (p: string) => writeFileSync(p, readFileSync(p).subarray(0, Math.floor(statSync(p).size * 0.6)))
const flipHeader = (p: string) => flipByte(p, 30)

t.test('tampered ciphertext that passes forged checksums is refused by itself: nothing touched', async (t) => {
  const ask = (file: string) => (file.startsWith('files.') ? { postgres: false, files: true } : { postgres: true, files: false })
  for (const f of DATA_FILES) {
    for (const [how, damage] of [
      ['one bit flipped', flipMiddle],
      ['truncated', truncate],
    ] as const) {
      await t.test(`${f}, ${how}, restoring only what it belongs to`, async (t) => {
        await forged(t, f, damage, ask(f))
        untouched(t)
      })
    }
  }
  await t.test('postgres.dump.zst.age with a damaged age header', async (t) => {
    await forged(t, 'postgres.dump.zst.age', flipHeader, { postgres: true, files: false })
    untouched(t)
  })
})

t.test('a full restore (database and files) with tampered ciphertext touches neither', async (t) => {
  // BUG for files.tar.zst.age: lib/commands/restore.ts runRestore checks the file index before the
  // database is touched (prepareFilesRestore), but the archive is first read in applyFilesRestore,
  // after restorePostgres has swapped the restored database in. The identity check
  // (lib/crypto/decrypt-check.ts checkIdentity) decrypts only the smallest encrypted file
  // (roles.json.age here), so ciphertext damage in the archive is found only then: the restore
  // exits 4 "the file archive is refused, nothing was restored" with the database already
  // replaced by the backup (the previous one kept as <db>_pre_restore_<stamp>).
  for (const f of DATA_FILES) {
    await t.test(f, async (t) => {
      await forged(t, f, flipMiddle, { postgres: true, files: true })
      t.same(snapshot(db), current, 'every row of the database as it was')
      t.same(derivedDatabases(), [], 'no database was created beside it')
      t.same(treeState(app), currentApp, 'the directory as it was')
      t.same(treeState(S, { withRoot: false }), currentS, 'nothing appeared beside it')
      // Put the database back for the next case if the restore swapped it.
      for (const kept of derivedDatabases()) {
        dropDatabase(db)
        psql('postgres', `ALTER DATABASE "${kept}" RENAME TO "${db}";`)
      }
      t.same(snapshot(db), current)
    })
  }
})

t.test('with the right key the database and the files come back exactly', async (t) => {
  const r = await run(RESTORE, ['--json', artifact], withKey(keyA.identity))
  t.equal(r.code, 0, r.stderr)
  const doc = JSON.parse(r.stdout)
  t.equal(doc.encrypted, true)
  t.match(doc.postgres, { status: 'restored', database: db, kept: new RegExp(`^${db}_pre_restore_`) })
  t.match(doc.files, { status: 'restored' })
  const restored = snapshot(db)
  for (const table of Object.keys(original)) t.equal(restored[table], original[table], `${table}: row for row`)
  t.same(Object.keys(restored).sort(), Object.keys(original).sort())
  t.equal(psql(db, `SELECT count(*) FROM customers WHERE name = '${CANARY_ROW}';`).trim(), '1')
  t.same(snapshot(doc.postgres.kept), current, 'the replaced database is kept as it was')
  t.same(treeState(app), originalApp, 'the directory, entry by entry')
  const { keptAside, staging } = restoreLeftovers(app)
  t.same(staging, [])
  t.equal(keptAside.length, 1)
  t.same(treeState(keptAside[0]!), currentApp, 'the replaced directory is kept as it was')
  dropDatabase(doc.postgres.kept)
})

// ---------------------------------------------------------------------------
// Backups that must not start.

t.test('missing or unusable recipients are refused before anything is written', async (t) => {
  const dir = tempDir(t, 'cdr-enc-bad-')
  const secret = execFileSync('sh', ['-c', 'grep AGE-SECRET-KEY "$1"', 'sh', keyA.identity], { encoding: 'utf8' }).trim()
  const recipientsWithSecret = join(dir, 'recipients-with-secret')
  writeFileSync(recipientsWithSecret, `# ops\n${stranger.recipient}\n${secret}\n`)
  const onlyComments = join(dir, 'only-comments')
  writeFileSync(onlyComments, '# nobody yet\n\n   \n')
  const cases: Array<{ name: string; env: Record<string, string>; code: number; message: RegExp }> = [
    { name: 'BACKUP_ENCRYPTION=required without recipients', env: { BACKUP_ENCRYPTION: 'required' }, code: EXIT.usage, message: /BACKUP_ENCRYPTION=required but no recipient is set/ },
    { name: 'BACKUP_ENCRYPTION=required with an empty BACKUP_AGE_RECIPIENTS', env: { BACKUP_ENCRYPTION: 'required', BACKUP_AGE_RECIPIENTS: '  ' }, code: EXIT.usage, message: /BACKUP_AGE_RECIPIENTS is set but holds no recipient/ },
    // Set but empty is a mistake (an unset variable expanded in a cron line), never a quiet request for plaintext.
    { name: 'BACKUP_AGE_RECIPIENTS set to separators only', env: { BACKUP_AGE_RECIPIENTS: ' , , ' }, code: EXIT.usage, message: /BACKUP_AGE_RECIPIENTS is set but holds no recipient/ },
    { name: 'BACKUP_AGE_RECIPIENTS_FILE set but empty', env: { BACKUP_AGE_RECIPIENTS_FILE: '' }, code: EXIT.usage, message: /BACKUP_AGE_RECIPIENTS_FILE is set but empty/ },
    { name: 'BACKUP_ENCRYPTION=maybe', env: { BACKUP_ENCRYPTION: 'maybe', BACKUP_AGE_RECIPIENTS: keyA.recipient }, code: EXIT.usage, message: /BACKUP_ENCRYPTION=.*maybe.* is not understood/ },
    { name: 'a recipient that is not an age key', env: { BACKUP_AGE_RECIPIENTS: 'age1notakey' }, code: EXIT.usage, message: /not an age recipient/ },
    { name: 'an ssh key as recipient', env: { BACKUP_AGE_RECIPIENTS: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl' }, code: EXIT.usage, message: /not an age recipient/ },
    { name: 'a valid key followed by junk', env: { BACKUP_AGE_RECIPIENTS: `${keyA.recipient},junk` }, code: EXIT.usage, message: /'junk'.* not an age recipient/ },
    { name: 'an AGE-SECRET-KEY pasted as recipient', env: { BACKUP_AGE_RECIPIENTS: secret }, code: EXIT.usage, message: /an age identity \(private key\), which is not an age recipient/ },
    { name: 'an AGE-SECRET-KEY in the recipients file', env: { BACKUP_AGE_RECIPIENTS_FILE: recipientsWithSecret }, code: EXIT.usage, message: /an age identity \(private key\)/ },
    // Mangled on the way (quotes kept by an env file, a prefix, lower case): still never echoed.
    { name: 'an AGE-SECRET-KEY in quotes', env: { BACKUP_AGE_RECIPIENTS: `"${secret}"` }, code: EXIT.usage, message: /an age identity \(private key\)/ },
    { name: 'an AGE-SECRET-KEY with a prefix', env: { BACKUP_AGE_RECIPIENTS: `public:${secret}` }, code: EXIT.usage, message: /an age identity \(private key\)/ },
    { name: 'an AGE-SECRET-KEY in lower case', env: { BACKUP_AGE_RECIPIENTS: secret.toLowerCase() }, code: EXIT.usage, message: /an age identity \(private key\)/ },
    { name: 'a recipients file with no key', env: { BACKUP_AGE_RECIPIENTS_FILE: onlyComments }, code: EXIT.usage, message: /lists no recipient/ },
    { name: 'a recipients file that does not exist', env: { BACKUP_AGE_RECIPIENTS_FILE: join(dir, 'missing') }, code: EXIT.input, message: /does not exist/ },
  ]
  // Each has an output directory of its own: they run together, then each is judged.
  const results = await Promise.all(
    cases.map(async (c) => {
      const output = join(tempDir(t, 'cdr-enc-none-'), 'backups')
      return { ...c, output, r: await run(BACKUP, ['--output', output, '--path', app], filesEnv({ ...DUMP_ENABLED, PGDATABASE: db, ...c.env })) }
    }),
  )
  for (const c of results) {
    await t.test(c.name, async (t) => {
      failsCleanly(t, c.r, c.code, c.message)
      t.notOk((c.r.stdout + c.r.stderr).toUpperCase().includes(secret.slice(16)), 'the secret key is never echoed, in any case')
      t.notOk(existsSync(c.output), 'the output directory was not even created')
    })
  }

  await t.test('an age1 key with a broken checksum', async (t) => {
    // BUG: RECIPIENT_RE (lib/crypto/age.ts) checks only the alphabet and length of an age1 key,
    // not its bech32 checksum, so a key with one mistyped character is accepted; the backup then
    // starts, `age -e` refuses the key, and the run fails with exit 1 and
    // "error: system error EPIPE; check the path and the disk, then run again": a misleading
    // runtime failure instead of a usage error (exit 2) naming the bad recipient.
    const k = keyA.recipient
    const typo = k.slice(0, 20) + (k[20] === 'q' ? 'p' : 'q') + k.slice(21)
    const output = join(tempDir(t, 'cdr-enc-typo-'), 'backups')
    const r = await run(BACKUP, ['--output', output, '--path', app], filesEnv({ BACKUP_AGE_RECIPIENTS: typo }))
    t.not(r.code, 0, 'refused')
    t.same(existsSync(output) ? completeArtifacts(output) : [], [], 'no artifact')
    t.equal(r.code, EXIT.usage, `a usage error naming the recipient: ${r.stderr.trim()}`)
    t.match(r.stderr, /recipient/, 'the message is about the recipient')
  })
})

t.test('a recipients file with comments and two keys: either identity restores', async (t) => {
  const keyB = ageKey(t)
  const keyC = ageKey(t)
  const dir = tempDir(t, 'cdr-enc-file-')
  const recipients = join(dir, 'recipients.txt')
  writeFileSync(recipients, `# backup recipients\n\n# ops laptop\n${keyB.recipient}\r\n   # offline key, in the safe\n   ${keyC.recipient}   \n${keyB.recipient}\n`)

  const dry = await run(BACKUP, ['--dry-run', '--output', join(dir, 'unused')], filesEnv({ BACKUP_AGE_RECIPIENTS_FILE: recipients, BACKUP_AGE_RECIPIENTS: keyA.recipient }))
  t.equal(dry.code, 0, dry.stderr)
  t.match(dry.stdout, /encryption: age, to 3 recipient\(s\) from BACKUP_AGE_RECIPIENTS and BACKUP_AGE_RECIPIENTS_FILE/, 'the variable and the file combine; duplicates count once')

  const source = scratchDatabase(t)
  fillDatabase(source, 200)
  const rows = snapshot(source)
  const tree = join(dir, 'tree')
  mkdirSync(tree)
  writeFileSync(join(tree, 'a.txt'), 'for two recipients\n')
  const treeBefore = treeState(tree)
  const base = join(dir, 'backups')
  const b = await run(BACKUP, ['--output', base, '--path', tree], filesEnv({ ...DUMP_ENABLED, PGDATABASE: source, BACKUP_AGE_RECIPIENTS_FILE: recipients, BACKUP_ENCRYPTION: 'required' }))
  t.equal(b.code, 0, b.stderr)
  const [n] = completeArtifacts(base)
  const path = join(base, n!)
  t.same(JSON.parse(readFileSync(join(path, 'manifest.json'), 'utf8')).encryption, { scheme: 'age', recipients: 2 })

  for (const [label, key] of [
    ['B', keyB],
    ['C', keyC],
  ] as const) {
    await t.test(`identity ${label}`, async (t) => {
      const into = scratchDatabase(t)
      dropDatabase(into)
      const target = join(tempDir(t, `cdr-enc-${label}-`), 'restored')
      const r = await run(RESTORE, ['--target', target, path], filesEnv({ PGDATABASE: into, RESTORE_POSTGRES: 'true', RESTORE_FILES: 'true', BACKUP_AGE_IDENTITY_FILE: key.identity }))
      t.equal(r.code, 0, r.stderr)
      t.ok(databaseExists(into))
      t.same(snapshot(into), rows, 'row for row')
      t.same(treeState(join(target, tree.slice(1))), treeBefore, 'entry by entry')
    })
  }
  await t.test('identity A, which was not in the file', async (t) => {
    const r = await run(RESTORE, [path], filesEnv({ RESTORE_FILES: 'true', BACKUP_AGE_IDENTITY_FILE: keyA.identity }))
    failsCleanly(t, r, EXIT.input, /not one of the recipients/)
    t.same(treeState(tree), treeBefore)
  })
})
