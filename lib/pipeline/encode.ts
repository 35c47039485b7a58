import { PassThrough, type Readable, type Writable } from 'node:stream'
import type { ManifestFile } from '../artifact/manifest.ts'
import { runtimeError, type DrError } from '../cli/errors.ts'
import { constants } from 'node:os'
import { oneLine } from '../cli/redact.ts'
import { fromToolWriteFailure } from '../cli/system-errors.ts'
import { AGE_SUFFIX, encryptor, type Recipients } from '../crypto/age.ts'
import type { ArtifactWriter, DirectFile } from '../storage/store.ts'
import { DigestStream, type Digest } from './checksum.ts'
import type { Tool } from './spawn.ts'
import { compressor } from './zstd.ts'

/**
 * The write half of the filter chain (pgBackRest's filter group): bytes
 * → zstd → age → hash → store. zstd and age are child processes joined by
 * OS pipes. On a bucket the stored bytes pass through this process, once,
 * hashed on their way to the upload; on a local store the last child
 * writes the file itself and the file is hashed as it grows.
 */
export interface Encoding {
  compress: boolean
  recipients: Recipients | null
}

export interface EncodedFile {
  /** Where to write the plain bytes when the input is 'pipe'. */
  readonly stdin: Writable | null
  /** The stored file's name: `name`, plus .age when encrypted. */
  readonly file: string
  /** Resolves when every filter succeeded and the store has the file durably. */
  readonly done: Promise<ManifestFile>
  /** Stops every process of the chain (a failure elsewhere, or an interrupt). */
  kill(): void
}

export function storeEncoded(
  writer: ArtifactWriter,
  name: string,
  input: Readable | 'pipe',
  encoding: Encoding,
  env: NodeJS.ProcessEnv,
  onProgress?: (bytes: number) => void,
  /** About how many bytes will be stored, when known (sizes a bucket's multipart parts). */
  expectedBytes?: number,
): EncodedFile {
  const file = encoding.recipients ? name + AGE_SUFFIX : name
  // On a local store the last child writes the file itself and the bytes are hashed from the file.
  // If it cannot be opened, the streamed way below meets the same error and reports it through `done`.
  let direct: DirectFile | undefined
  try {
    direct = encoding.compress || encoding.recipients ? writer.directFile?.(file) : undefined
  } catch {
    direct = undefined
  }
  const tools: { what: string; tool: Tool }[] = []
  // Each stage reads the previous child's stdout through the OS, or 'pipe' for bytes we write.
  let upstream: Readable | 'pipe' = input
  try {
    if (encoding.compress) {
      const zstd = compressor(upstream, env, direct && !encoding.recipients ? direct.fd : 'pipe')
      tools.push({ what: 'zstd', tool: zstd })
      upstream = zstd.stdout!
    }
    if (encoding.recipients) {
      const age = encryptor(upstream, encoding.recipients, env, direct ? direct.fd : 'pipe')
      tools.push({ what: 'age', tool: age })
      upstream = age.stdout!
    }
  } catch (err) {
    tools.forEach(({ tool }) => tool.kill())
    direct?.finish(Promise.reject(err)).catch(() => {}) // closes the descriptor
    throw err
  }
  let stdin: Writable | null = input === 'pipe' ? (tools[0]?.tool.stdin ?? null) : null
  const kill = () => tools.forEach(({ tool }) => tool.kill())
  const exitsOk = Promise.all(tools.map(({ tool }) => tool.exited)).then((exits) => {
    const failure = chainFailure(
      tools.map(({ what, tool }, i) => ({ what, exit: exits[i]!, stderr: oneLine(tool.stderr()) })),
      file,
      direct?.path ?? `${writer.location}/${file}`,
    )
    if (failure) throw failure
  })
  let stored: Promise<Digest>
  if (direct) stored = direct.finish(exitsOk, onProgress)
  else {
    let stream: Readable
    if (upstream === 'pipe') {
      const pass = new PassThrough()
      stdin = pass
      stream = pass
    } else stream = upstream
    const digest = new DigestStream(onProgress)
    stored = Promise.all([writer.writeFile(file, stream.pipe(digest), expectedBytes), exitsOk]).then(() => digest.digest())
  }
  const done = (async (): Promise<ManifestFile> => {
    let digest: Digest
    try {
      digest = await stored
    } catch (err) {
      kill()
      throw err
    }
    return { path: file, ...digest, ...(encoding.recipients ? { encryption: 'age' as const } : {}) }
  })()
  done.catch(() => {}) // observed by the caller; a failure elsewhere first must not count as unhandled
  exitsOk.catch(() => {}) // reported through `done`
  return { stdin, file, done, kill }
}

export interface ToolExit {
  what: string
  exit: number
  stderr: string
}

/** A child that died of a pipe closed under it: a consequence of a failure further down the chain, not its cause. */
export const brokenPipe = (t: ToolExit) => t.exit === 128 + constants.signals.SIGPIPE || /Broken pipe|Connection reset by peer/i.test(t.stderr)

/**
 * Pure: the one error to report for a chain (zstd, then age) writing
 * `file` at `path`, or null when every child exited 0. A full disk or a
 * size limit wins, from whichever child met it (the last one writes the
 * file); else the first failure that is not just a broken pipe.
 */
export function chainFailure(exits: ToolExit[], file: string, path: string): DrError | null {
  const failed = exits.filter((t) => t.exit !== 0)
  if (failed.length === 0) return null
  for (const t of [...failed].reverse()) {
    const storage = fromToolWriteFailure(t.stderr, t.exit, path)
    if (storage) return storage
  }
  const cause = failed.find((t) => !brokenPipe(t)) ?? failed[0]!
  return runtimeError(`${cause.what} failed while writing ${file}: ${cause.stderr || `exit status ${cause.exit}`}`, `check the ${cause.what} installation and free space`)
}
