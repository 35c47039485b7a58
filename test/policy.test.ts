// Pure policy decisions behind DR drills: durations, RPO/RTO verdicts, calibration.
import t from 'tap'
import { DrError } from '../lib/cli/errors.ts'
import { formatDuration, parseDuration } from '../lib/policy/duration.ts'
import { judge, NOW, rpoFromBackups, type BackupPoint } from '../lib/policy/objectives.ts'
import { median, parseHistoryLine, proposeObjective, summarize, type DrillRecord } from '../lib/policy/calibrate.ts'

const S = 1000
const M = 60 * S
const H = 60 * M
const D = 24 * H

function usageFailure(fn: () => unknown): DrError {
  try {
    fn()
  } catch (err) {
    if (err instanceof DrError) return err
    throw err
  }
  throw new Error('expected a usage error, nothing was thrown')
}

t.test('parseDuration accepts', async (t) => {
  const cases: Array<[string, number]> = [
    ['500ms', 500],
    ['90s', 90 * S],
    ['15m', 15 * M],
    ['4h', 4 * H],
    ['1d', D],
    ['1w', 7 * D],
    ['1h30m', H + 30 * M],
    ['1d2h3m4s5ms', D + 2 * H + 3 * M + 4 * S + 5],
    ['  15m\t', 15 * M],
    ['4H', 4 * H],
    ['1H30M', H + 30 * M],
    ['500MS', 500],
    ['1.5h', 90 * M],
    ['0h30m', 30 * M],
    ['007s', 7 * S],
  ]
  for (const [text, ms] of cases) t.equal(parseDuration(text, '--rpo'), ms, JSON.stringify(text))
})

t.test('parseDuration rejects with a usage error naming the setting', async (t) => {
  const cases: Array<{ text: unknown; message: RegExp }> = [
    { text: '', message: /^--rpo must be a duration like 90s, 15m, 4h or 1d, got ''$/ },
    { text: '   ', message: /got '   '$/ },
    { text: '15', message: /must be a duration .*got '15'$/ },
    { text: 15, message: /must be a duration .*got '15'$/ },
    { text: true, message: /must be a duration .*got 'true'$/ },
    { text: '-5m', message: /must be a duration/ },
    { text: '+5m', message: /must be a duration/ },
    { text: 'NaN', message: /must be a duration/ },
    { text: 'NaNs', message: /must be a duration/ },
    { text: 'Infinitys', message: /must be a duration/ },
    { text: '1e3s', message: /must be a duration/ },
    { text: '5y', message: /must be a duration/ },
    { text: '5 m', message: /must be a duration/ },
    { text: '1h 30m', message: /must be a duration/ },
    { text: '1h30', message: /must be a duration/ },
    { text: 'h', message: /must be a duration/ },
    { text: '.5h', message: /must be a duration/ },
    { text: '1.h', message: /must be a duration/ },
    { text: '30m1h', message: /must be a duration/ },
    { text: '1h1h', message: /must be a duration/ },
    { text: '0s', message: /^--rpo must be greater than zero, got '0s'$/ },
    { text: '0h0m', message: /must be greater than zero/ },
    { text: '0.0001s', message: /must be greater than zero/ },
    { text: '99999999999999999999ms', message: /^--rpo is too large/ },
    { text: '9'.repeat(400) + 'w', message: /^--rpo is too large/ },
    { text: '15000000000w', message: /^--rpo is too large/ },
  ]
  for (const c of cases) {
    const err = usageFailure(() => parseDuration(c.text as string, '--rpo'))
    t.equal(err.kind, 'usage', `${JSON.stringify(c.text)} kind`)
    t.match(err.message, c.message, `${JSON.stringify(c.text)} message`)
    t.match(err.fix, /ms, s, m, h, d, w/, 'fix lists the units')
    t.notMatch(err.line, /[\n\r]/, 'one line')
  }
})

t.test('parseDuration keeps the echoed value on one line and short', async (t) => {
  const err = usageFailure(() => parseDuration('1h\n\x1b[31mred\x7f\x85', '--rto'))
  t.equal(err.kind, 'usage')
  t.match(err.message, /^--rto /)
  t.ok(err.message.includes(String.raw`got '1h\n\x1b[31mred\x7f\x85'`), err.message)
  t.notMatch(err.line, /[\x00-\x1f\x7f-\x9f]/)

  const long = usageFailure(() => parseDuration('x'.repeat(500), '--rpo'))
  t.equal(long.message, `--rpo must be a duration like 90s, 15m, 4h or 1d, got '${'x'.repeat(63)}…'`)
})

