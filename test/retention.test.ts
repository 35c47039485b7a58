// lib/policy/retention.ts: restic's forget policy on UTC buckets, plus the safety rules. Every expectation is derived by hand.
import t from 'tap'
import { DrError } from '../lib/cli/errors.ts'
import { applyRetention, describeRules, isoWeek, type Candidate, type RetentionRules } from '../lib/policy/retention.ts'

const HOUR = 3_600_000
const DAY = 24 * HOUR

const at = (iso: string): Candidate => ({ name: iso, createdAt: new Date(iso) })

/** Kept names (here: ISO times) with their reasons, newest first, as the table states them. */
function kept(candidates: Candidate[], rules: RetentionRules, now: Date): Record<string, string[]> {
  const out: Record<string, string[]> = {}
  for (const d of applyRetention(candidates, rules, now)) if (d.keep) out[d.artifact.name] = d.reasons
  return out
}

/**
 * 60 daily backups at 02:00 UTC, 2024-11-20 … 2025-01-18, across a month
 * and a year boundary. Calendar: 2025-01-01 is a Wednesday, so the ISO
 * weeks are 2025-W03 = Jan 13–19, W02 = Jan 6–12, W01 = 2024-12-30 –
 * 2025-01-05, 2024-W52 = Dec 23–29, W51 = Dec 16–22, W50 = Dec 9–15,
 * W49 = Dec 2–8, W48 = Nov 25 – Dec 1, W47 = Nov 18–24.
 */
const FIRST = Date.parse('2024-11-20T02:00:00Z')
const SIXTY = Array.from({ length: 60 }, (_, i) => at(new Date(FIRST + i * DAY).toISOString()))
const NOW = new Date('2025-01-18T12:00:00Z')
const d = (day: string) => `${day}T02:00:00.000Z`

t.test('the 60 days are what the comment says', async (t) => {
  t.equal(SIXTY[0]!.name, d('2024-11-20'))
  t.equal(SIXTY[59]!.name, d('2025-01-18'))
})

t.test('60 daily backups: rule combinations', async (t) => {
  const cases: Array<{ rules: RetentionRules; keep: Record<string, string[]> }> = [
    {
      rules: { daily: 7 },
      keep: {
        [d('2025-01-18')]: ['daily 2025-01-18'],
        [d('2025-01-17')]: ['daily 2025-01-17'],
        [d('2025-01-16')]: ['daily 2025-01-16'],
        [d('2025-01-15')]: ['daily 2025-01-15'],
        [d('2025-01-14')]: ['daily 2025-01-14'],
        [d('2025-01-13')]: ['daily 2025-01-13'],
        [d('2025-01-12')]: ['daily 2025-01-12'],
      },
    },
    {
      // The usual cron policy: each rule counts on its own, and one backup may serve several.
      rules: { last: 3, daily: 7, weekly: 4, monthly: 3 },
      keep: {
        [d('2025-01-18')]: ['last 3', 'daily 2025-01-18', 'weekly 2025-W03', 'monthly 2025-01'],
        [d('2025-01-17')]: ['last 3', 'daily 2025-01-17'],
        [d('2025-01-16')]: ['last 3', 'daily 2025-01-16'],
        [d('2025-01-15')]: ['daily 2025-01-15'],
        [d('2025-01-14')]: ['daily 2025-01-14'],
        [d('2025-01-13')]: ['daily 2025-01-13'],
        [d('2025-01-12')]: ['daily 2025-01-12', 'weekly 2025-W02'],
        [d('2025-01-05')]: ['weekly 2025-W01'],
        [d('2024-12-31')]: ['monthly 2024-12'],
        [d('2024-12-29')]: ['weekly 2024-W52'],
        [d('2024-11-30')]: ['monthly 2024-11'],
      },
    },
    {
      // Only nine ISO weeks hold a backup: a rule asking for more keeps what there is.
      rules: { weekly: 10 },
      keep: {
        [d('2025-01-18')]: ['weekly 2025-W03'],
        [d('2025-01-12')]: ['weekly 2025-W02'],
        [d('2025-01-05')]: ['weekly 2025-W01'],
        [d('2024-12-29')]: ['weekly 2024-W52'],
        [d('2024-12-22')]: ['weekly 2024-W51'],
        [d('2024-12-15')]: ['weekly 2024-W50'],
        [d('2024-12-08')]: ['weekly 2024-W49'],
        [d('2024-12-01')]: ['weekly 2024-W48'],
        [d('2024-11-24')]: ['weekly 2024-W47'],
      },
    },
    {
      rules: { monthly: 12, yearly: 5 },
      keep: {
        [d('2025-01-18')]: ['monthly 2025-01', 'yearly 2025'],
        [d('2024-12-31')]: ['monthly 2024-12', 'yearly 2024'],
        [d('2024-11-30')]: ['monthly 2024-11'],
      },
    },
    {
      // One backup a day: every hour holding one is a different day, so hourly 4 is the 4 newest.
      rules: { hourly: 4, yearly: 1 },
      keep: {
        [d('2025-01-18')]: ['hourly 2025-01-18T02', 'yearly 2025'],
        [d('2025-01-17')]: ['hourly 2025-01-17T02'],
        [d('2025-01-16')]: ['hourly 2025-01-16T02'],
        [d('2025-01-15')]: ['hourly 2025-01-15T02'],
      },
    },
    {
      // A zero rule is given but keeps nothing; the others still count.
      rules: { last: 0, daily: 2, weekly: 0, monthly: 2 },
      keep: {
        [d('2025-01-18')]: ['daily 2025-01-18', 'monthly 2025-01'],
        [d('2025-01-17')]: ['daily 2025-01-17'],
        [d('2024-12-31')]: ['monthly 2024-12'],
      },
    },
    { rules: { last: 0 }, keep: { [d('2025-01-18')]: ['newest'] } },
    { rules: { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 }, keep: { [d('2025-01-18')]: ['newest'] } },
    { rules: { last: 1 }, keep: { [d('2025-01-18')]: ['last 1'] } },
  ]
  for (const c of cases) {
    t.same(kept(SIXTY, c.rules, NOW), c.keep, describeRules(c.rules))
  }

  t.test('hourly 24 keeps the 24 newest days, back to 2024-12-26', async (t) => {
    const names = Object.keys(kept(SIXTY, { hourly: 24 }, NOW))
    t.equal(names.length, 24)
    t.equal(names[0], d('2025-01-18'))
    t.equal(names[23], d('2024-12-26'))
  })

  t.test('last 60 and beyond keep everything; last 59 drops only the oldest', async (t) => {
    t.equal(Object.keys(kept(SIXTY, { last: 60 }, NOW)).length, 60)
    t.equal(Object.keys(kept(SIXTY, { last: 1000 }, NOW)).length, 60)
    const r = applyRetention(SIXTY, { last: 59 }, NOW)
    t.same(
      r.filter((x) => !x.keep).map((x) => x.artifact.name),
      [d('2024-11-20')],
    )
  })
})

