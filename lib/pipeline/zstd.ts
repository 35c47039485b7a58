import type { Readable } from 'node:stream'
import { runtimeError } from '../cli/errors.ts'
import { spawnTool, type Tool } from './spawn.ts'

/**
 * zstd as a spawned, multi-threaded filter. Measured here on 2 cores:
 * `pg_dump -Fc -Z0 | zstd -T0 -3` takes about a third of the time of
 * pg_dump's own single-threaded zlib, and its output is smaller.
 */
export const ZSTD_LEVEL = 3

const missing = runtimeError('zstd not found on PATH', 'install it (apt-get install zstd)')

/** `output`: 'pipe' to read it here, or a descriptor to write a file directly. */
export function compressor(input: Readable | 'pipe', env: NodeJS.ProcessEnv, output: 'pipe' | number = 'pipe'): Tool {
  return spawnTool('zstd', ['-T0', `-${ZSTD_LEVEL}`, '-q', '-c'], { env, stdin: input, stdout: output, missing })
}

export function decompressor(env: NodeJS.ProcessEnv, input: Readable | 'pipe' = 'pipe'): Tool {
  return spawnTool('zstd', ['-d', '-q', '-c'], { env, stdin: input, stdout: 'pipe', missing })
}