t.test('formatDuration', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '0ms'],
    [40, '40ms'],
    [400, '0.4s'],
    [12_300, '12.3s'],
    [59_940, '59.9s'],
    [59_960, '1m 00s'],
    [4 * M + 5 * S, '4m 05s'],
    [59 * M + 59_600, '1h 00m'],
    [2 * H + 3 * M, '2h 03m'],
    [23 * H + 59 * M + 40 * S, '1d 00h'],
    [3 * D + 4 * H, '3d 04h'],
    [400 * D, '400d 00h'],
    [-12_300, '-12.3s'],
  ]
  for (const [ms, text] of cases) t.equal(formatDuration(ms), text, String(ms))
  t.equal(formatDuration(parseDuration('2h3m', '--rto')), '2h 03m', 'round trip')
})

const now = new Date('2024-03-15T12:00:00Z')
const ago = (ms: number, name?: string): BackupPoint => ({ name: name ?? `b-${ms}`, createdAt: new Date(now.getTime() - ms) })

t.test('rpoFromBackups', async (t) => {
  const cases: Array<{ name: string; points: BackupPoint[]; window: number; want: object }> = [
    {
      name: 'no backups at all',
      points: [],
      window: 7 * D,
      want: { newestAgeMs: null, newest: null, largestGapMs: null, gapBetween: null, worstCaseMs: null, backupsInWindow: 0 },
    },
    {
      name: 'a single backup: the exposure is its age',
      points: [ago(3 * H, 'only')],
      window: D,
      want: { newestAgeMs: 3 * H, newest: 'only', largestGapMs: 3 * H, gapBetween: ['only', NOW], worstCaseMs: 3 * H, backupsInWindow: 1 },
    },
    {
      name: 'largest gap inside the window beats the current exposure',
      points: [ago(20 * H, 'a'), ago(4 * H, 'b'), ago(1 * H, 'c')],
      window: D,
      want: { newestAgeMs: H, newest: 'c', largestGapMs: 16 * H, gapBetween: ['a', 'b'], worstCaseMs: 16 * H, backupsInWindow: 3 },
    },
    {
      name: 'the current exposure is the largest gap',
      points: [ago(6 * H, 'a'), ago(5 * H, 'b')],
      window: D,
      want: { newestAgeMs: 5 * H, newest: 'b', largestGapMs: 5 * H, gapBetween: ['b', NOW], worstCaseMs: 5 * H, backupsInWindow: 2 },
    },
    {
      name: 'the backup before the window anchors the first gap',
      points: [ago(10 * D, 'old'), ago(30 * H, 'anchor'), ago(2 * H, 'a'), ago(1 * H, 'b')],
      window: D,
      want: { newestAgeMs: H, newest: 'b', largestGapMs: 28 * H, gapBetween: ['anchor', 'a'], worstCaseMs: 28 * H, backupsInWindow: 2 },
    },
    {
      name: 'gaps entirely before the window do not count',
      points: [ago(10 * D, 'old'), ago(2 * D, 'anchor'), ago(20 * H, 'a'), ago(10 * H, 'b')],
      window: D,
      // 'old'→'anchor' (8d) is outside; 'anchor'→'a' is 28h.
      want: { newestAgeMs: 10 * H, newest: 'b', largestGapMs: 28 * H, gapBetween: ['anchor', 'a'], worstCaseMs: 28 * H, backupsInWindow: 2 },
    },
    {
      name: 'nothing in the window: the last backup before it is the exposure',
      points: [ago(5 * D, 'older'), ago(3 * D, 'last')],
      window: D,
      want: { newestAgeMs: 3 * D, newest: 'last', largestGapMs: 3 * D, gapBetween: ['last', NOW], worstCaseMs: 3 * D, backupsInWindow: 0 },
    },
    {
      name: 'a backup exactly at the window start is inside it',
      points: [ago(2 * D, 'anchor'), ago(D, 'edge')],
      window: D,
      want: { newestAgeMs: D, newest: 'edge', largestGapMs: D, gapBetween: ['anchor', 'edge'], worstCaseMs: D, backupsInWindow: 1 },
    },
    {
      name: 'a future-dated backup counts as age 0 and closes the current gap',
      points: [ago(5 * H, 'a'), ago(-10 * M, 'skewed')],
      window: D,
      want: { newestAgeMs: 0, newest: 'skewed', largestGapMs: 5 * H, gapBetween: ['a', 'skewed'], worstCaseMs: 5 * H, backupsInWindow: 2 },
    },
    {
      name: 'only a future-dated backup',
      points: [ago(-D, 'skewed')],
      window: D,
      want: { newestAgeMs: 0, newest: 'skewed', largestGapMs: 0, gapBetween: ['skewed', NOW], worstCaseMs: 0, backupsInWindow: 1 },
    },
    {
      name: 'input order does not matter',
      points: [ago(1 * H, 'c'), ago(20 * H, 'a'), ago(4 * H, 'b')],
      window: D,
      want: { newestAgeMs: H, newest: 'c', largestGapMs: 16 * H, gapBetween: ['a', 'b'], worstCaseMs: 16 * H, backupsInWindow: 3 },
    },
    {
      name: 'invalid dates are ignored',
      points: [{ name: 'broken', createdAt: new Date('nope') }, ago(2 * H, 'a')],
      window: D,
      want: { newestAgeMs: 2 * H, newest: 'a', largestGapMs: 2 * H, gapBetween: ['a', NOW], worstCaseMs: 2 * H, backupsInWindow: 1 },
    },
    {
      name: 'an unbounded window sees all history',
      points: [ago(30 * D, 'a'), ago(20 * D, 'b'), ago(1 * H, 'c')],
      window: Infinity,
      want: { newestAgeMs: H, newest: 'c', largestGapMs: 20 * D - H, gapBetween: ['b', 'c'], worstCaseMs: 20 * D - H, backupsInWindow: 3 },
    },
  ]
  for (const c of cases) t.same(rpoFromBackups(c.points, now, c.window), c.want, c.name)

  const points = [ago(2 * H, 'a')]
  rpoFromBackups(points, now, D)
  t.equal(points[0]!.name, 'a', 'input is not modified')
  t.throws(() => rpoFromBackups([], new Date('nope'), D), RangeError)
  t.throws(() => rpoFromBackups([], now, -1), RangeError)
  t.throws(() => rpoFromBackups([], now, NaN), RangeError)
})