t.test('decisions: every candidate once, newest first, removed ones without reasons; input order does not matter', async (t) => {
  const shuffled = [...SIXTY].reverse().sort((a, b) => (a.name.charCodeAt(15) % 3) - (b.name.charCodeAt(15) % 3))
  const r = applyRetention(shuffled, { daily: 7 }, NOW)
  t.equal(r.length, 60)
  t.same(
    r.map((x) => x.artifact.name),
    [...SIXTY].reverse().map((x) => x.name),
  )
  t.ok(r.filter((x) => !x.keep).every((x) => x.reasons.length === 0))
  t.equal(r[0]!.artifact, SIXTY[59], 'the caller gets its own objects back')
})

t.test('several backups a day, gaps and boundaries', async (t) => {
  const cases: Array<{ what: string; list: string[]; rules: RetentionRules; keep: Record<string, string[]>; now?: string }> = [
    {
      what: 'daily keeps the newest of each day, and a gap of days uses up nothing',
      list: ['2025-03-01T03:00:00Z', '2025-03-01T10:00:00Z', '2025-03-01T23:59:59Z', '2025-03-05T00:00:00Z', '2025-03-05T12:00:00Z', '2025-03-20T08:00:00Z'],
      rules: { daily: 3 },
      keep: {
        '2025-03-20T08:00:00Z': ['daily 2025-03-20'],
        '2025-03-05T12:00:00Z': ['daily 2025-03-05'],
        '2025-03-01T23:59:59Z': ['daily 2025-03-01'],
      },
    },
    {
      what: 'hourly buckets by UTC hour; last counts backups, not hours',
      list: ['2025-03-01T10:05:00Z', '2025-03-01T10:55:00Z', '2025-03-01T11:00:00Z', '2025-03-01T11:59:59Z', '2025-03-01T13:30:00Z'],
      rules: { last: 2, hourly: 2 },
      keep: {
        '2025-03-01T13:30:00Z': ['last 2', 'hourly 2025-03-01T13'],
        '2025-03-01T11:59:59Z': ['last 2', 'hourly 2025-03-01T11'],
      },
    },
    {
      what: 'days are UTC days: 23:30Z and 00:30Z are two days',
      list: ['2025-03-01T23:30:00Z', '2025-03-02T00:30:00Z'],
      rules: { daily: 2 },
      keep: {
        '2025-03-02T00:30:00Z': ['daily 2025-03-02'],
        '2025-03-01T23:30:00Z': ['daily 2025-03-01'],
      },
    },
    {
      what: 'the ISO week across a new year: Dec 30 and Jan 2 are one week, Dec 29 the week before',
      list: ['2024-12-29T12:00:00Z', '2024-12-30T12:00:00Z', '2025-01-02T12:00:00Z'],
      rules: { weekly: 2 },
      keep: {
        '2025-01-02T12:00:00Z': ['weekly 2025-W01'],
        '2024-12-29T12:00:00Z': ['weekly 2024-W52'],
      },
    },
    {
      what: 'weeks start on Monday: Sunday and the Monday after are two weeks',
      list: ['2025-03-09T23:00:00Z', '2025-03-10T01:00:00Z', '2025-03-16T23:59:59Z'],
      rules: { weekly: 5 },
      keep: {
        '2025-03-16T23:59:59Z': ['weekly 2025-W11'],
        '2025-03-09T23:00:00Z': ['weekly 2025-W10'],
      },
    },
    {
      what: 'monthly and yearly keep the newest of each month and year',
      list: ['2023-06-01T00:00:00Z', '2023-12-31T23:59:59Z', '2024-02-10T00:00:00Z', '2024-02-29T12:00:00Z', '2024-03-01T00:00:00Z'],
      rules: { monthly: 2, yearly: 3 },
      keep: {
        '2024-03-01T00:00:00Z': ['monthly 2024-03', 'yearly 2024'],
        '2024-02-29T12:00:00Z': ['monthly 2024-02'],
        '2023-12-31T23:59:59Z': ['yearly 2023'],
      },
    },
    {
      what: 'a single backup and last 0: kept as the newest',
      list: ['2025-03-01T00:00:00Z'],
      rules: { last: 0 },
      keep: { '2025-03-01T00:00:00Z': ['newest'] },
    },
    {
      what: 'a backup stamped after now is kept and takes no slot: last 1 still keeps the real newest',
      list: ['2025-03-01T00:00:00Z', '2025-03-02T00:00:00Z', '2026-01-01T00:00:00Z'],
      rules: { last: 1 },
      keep: {
        '2026-01-01T00:00:00Z': ['future: stamped after now (clock skew?)'],
        '2025-03-02T00:00:00Z': ['last 1'],
      },
    },
    {
      what: 'with a future stamp, the newest is still the newest up to now',
      list: ['2025-03-01T00:00:00Z', '2025-03-02T00:00:00Z', '2026-01-01T00:00:00Z'],
      rules: { daily: 0 },
      keep: {
        '2026-01-01T00:00:00Z': ['future: stamped after now (clock skew?)'],
        '2025-03-02T00:00:00Z': ['newest'],
      },
    },
    {
      what: 'exactly now counts as the past',
      list: ['2025-03-01T00:00:00Z', '2025-03-10T00:00:00Z'],
      rules: { last: 1 },
      keep: { '2025-03-10T00:00:00Z': ['last 1'] },
      now: '2025-03-10T00:00:00Z',
    },
  ]
  const now = new Date('2025-06-01T00:00:00Z')
  for (const c of cases) t.same(kept(c.list.map(at), c.rules, c.now ? new Date(c.now) : now), c.keep, c.what)

  t.test('equal times: ordered by name, newest name first', async (t) => {
    const same = new Date('2025-03-01T00:00:00Z')
    const r = applyRetention(
      [
        { name: 'conductor-backup-20250301T000000Z', createdAt: same },
        { name: 'conductor-backup-20250301T000001Z', createdAt: same },
      ],
      { last: 1 },
      now,
    )
    t.same(
      r.map((x) => [x.artifact.name, x.keep]),
      [
        ['conductor-backup-20250301T000001Z', true],
        ['conductor-backup-20250301T000000Z', false],
      ],
    )
  })

  t.test('no backups: no decisions', async (t) => {
    t.same(applyRetention([], { daily: 7 }, now), [])
  })
})

