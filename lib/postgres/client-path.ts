import { accessSync, constants, realpathSync } from 'node:fs'
import { basename, delimiter, isAbsolute, join } from 'node:path'

/**
 * Which file to spawn for a PostgreSQL client tool.
 *
 * On Debian and Ubuntu every /usr/bin/psql, pg_dump, pg_restore… is a link
 * to pg_wrapper, a Perl script that picks a version and execs the real
 * binary: about 80–150 ms per call here, and a backup or restore makes a
 * dozen calls, one after another. The first `--version` answered through
 * the wrapper says which major version it picks for this environment (the
 * same PG* variables decide it for every tool), so later calls go straight
 * to /usr/lib/postgresql/MAJOR/bin/TOOL when that file exists. Anything
 * else (no wrapper, an unknown version, a tool missing from PATH) spawns
 * the name found on PATH exactly as before.
 */
let wrapperMajor: string | undefined

/** Called with the output of `TOOL --version` as run through PATH. */
export function learnClientVersion(versionText: string): void {
  wrapperMajor ??= /\(PostgreSQL\) (\d+)/.exec(versionText)?.[1]
}

const executable = (path: string): boolean => {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function onPath(tool: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir || !isAbsolute(dir)) continue
    const path = join(dir, tool)
    if (executable(path)) return path
  }
  return undefined
}

export function clientCommand(tool: string, env: NodeJS.ProcessEnv): string {
  if (wrapperMajor === undefined) return tool
  const found = onPath(tool, env)
  if (!found) return tool
  let real: string
  try {
    real = realpathSync(found)
  } catch {
    return tool
  }
  if (basename(real) !== 'pg_wrapper') return tool
  const direct = `/usr/lib/postgresql/${wrapperMajor}/bin/${tool}`
  return executable(direct) ? direct : tool
}
