/**
 * Exit codes are part of the operator contract (docs/operators-guide.md):
 * runbooks and cron wrappers branch on them, so never renumber.
 */
export const ExitCode = {
  ok: 0,
  runtime: 1,
  usage: 2,
  input: 3,
  verification: 4,
  /** A check after a restore (row counts, --check-sql/-cmd/-url) failed. */
  check: 5,
  /** An objective was missed: RTO/RPO in a drill, or no backup recent enough for status --max-age. */
  objective: 6,
  interrupted: 130,
} as const

export type ExitCodeName = keyof typeof ExitCode
export type ExitCodeValue = (typeof ExitCode)[ExitCodeName]

/**
 * An expected failure: the operator gets `message` and `fix` on one line,
 * never a stack trace. Anything that is not a DrError is a bug in the tool.
 */
export class DrError extends Error {
  readonly kind: Exclude<ExitCodeName, 'ok'>
  readonly fix: string
  /** What the run measured before it failed (a drill's phases, say): added to the --json document. */
  readonly details?: Record<string, unknown>

  constructor(kind: Exclude<ExitCodeName, 'ok'>, message: string, fix = '', details?: Record<string, unknown>) {
    super(message)
    this.name = 'DrError'
    this.kind = kind
    this.fix = fix
    this.details = details
  }

  get exitCode(): ExitCodeValue {
    return ExitCode[this.kind]
  }

  /** The single line an operator sees. */
  get line(): string {
    return this.fix ? `${this.message}; ${this.fix}` : this.message
  }
}

export const usageError = (message: string, fix = 'see --help') =>
  new DrError('usage', message, fix)
export const inputError = (message: string, fix = '') =>
  new DrError('input', message, fix)
export const verificationError = (message: string, fix = '') =>
  new DrError('verification', message, fix)
export const runtimeError = (message: string, fix = '') =>
  new DrError('runtime', message, fix)
