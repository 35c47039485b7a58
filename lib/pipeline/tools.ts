import { runtimeError } from '../cli/errors.ts'
import { spawnTool } from './spawn.ts'

/** Debian packages that provide the tools the pipeline spawns, for the fix in the message. */
const PACKAGES: Record<string, string> = { tar: 'tar', zstd: 'zstd', age: 'age', pg_dump: 'postgresql-client', pg_restore: 'postgresql-client' }

/**
 * Each tool answers `--version`: checked before a backup starts (and by
 * its dry run), so a missing age or zstd is found by the plan, not half
 * way through writing an artifact.
 */
export async function checkTools(tools: readonly string[], env: NodeJS.ProcessEnv): Promise<void> {
  await Promise.all(
    [...new Set(tools)].map(async (tool) => {
      const missing = runtimeError(`${tool} not found on PATH`, `install it (apt-get install ${PACKAGES[tool] ?? tool})`)
      const probe = spawnTool(tool, ['--version'], { env, stdin: 'ignore', stdout: 'ignore', missing })
      const exit = await probe.exited
      if (exit !== 0) throw runtimeError(`${tool} --version failed (exit status ${exit})`, `check the ${tool} installation`)
    }),
  )
}