t.test('judge', async (t) => {
  const cases: Array<{ name: string; measured: { rtoMs?: number; rpoMs?: number | null }; targets: { rtoMs?: number; rpoMs?: number }; want: object }> = [
    { name: 'no targets', measured: { rtoMs: 5 * M, rpoMs: H }, targets: {}, want: { rto: 'unset', rpo: 'unset', met: true } },
    { name: 'both met', measured: { rtoMs: 5 * M, rpoMs: H }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'met', rpo: 'met', met: true } },
    { name: 'exactly on target is met', measured: { rtoMs: 10 * M, rpoMs: 4 * H }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'met', rpo: 'met', met: true } },
    { name: 'rto missed', measured: { rtoMs: 11 * M, rpoMs: H }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'missed', rpo: 'met', met: false } },
    { name: 'rpo missed', measured: { rtoMs: 5 * M, rpoMs: 5 * H }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'met', rpo: 'missed', met: false } },
    { name: 'no backup at all misses the rpo', measured: { rpoMs: null }, targets: { rpoMs: 4 * H }, want: { rto: 'unset', rpo: 'missed', met: false } },
    { name: 'no backup and no rpo target', measured: { rpoMs: null }, targets: { rtoMs: 10 * M }, want: { rto: 'missed', rpo: 'unset', met: false } },
    { name: 'unmeasured rto misses its target', measured: { rpoMs: H }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'missed', rpo: 'met', met: false } },
    { name: 'NaN is missed', measured: { rtoMs: NaN, rpoMs: NaN }, targets: { rtoMs: 10 * M, rpoMs: 4 * H }, want: { rto: 'missed', rpo: 'missed', met: false } },
    { name: 'only rto set', measured: { rtoMs: 5 * M }, targets: { rtoMs: 10 * M }, want: { rto: 'met', rpo: 'unset', met: true } },
  ]
  for (const c of cases) t.same(judge(c.measured, c.targets), c.want, c.name)
})

t.test('median', async (t) => {
  const cases: Array<[number[], number | null]> = [
    [[], null],
    [[7], 7],
    [[3, 1, 2], 2],
    [[4, 1, 3, 2], 2.5],
    [[10, 20], 15],
    [[5, 5, 5, 100], 5],
  ]
  for (const [values, want] of cases) t.equal(median(values), want, JSON.stringify(values))
  const values = [3, 1, 2]
  median(values)
  t.same(values, [3, 1, 2], 'input is not sorted in place')
})

