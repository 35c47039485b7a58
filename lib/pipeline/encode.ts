import { PassThrough, type Readable, type Writable } from 'node:stream'
import type { ManifestFile } from '../artifact/manifest.ts'
import { runtimeError } from '../cli/errors.ts'
import { oneLine } from '../cli/redact.ts'
import { AGE_SUFFIX, encryptor, type Recipients } from '../crypto/age.ts'
import type { ArtifactWriter } from '../storage/store.ts'
import { DigestStream } from './checksum.ts'
import type { Tool } from './spawn.ts'
import { compressor } from './zstd.ts'

/**
 * The write half of the filter chain (pgBackRest's filter group): bytes
 * → zstd → age → hash → store. zstd and age are child processes joined by
 * OS pipes; only the stored bytes pass through this process, once, to be
 * hashed on their way to the store.
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
  const tools: { what: string; tool: Tool }[] = []
  // Each stage reads the previous child's stdout through the OS, or 'pipe' for bytes we write.
  let upstream: Readable | 'pipe' = input
  if (encoding.compress) {
    const zstd = compressor(upstream, env)
    tools.push({ what: 'zstd', tool: zstd })
    upstream = zstd.stdout!
  }
  if (encoding.recipients) {
    const age = encryptor(upstream, encoding.recipients, env)
    tools.push({ what: 'age', tool: age })
    upstream = age.stdout!
  }
  let stdin: Writable | null = input === 'pipe' ? (tools[0]?.tool.stdin ?? null) : null
  let stream: Readable
  if (upstream === 'pipe') {
    const pass = new PassThrough()
    stdin = pass
    stream = pass
  } else stream = upstream
  const file = encoding.recipients ? name + AGE_SUFFIX : name
  const digest = new DigestStream(onProgress)
  const kill = () => tools.forEach(({ tool }) => tool.kill())
  const stored = writer.writeFile(file, stream.pipe(digest), expectedBytes)
  const done = (async (): Promise<ManifestFile> => {
    try {
      const [, ...exits] = await Promise.all([stored, ...tools.map(({ tool }) => tool.exited)])
      exits.forEach((exit, i) => {
        if (exit !== 0) {
          const { what, tool } = tools[i]!
          throw runtimeError(`${what} failed while writing ${file}: ${oneLine(tool.stderr()) || `exit status ${exit}`}`, `check the ${what} installation and free space`)
        }
      })
    } catch (err) {
      kill()
      throw err
    }
    return { path: file, ...digest.digest(), ...(encoding.recipients ? { encryption: 'age' as const } : {}) }
  })()
  done.catch(() => {}) // observed by the caller; a failure elsewhere first must not count as unhandled
  return { stdin, file, done, kill }
}