t.test('refusals', async (t) => {
  const list = SIXTY.slice(-3)
  const usage = (rules: RetentionRules, message: RegExp, what: string) => {
    let caught: unknown
    try {
      applyRetention(list, rules, NOW)
    } catch (err) {
      caught = err
    }
    t.ok(caught instanceof DrError && caught.exitCode === 2, `${what}: a usage error`)
    t.match((caught as Error).message, message, what)
  }
  usage({}, /no retention rule given, so nothing would be kept/, 'no rule at all')
  usage({ daily: undefined }, /no retention rule given/, 'rules present but unset')
  usage({ daily: -1 }, /keep daily must be a whole number from 0 up, got -1/, 'negative')
  usage({ last: 1.5 }, /keep last must be a whole number/, 'fraction')
  usage({ weekly: Number.NaN }, /keep weekly must be a whole number/, 'NaN')
  usage({ yearly: Infinity }, /keep yearly must be a whole number/, 'infinite')
  t.throws(() => applyRetention([{ name: 'x', createdAt: new Date('nope') }], { last: 1 }, NOW), TypeError, 'an invalid time is a bug in the caller')
})

t.test('isoWeek', async (t) => {
  const table: Array<[string, string]> = [
    ['2024-12-29', '2024-W52'], // Sunday
    ['2024-12-30', '2025-W01'], // Monday of the week holding 2025's first Thursday
    ['2025-01-05', '2025-W01'],
    ['2025-01-06', '2025-W02'],
    ['2021-01-03', '2020-W53'], // 2020 has 53 weeks
    ['2020-12-31', '2020-W53'],
    ['2026-12-31', '2026-W53'],
    ['2027-01-01', '2026-W53'],
    ['2027-01-04', '2027-W01'],
    ['2024-01-01', '2024-W01'],
  ]
  for (const [day, week] of table) {
    t.equal(isoWeek(new Date(`${day}T00:00:00Z`)), week, day)
    t.equal(isoWeek(new Date(`${day}T23:59:59Z`)), week, `${day} late`)
  }
})
