import { usageError } from './errors.ts'
import { quoteValue } from './escape.ts'

/** --jobs / RESTORE_JOBS: pg_restore's parallelism; undefined means the default (min(4, CPUs)). */
export function parseJobs(value: string | boolean | undefined): number | undefined {
  if (value === undefined || value === '') return undefined
  const n = Number(value)
  if (typeof value === 'boolean' || !Number.isInteger(n) || n < 1 || n > 64) {
    throw usageError(`--jobs must be a whole number from 1 to 64, got ${quoteValue(String(value), 20)}`, 'e.g. --jobs 2')
  }
  return n
}
