import { usageError } from './errors.ts'
import { quoteValue } from './escape.ts'

/** --jobs, else RESTORE_JOBS: pg_restore's parallelism; undefined means the default (min(4, CPUs)). The error names whichever was given. */
export function parseJobs(flag: string | boolean | undefined, env: string | undefined): number | undefined {
  const [value, name] = flag !== undefined ? [flag, '--jobs'] : [env, 'RESTORE_JOBS']
  if (value === undefined || value === '') return undefined
  const n = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : NaN
  if (!(n >= 1 && n <= 64)) {
    throw usageError(`${name} must be a whole number from 1 to 64, got ${quoteValue(String(value), 20)}`, name === '--jobs' ? 'e.g. --jobs 2' : 'e.g. RESTORE_JOBS=2')
  }
  return n
}