t.test('proposeObjective rounds worst × 1.5 up to a nice step', async (t) => {
  const cases: Array<[string, number, number]> = [
    ['zero still gives one step', 0, M],
    ['tiny rounds up to a minute', 1, M],
    ['40s × 1.5 = 60s exactly', 40 * S, M],
    ['41s × 1.5 = 61.5s', 41 * S, 2 * M],
    ['30m × 1.5 = 45m', 30 * M, 45 * M],
    ['39m59s × 1.5 just under 1h', 39 * M + 59 * S, 60 * M],
    ['40m × 1.5 = 1h exactly, 15m steps', 40 * M, H],
    ['41m × 1.5 = 61.5m', 41 * M, H + 15 * M],
    ['2h × 1.5 = 3h', 2 * H, 3 * H],
    ['2h01m × 1.5 = 3h01.5m', 2 * H + M, 3 * H + 15 * M],
    ['15h59m × 1.5 just under 1d', 15 * H + 59 * M, 24 * H],
    ['16h × 1.5 = 1d exactly, hour steps', 16 * H, D],
    ['16h01m × 1.5', 16 * H + M, D + H],
    ['3d × 1.5', 3 * D, 4 * D + 12 * H],
  ]
  for (const [name, worst, want] of cases) t.equal(proposeObjective(worst), want, name)
})

t.test('parseHistoryLine', async (t) => {
  const good: DrillRecord = { at: '2024-03-15T10:00:00Z', artifact: 'conductor-backup-20240315T090000Z', rtoMs: 120_000, rpoWorstMs: 3_600_000, ok: true }
  const line = (over: object) => JSON.stringify({ ...good, ...over })
  t.same(parseHistoryLine(JSON.stringify(good)), good, 'valid line')
  t.same(parseHistoryLine(`  ${JSON.stringify(good)}\r`), good, 'CRLF and padding')
  t.same(parseHistoryLine(line({ rtoMs: null, rpoWorstMs: null, ok: false })), { ...good, rtoMs: null, rpoWorstMs: null, ok: false }, 'nulls')
  const noArtifact = { ...good, artifact: '', rtoMs: null, rpoWorstMs: null, ok: false }
  t.same(parseHistoryLine(JSON.stringify(noArtifact)), noArtifact, 'a drill that failed before finding an artifact (as drill.sh writes it)')
  t.same(parseHistoryLine(line({ at: '2024-03-15T10:00:00.123+02:00' }))?.at, '2024-03-15T10:00:00.123+02:00', 'offset and fraction')
  t.same(parseHistoryLine(line({ at: '2024-02-29T10:00:00Z' }))?.at, '2024-02-29T10:00:00Z', '29 February of a leap year')
  const extra = parseHistoryLine(JSON.stringify(good).replace(/}$/, ',"extra":"x","__proto__":{"polluted":true}}'))
  t.same(extra, good, 'only known fields are kept')
  t.equal(Object.getPrototypeOf(extra), Object.prototype, 'prototype untouched')
  t.equal(Object.keys(extra ?? {}).length, 5)

  const bad: Array<[string, string]> = [
    ['empty', ''],
    ['blank', '   \t'],
    ['torn', JSON.stringify(good).slice(0, 30)],
    ['not json', 'hello'],
    ['null', 'null'],
    ['array', '[1,2]'],
    ['number', '42'],
    ['string', '"x"'],
    ['missing at', JSON.stringify({ ...good, at: undefined })],
    ['at not a string', line({ at: 1710496800000 })],
    ['at not ISO', line({ at: 'yesterday' })],
    ['at without zone', line({ at: '2024-03-15T10:00:00' })],
    ['at date only', line({ at: '2024-03-15' })],
    ['at impossible', line({ at: '2024-13-45T10:00:00Z' })],
    ['at 30 February (Date.parse makes it 1 March)', line({ at: '2024-02-30T10:00:00Z' })],
    ['at 31 April, with an offset', line({ at: '2024-04-31T10:00:00+02:00' })],
    ['at 29 February of a common year', line({ at: '2023-02-29T10:00:00Z' })],
    ['artifact missing', JSON.stringify({ ...good, artifact: undefined })],
    ['artifact empty in a passed drill', line({ artifact: '' })],
    ['artifact not a string', line({ artifact: 7 })],
    ['rtoMs a string', line({ rtoMs: '120000' })],
    ['rtoMs negative', line({ rtoMs: -1 })],
    ['rtoMs missing', JSON.stringify({ ...good, rtoMs: undefined })],
    ['rpoWorstMs a string', line({ rpoWorstMs: '1h' })],
    ['rpoWorstMs huge', '{"at":"2024-03-15T10:00:00Z","artifact":"a","rtoMs":1,"rpoWorstMs":1e999,"ok":true}'],
    ['ok a string', line({ ok: 'true' })],
    ['ok missing', JSON.stringify({ ...good, ok: undefined })],
  ]
  for (const [name, text] of bad) t.equal(parseHistoryLine(text), undefined, name)
})

