import type { Readable } from 'node:stream'
import { decryptor } from '../crypto/age.ts'
import type { Tool } from './spawn.ts'
import { decompressor } from './zstd.ts'

/**
 * The read half of the filter chain: stored bytes → age -d → zstd -d →
 * the consumer, each a child process joined to the next by an OS pipe.
 * The plaintext never passes through this process and never touches disk.
 */
export interface Decoding {
  compression: 'zstd' | undefined
  /** The age identity file, when the stored bytes are age ciphertext. */
  identity?: string
}

export function needsDecoding(decoding: Decoding): boolean {
  return decoding.compression === 'zstd' || decoding.identity !== undefined
}

/**
 * One Tool standing for the whole chain: write the stored bytes to its
 * stdin, read the plain bytes from its stdout. Its exit status is the
 * first failure along the chain, and stderr() names the tool that failed,
 * so age refusing a key is not reported as zstd seeing a short input.
 */
export function decoder(decoding: Decoding, env: NodeJS.ProcessEnv): Tool {
  const parts: { what: string; tool: Tool }[] = []
  let upstream: Readable | 'pipe' = 'pipe'
  if (decoding.identity !== undefined) {
    const age = decryptor(decoding.identity, env)
    parts.push({ what: 'age', tool: age })
    upstream = age.stdout!
  }
  if (decoding.compression === 'zstd') {
    parts.push({ what: 'zstd', tool: decompressor(env, upstream) })
  }
  if (parts.length === 1) {
    const only = parts[0]!
    return { ...only.tool, stderr: () => prefixed(only.what, only.tool.stderr()) }
  }
  let failed: { what: string; tool: Tool } | undefined
  const exited = Promise.all(parts.map((p) => p.tool.exited)).then((codes) => {
    const i = codes.findIndex((c) => c !== 0)
    if (i === -1) return 0
    failed = parts[i]
    return codes[i]!
  })
  const first = parts[0]!.tool
  const last = parts[parts.length - 1]!.tool
  return {
    process: last.process,
    stdin: first.stdin,
    stdout: last.stdout,
    exited,
    stderr: () => (failed ? prefixed(failed.what, failed.tool.stderr()) : ''),
    kill: (signal) => parts.forEach((p) => p.tool.kill(signal)),
  }
}

/** "zstd: …" or "age: …": the tool that failed, named once (zstd names itself, age does too). */
const prefixed = (what: string, text: string) => {
  const t = text.trim()
  if (t === '') return ''
  return t.startsWith(`${what}:`) ? t : `${what}: ${t}`
}
