import { escapeControl } from '../cli/escape.ts'
import type { DrillRecord } from '../policy/calibrate.ts'
import { formatDuration } from '../policy/duration.ts'
import type { DrillResult } from './result.ts'

/** Markdown-safe inline text: one line, no table breaks, no code-span breaks. */
const md = (text: string) => escapeControl(text).replace(/[|`]/g, (c) => `\\${c}`)
const dur = (ms: number | null | undefined) => (ms === null || ms === undefined ? '—' : formatDuration(ms))
const target = (ms: number | undefined, verdict: string) => (ms === undefined ? '' : ` (target ${formatDuration(ms)}: ${verdict})`)

/** One dated section of the runbook log: what an auditor or the next on-call reads. */
export function renderMarkdown(r: DrillResult): string {
  const lines: string[] = []
  lines.push(`## Drill ${r.at} — ${r.verdict}`, '')
  lines.push(`- Artifact: ${r.artifact ? `\`${md(r.artifact)}\`` : 'none found'}${r.artifactCreatedAt ? ` (taken ${r.artifactCreatedAt})` : ''}`)
  lines.push(
    `- Mode: ${
      r.dryRun
        ? 'dry run (verification only, nothing restored)'
        : r.scratchDatabase
          ? `restore into scratch database \`${md(r.scratchDatabase)}\` (${r.kept ? 'kept' : 'dropped'}) from \`${md(r.sourceDatabase ?? '?')}\``
          : 'verification only (the artifact holds no database dump)'
    }`,
  )
  lines.push('', '| Phase | Status | Time |', '|---|---|---|')
  for (const p of r.phases) lines.push(`| ${p.name} | ${p.status} | ${dur(p.ms)} |`)
  lines.push('')
  lines.push(`- Measured RTO: ${dur(r.rtoMs)}${target(r.targets.rtoMs, r.judgement.rto)}`)
  lines.push(
    `- RPO: newest backup ${dur(r.rpo.newestAgeMs)} old; largest gap over ${formatDuration(r.windowMs)}: ${dur(r.rpo.largestGapMs)}${
      r.rpo.gapBetween ? ` (${md(r.rpo.gapBetween[0])} → ${md(r.rpo.gapBetween[1])})` : ''
    }; worst case ${dur(r.rpo.worstCaseMs)}${target(r.targets.rpoMs, r.judgement.rpo)}`,
  )
  if (r.checks.length > 0) {
    lines.push('- Checks:')
    for (const c of r.checks) {
      lines.push(`  - ${md(c.name)}: ${c.ok ? 'ok' : 'FAILED'} (${dur(c.durationMs)}) — ${md(c.detail)}`)
      // A failing check's own output (already redacted and bounded) is what the on-call needs next.
      if (!c.ok && c.output) lines.push('', '    ```', ...c.output.split('\n').map((l) => `    ${escapeControl(l).replace(/```/g, "'''")}`), '    ```', '')
    }
  }
  if (r.error) lines.push(`- Error: ${md(r.error)}`)
  lines.push(`- Verdict: **${r.verdict}**`, '', '')
  return lines.join('\n')
}

/** The JSONL history line that calibration reads back (see policy/calibrate.ts). */
export function historyRecord(r: DrillResult): DrillRecord & Record<string, unknown> {
  return {
    at: r.at,
    artifact: r.artifact ?? '',
    rtoMs: r.rtoMs,
    rpoWorstMs: r.rpo.worstCaseMs,
    ok: r.verdict === 'passed' || r.verdict === 'objective-missed',
    verdict: r.verdict,
    dryRun: r.dryRun,
    phases: Object.fromEntries(r.phases.map((p) => [p.name, Math.round(p.ms)])),
  }
}

/** `drills.md` keeps its history in `drills.jsonl`; any other name gets `.jsonl` appended. */
export function historyPathFor(reportPath: string): string {
  return reportPath.endsWith('.md') ? reportPath.slice(0, -3) + '.jsonl' : reportPath + '.jsonl'
}