t.test('summarize', async (t) => {
  const rec = (agoMs: number, rtoMs: number | null, rpoWorstMs: number | null, ok = true): DrillRecord => ({
    at: new Date(now.getTime() - agoMs).toISOString(),
    artifact: 'conductor-backup-20240315T090000Z',
    rtoMs,
    rpoWorstMs,
    ok,
  })
  const cases: Array<{ name: string; records: DrillRecord[]; window: number; want: object }> = [
    {
      name: 'no history',
      records: [],
      window: 30 * D,
      want: { drills: 0, passed: 0, rto: null, rpo: null, proposed: null },
    },
    {
      name: 'odd count',
      records: [rec(D, 2 * M, H), rec(2 * D, 4 * M, 3 * H), rec(3 * D, 10 * M, 2 * H)],
      window: 30 * D,
      want: {
        drills: 3,
        passed: 3,
        rto: { medianMs: 4 * M, worstMs: 10 * M },
        rpo: { medianMs: 2 * H, worstMs: 3 * H },
        proposed: { rtoMs: 15 * M, rpoMs: 4 * H + 30 * M },
      },
    },
    {
      name: 'even count',
      records: [rec(D, 2 * M, H), rec(2 * D, 4 * M, 2 * H)],
      window: 30 * D,
      want: {
        drills: 2,
        passed: 2,
        rto: { medianMs: 3 * M, worstMs: 4 * M },
        rpo: { medianMs: 90 * M, worstMs: 2 * H },
        proposed: { rtoMs: 6 * M, rpoMs: 3 * H },
      },
    },
    {
      name: 'failed drills count as drills and for RPO, not for RTO',
      records: [rec(D, 2 * M, H), rec(2 * D, 50 * M, 5 * H, false)],
      window: 30 * D,
      want: {
        drills: 2,
        passed: 1,
        rto: { medianMs: 2 * M, worstMs: 2 * M },
        rpo: { medianMs: 3 * H, worstMs: 5 * H },
        proposed: { rtoMs: 3 * M, rpoMs: 7 * H + 30 * M },
      },
    },
    {
      name: 'records outside the window are ignored; future ones are kept',
      records: [rec(40 * D, 60 * M, 20 * H), rec(D, 2 * M, H), rec(-H, 4 * M, H)],
      window: 30 * D,
      want: {
        drills: 2,
        passed: 2,
        rto: { medianMs: 3 * M, worstMs: 4 * M },
        rpo: { medianMs: H, worstMs: H },
        proposed: { rtoMs: 6 * M, rpoMs: H + 30 * M },
      },
    },
    {
      name: 'only failures: no RTO, RPO still proposed',
      records: [rec(D, null, 2 * H, false)],
      window: 30 * D,
      want: { drills: 1, passed: 0, rto: null, rpo: { medianMs: 2 * H, worstMs: 2 * H }, proposed: { rtoMs: null, rpoMs: 3 * H } },
    },
    {
      name: 'passed but nothing measured',
      records: [rec(D, null, null)],
      window: 30 * D,
      want: { drills: 1, passed: 1, rto: null, rpo: null, proposed: null },
    },
    {
      name: 'an unparseable date is outside every window',
      records: [{ ...rec(D, 2 * M, H), at: 'garbage' }],
      window: 30 * D,
      want: { drills: 0, passed: 0, rto: null, rpo: null, proposed: null },
    },
  ]
  for (const c of cases) t.same(summarize(c.records, now, c.window), c.want, c.name)

  const history = [JSON.stringify(rec(D, 2 * M, H)), '{"at":"2024-03-', '', 'garbage', JSON.stringify(rec(2 * D, 4 * M, 2 * H))].join('\n')
  const records = history.split('\n').flatMap((l) => parseHistoryLine(l) ?? [])
  t.equal(summarize(records, now, 30 * D).drills, 2, 'a damaged history still calibrates')
})
