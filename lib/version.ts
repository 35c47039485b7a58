import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The project's package.json, found by walking up from this module: it is
 * lib/version.ts in the sources and a chunk under .bundle/KEY/ when started
 * through lib/cli/launch.sh, at different depths.
 */
function findPackage(): { name: string; version: string } {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const path = join(dir, 'package.json')
    if (existsSync(path)) {
      const pkg = JSON.parse(readFileSync(path, 'utf8')) as { name?: unknown; version?: unknown }
      if (pkg.name === 'conductor-dr' && typeof pkg.version === 'string') return { name: pkg.name, version: pkg.version }
    }
    const up = dirname(dir)
    if (up === dir) return { name: 'conductor-dr', version: 'unknown' }
    dir = up
  }
}

const pkg = findPackage()

export const TOOL = { name: pkg.name, version: pkg.version } as const
