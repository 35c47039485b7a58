import minimist from 'minimist'
import { usageError } from './errors.ts'
import { quoteValue, shellWord } from './escape.ts'
import { parseSwitch } from './switches.ts'

export interface ArgSpec {
  boolean: readonly string[]
  string: readonly string[]
  /** Flags that may be given more than once; their values are collected in order. */
  repeatable?: readonly string[]
  alias?: Readonly<Record<string, string>>
}

export interface ParsedArgs {
  flags: Record<string, string | boolean | undefined>
  lists: Record<string, string[]>
  positional: string[]
}

/**
 * minimist reads `--dry-run=no` as yes and lets the last of
 * `--json --no-json` win. Boolean flags are settled here first, with the
 * same strict yes/no reading as the environment switches, and replaced by
 * their bare spelling before minimist sees them.
 */
function settleBooleans(argv: readonly string[], spec: ArgSpec): { argv: string[]; values: Map<string, boolean> } {
  const booleans = new Set(spec.boolean)
  const values = new Map<string, boolean>()
  const out: string[] = []
  let rest = false
  for (const arg of argv) {
    if (rest || arg === '--') {
      rest = true
      out.push(arg)
      continue
    }
    const m = /^--(no-)?([^=]+)(?:=([\s\S]*))?$/.exec(arg)
    const name = m?.[2]
    if (!m || name === undefined || !booleans.has(name)) {
      out.push(arg)
      continue
    }
    let value = m[3] === undefined ? true : parseSwitch(m[3], `--${name}`)
    if (m[1]) value = !value
    const earlier = values.get(name)
    if (earlier !== undefined && earlier !== value) {
      throw usageError(`--${name} is given both on and off`, `pass --${name} once`)
    }
    values.set(name, value)
    out.push(value ? `--${name}` : `--no-${name}`)
  }
  return { argv: out, values }
}

/** Whether output should be JSON, decided before parsing so that usage errors are JSON too. */
export function wantsJson(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false
    const m = /^--json(?:=([\s\S]*))?$/.exec(arg)
    if (!m) continue
    try {
      return m[1] === undefined || parseSwitch(m[1], '--json')
    } catch {
      return true // `--json=maybe` still asked for machine output; the parse error comes in JSON
    }
  }
  return false
}

/**
 * minimist takes `--partial-age -1h` as a flag without a value followed by
 * the options -1 and -h; a directory named `-x` after `--output` likewise.
 * Named here as what it is, with the spelling that passes such a value.
 */
function refuseOptionLikeValues(argv: readonly string[], spec: ArgSpec): void {
  const takesValue = new Set([...spec.string, ...(spec.repeatable ?? [])])
  for (let i = 0; i < argv.length - 1; i++) {
    const arg = argv[i]!
    if (arg === '--') return
    const name = /^--([^=]+)$/.exec(arg)?.[1]
    const next = argv[i + 1]!
    // minimist's own test for "this is an option, not a value".
    if (name === undefined || !takesValue.has(name) || !/^(-|--)[^-]/.test(next)) continue
    const shown = quoteValue(next, 60)
    if (/^--[^=]+/.test(next)) throw usageError(`--${name} needs a value (${shown} follows it)`, `pass --${name} VALUE`)
    throw usageError(`--${name} needs a value: ${shown} looks like an option`, `to pass a value that starts with '-', write --${name}=${next.length > 60 ? 'VALUE' : shellWord(next)}`)
  }
}

/**
 * minimist ignores nothing by default but also rejects nothing; the guide
 * promises unknown flags fail, so every flag is checked against the spec.
 */
export function parseArgs(argv: readonly string[], spec: ArgSpec): ParsedArgs {
  refuseOptionLikeValues(argv, spec)
  const settled = settleBooleans(argv, spec)
  const repeatable = new Set(spec.repeatable ?? [])
  const known = new Set<string>([...spec.boolean, ...spec.string, ...repeatable, ...Object.keys(spec.alias ?? {})])
  let unknown: string | undefined
  const parsed = minimist(settled.argv, {
    boolean: [...spec.boolean],
    string: [...spec.string, ...repeatable],
    alias: { ...(spec.alias ?? {}) },
    unknown: (arg) => {
      if (arg.startsWith('-') && arg !== '-' && unknown === undefined) {
        const name = arg.replace(/^--?(no-)?/, '').split('=')[0]
        if (!known.has(name)) unknown = arg.split('=')[0]
      }
      return true
    },
  })
  if (unknown !== undefined) throw usageError(`unknown option ${quoteValue(unknown, 60)}`)

  const given = (name: string) => argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  const flags: ParsedArgs['flags'] = {}
  for (const name of spec.boolean) flags[name] = settled.values.get(name) ?? Boolean(parsed[name])
  for (const name of spec.string) {
    const value: unknown = parsed[name]
    if (Array.isArray(value)) throw usageError(`--${name} given more than once`)
    // minimist turns a bare `--output` into '': that must not quietly mean the current directory.
    if (value === '' && given(name)) throw usageError(`--${name} needs a value`, `pass --${name} VALUE`)
    flags[name] = typeof value === 'string' && value !== '' ? value : undefined
  }
  const lists: ParsedArgs['lists'] = {}
  for (const name of repeatable) {
    const raw: unknown = parsed[name]
    const values = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).map(String)
    if (values.some((v) => v === '')) throw usageError(`--${name} needs a value`, `pass --${name} VALUE`)
    lists[name] = values
  }
  const positional = parsed._.map(String)
  return { flags, lists, positional }
}

/**
 * Where the backups are, for commands that take one location: the single
 * positional argument, else BACKUP_BASE. `example` completes the fix, e.g.
 * 'status.sh /path/to/backups'.
 */
export function backupBaseFrom(positional: readonly string[], env: NodeJS.ProcessEnv, example: string): string {
  if (positional.length > 1) throw usageError(`unexpected argument ${quoteValue(positional[1]!)}`, 'pass one backup directory')
  if (positional[0] === '') throw usageError('the backup directory argument is empty', 'pass a path such as /var/backups/conductor')
  const base = positional[0] ?? (env.BACKUP_BASE || undefined)
  if (base === undefined || base === '') throw usageError('BACKUP_BASE is not set', `set BACKUP_BASE to the backup directory, or pass it: ${example}`)
  return base
}
