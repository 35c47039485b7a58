import minimist from 'minimist'
import { usageError } from './errors.ts'

export interface ArgSpec {
  boolean: readonly string[]
  string: readonly string[]
  alias?: Readonly<Record<string, string>>
}

export interface ParsedArgs {
  flags: Record<string, string | boolean | undefined>
  positional: string[]
}

/**
 * minimist ignores nothing by default but also rejects nothing; the guide
 * promises unknown flags fail, so every flag is checked against the spec.
 */
export function parseArgs(argv: readonly string[], spec: ArgSpec): ParsedArgs {
  const known = new Set<string>([
    ...spec.boolean,
    ...spec.string,
    ...Object.keys(spec.alias ?? {}),
  ])
  let unknown: string | undefined
  const parsed = minimist([...argv], {
    boolean: [...spec.boolean],
    string: [...spec.string],
    alias: { ...(spec.alias ?? {}) },
    unknown: (arg) => {
      if (arg.startsWith('-') && arg !== '-' && unknown === undefined) {
        const name = arg.replace(/^--?(no-)?/, '').split('=')[0]
        if (!known.has(name)) unknown = arg.split('=')[0]
      }
      return true
    },
  })
  if (unknown !== undefined) throw usageError(`unknown option '${unknown}'`)

  const flags: ParsedArgs['flags'] = {}
  for (const name of spec.boolean) flags[name] = Boolean(parsed[name])
  for (const name of spec.string) {
    const value: unknown = parsed[name]
    if (Array.isArray(value)) throw usageError(`--${name} given more than once`)
    // minimist turns a bare `--output` into '': that must not quietly mean the current directory.
    if (value === '' && argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`))) {
      throw usageError(`--${name} needs a value`, `pass --${name} DIR`)
    }
    flags[name] = typeof value === 'string' && value !== '' ? value : undefined
  }
  const positional = parsed._.map(String)
  return { flags, positional }
}
