/** One check after a restore, as the restore report shows it. */
export interface CheckResult {
  /** What was checked, safe to print: 'row counts', 'sql:FILE', 'cmd:CMD', 'url:URL' (no credentials). */
  name: string
  kind: 'row-counts' | 'sql' | 'cmd' | 'url'
  ok: boolean
  durationMs: number
  /** One line, redacted: what passed, or why it failed. */
  detail: string
  /** A failing check's output tail (redacted, bounded), for the report. */
  output?: string
}

/** The operator's own checks, from --check-sql, --check-cmd and --check-url (each repeatable). */
export interface CheckSpec {
  sql: string[]
  cmd: string[]
  url: string[]
  /** Per check; the caller chooses the default. */
  timeoutMs: number
}
