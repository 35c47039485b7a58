import { usageError } from './errors.ts'
import { quoteValue } from './escape.ts'
import type { ParsedArgs } from './args.ts'
import { RULE_NAMES, type RetentionRules, type RuleName } from '../policy/retention.ts'

/**
 * The retention flags and their environment defaults, shared by prune.sh
 * and (later) backup.sh's prune after a successful backup:
 *
 *   --keep-last N    BACKUP_KEEP_LAST      --keep-weekly N   BACKUP_KEEP_WEEKLY
 *   --keep-hourly N  BACKUP_KEEP_HOURLY    --keep-monthly N  BACKUP_KEEP_MONTHLY
 *   --keep-daily N   BACKUP_KEEP_DAILY     --keep-yearly N   BACKUP_KEEP_YEARLY
 *
 * Pass argv through joinKeepValues and add KEEP_FLAGS to the `string`
 * list of parseArgs, then read the rules with keepRules(flags, env).
 */
export const KEEP_FLAGS: readonly string[] = RULE_NAMES.map((r) => `keep-${r}`)

export const keepFlag = (rule: RuleName) => `--keep-${rule}`
export const keepVariable = (rule: RuleName) => `BACKUP_KEEP_${rule.toUpperCase()}`

/** For --help texts. */
export const KEEP_USAGE = `  --keep-last N     keep the N newest backups (BACKUP_KEEP_LAST)
  --keep-hourly N   keep the newest backup of each of the N most recent UTC hours
                    that have one (BACKUP_KEEP_HOURLY)
  --keep-daily N    likewise for UTC days (BACKUP_KEEP_DAILY)
  --keep-weekly N   likewise for ISO weeks, Monday to Sunday (BACKUP_KEEP_WEEKLY)
  --keep-monthly N  likewise for months (BACKUP_KEEP_MONTHLY)
  --keep-yearly N   likewise for years (BACKUP_KEEP_YEARLY)`

/**
 * A count as an operator writes it: digits only. `3x`, `-1`, `1.5`, `1e3`
 * and `0x10` are refused rather than read as some number: a typo in a
 * deletion policy must not quietly mean something else.
 */
export function parseKeepCount(raw: string, what: string): number {
  const text = typeof raw === 'string' ? raw.trim() : String(raw)
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(n)) {
    throw usageError(`${what} must be a whole number from 0 up, got ${quoteValue(String(raw), 40)}`, `e.g. ${what.startsWith('--') ? `${what} 7` : `${what}=7`}`)
  }
  return n
}

/**
 * minimist reads `--keep-daily -1` as `--keep-daily` without a value plus
 * an unknown option `-1`. Joined here (`--keep-daily=-1`) before parsing,
 * so the operator hears that -1 is not a valid count instead.
 */
export function joinKeepValues(argv: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') return [...out, ...argv.slice(i)]
    const next = argv[i + 1]
    if (KEEP_FLAGS.includes(arg.slice(2)) && arg.startsWith('--') && next !== undefined && /^-[\d.]/.test(next)) {
      out.push(`${arg}=${next}`)
      i++
    } else out.push(arg)
  }
  return out
}

/**
 * The rules from the flags, each defaulting to its variable: the flag wins
 * rule by rule, so `--keep-last 2` with BACKUP_KEEP_DAILY=7 keeps both.
 * An empty variable is unset. A variable is checked even when its flag
 * overrides it, so a typo in the cron environment surfaces on the first run.
 * Rules given neither way stay undefined (not given; see requireRules).
 */
export function keepRules(flags: ParsedArgs['flags'], env: NodeJS.ProcessEnv): RetentionRules {
  const rules: RetentionRules = {}
  for (const rule of RULE_NAMES) {
    const variable = keepVariable(rule)
    const fromEnv = env[variable]?.trim() ? parseKeepCount(env[variable]!, variable) : undefined
    const flag = flags[`keep-${rule}`]
    const fromFlag = typeof flag === 'string' ? parseKeepCount(flag, keepFlag(rule)) : undefined
    const value = fromFlag ?? fromEnv
    if (value !== undefined) rules[rule] = value
  }
  return rules
}

/** Whether any rule is given: backup.sh prunes after a backup only then. */
export function hasKeepRules(rules: RetentionRules): boolean {
  return RULE_NAMES.some((r) => rules[r] !== undefined)
}
