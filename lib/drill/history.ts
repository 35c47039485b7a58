import { openRegularWith } from '../artifact/open.ts'
import { inputError } from '../cli/errors.ts'
import { quoteValue } from '../cli/escape.ts'
import { fromSystemError } from '../cli/system-errors.ts'
import { parseHistoryLine, type DrillRecord } from '../policy/calibrate.ts'

/** A history line is ~300 bytes; anything far longer is damage, skipped rather than buffered. */
const MAX_LINE = 64 * 1024

/**
 * Reads the JSONL drill history a line at a time: flat memory however
 * long the history, and a torn or hand-edited line is skipped (see
 * parseHistoryLine) instead of stopping calibration.
 */
export async function readHistory(path: string): Promise<{ records: DrillRecord[]; skipped: number }> {
  const handle = await openRegularWith(path, {
    notRegular: (kind) => inputError(`drill history ${quoteValue(path)} is not a regular file (${kind})`, 'point --report at the report file'),
    other: (err) =>
      (err as NodeJS.ErrnoException)?.code === 'ENOENT'
        ? inputError(`no drill history at ${quoteValue(path)}`, 'run drill.sh --report FILE first; the history is kept beside FILE')
        : (fromSystemError(err) ?? inputError(`drill history ${quoteValue(path)} cannot be read`, 'check the --report path')),
  })
  try {
    const records: DrillRecord[] = []
    let skipped = 0
    let pending = ''
    let overlong = false
    const take = (line: string) => {
      const record = parseHistoryLine(line)
      if (record) records.push(record)
      else if (line.trim()) skipped++
    }
    for await (const chunk of handle.createReadStream({ encoding: 'utf8', autoClose: false })) {
      const parts = (pending + (chunk as string)).split('\n')
      pending = parts.pop() ?? ''
      for (const line of parts) {
        if (overlong) {
          overlong = false
          skipped++
          continue
        }
        take(line)
      }
      if (pending.length > MAX_LINE) {
        pending = ''
        overlong = true
      }
    }
    if (overlong) skipped++
    else take(pending)
    return { records, skipped }
  } finally {
    await handle.close()
  }
}
