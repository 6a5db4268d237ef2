/**
 * Plain-text tables for the chaos suite's results: one summary row per
 * scenario, then the details that do not fit a row (detection times, crash
 * re-run histogram, notable log messages, why a scenario failed).
 */
import { RECOVERY_LIMIT_MS, type ScenarioResult } from './scenarios.js';

const fmtMs = (v: number | null | undefined) => (v === undefined ? '-' : v === null ? 'never' : v === Infinity ? '+Inf' : `${Math.round(v)}`);

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const errorsText = (e: Record<string, number>) => {
  const parts = Object.entries(e).filter(([, n]) => n > 0).map(([c, n]) => `${c}:${n}`);
  return parts.length > 0 ? parts.join(',') : '0';
};

/** One row per scenario. */
export function summaryTable(results: readonly ScenarioResult[]): string {
  return table(
    ['scenario', 'pass', 'sent', 'results', 'errors', 'lost', 'dup', 'late-dropped', 'base/s', 'recovery ms', 'heal-rec ms', 'in-flight settled ms', 'time s'],
    results.map((r) => [
      r.name,
      r.ok ? 'PASS' : 'FAIL',
      String(r.sent),
      String(r.results),
      errorsText(r.errors),
      String(r.lost),
      String(r.duplicates),
      r.lateRepliesDropped === null ? '?' : String(r.lateRepliesDropped),
      Object.entries(r.baselinePerSec).map(([m, v]) => `${m.replace('text-orientation', 'text').replace(' (closed loop)', '-cl')}:${v ?? '?'}`).join(' '),
      fmtMs(r.recoveryMs),
      fmtMs(r.healRecoveryMs),
      fmtMs(r.inFlightSettledMs),
      (r.durationMs / 1000).toFixed(1),
    ]),
  );
}

/** What does not fit the row: detection, crash re-run, events, failures. */
export function details(r: ScenarioResult): string {
  const out: string[] = [`${r.name}: ${r.description}`];
  out.push(`  results by node: ${Object.entries(r.byNode).map(([n, c]) => `${n}=${c}`).join(' ') || '-'}`);
  if (r.phases.length > 0) out.push(`  runner event-loop utilization during the load: ${r.phases.map((p) => p.runnerEventLoopUtilization.toFixed(2)).join(', ')}`);
  // The first run's loads (a scenario with repeats shows the detection of every run above).
  for (const st of r.phases[0]?.streams ?? []) {
    const b = Object.entries(st.batchSizes).map(([n, v]) => `${n} ${v.mean}/${v.max}`).join(', ');
    const l = st.latencyMs ? `latency p50 ${st.latencyMs.p50} / p99 ${st.latencyMs.p99} / max ${st.latencyMs.max} ms; ` : '';
    out.push(`  ${st.model}${st.pressure ? ' (closed loop)' : ''}: ${l}batch size by node (mean/max) ${b || '-'}`);
  }
  if (r.detection) {
    const d = r.detection;
    const keys = Object.keys(d.max) as (keyof typeof d.max)[];
    out.push(`  detection over ${d.samples.length} run(s) (p50 / max ms): ${keys.map((k) => `${k} ${fmtMs(d.p50[k])} / ${fmtMs(d.max[k])}`).join('; ')}`);
    for (const [i, s] of d.samples.entries()) {
      out.push(`    run ${i + 1}: suspected ${fmtMs(s.suspectMs)}, down ${fmtMs(s.downMs)}${s.backUpMs !== undefined ? `, up again after heal ${fmtMs(s.backUpMs)}` : ''}, last result from target ${fmtMs(s.lastResultFromTargetMs)}, in-flight settled ${fmtMs(s.inFlightSettledMs)}`);
    }
  }
  if (r.crashRerun) {
    const c = r.crashRerun;
    out.push(`  crash → batch running again (actorserve_crash_rerun_seconds): n=${c.count}, mean ${fmtMs(c.meanMs)} ms, p50 ≤ ${fmtMs(c.p50BoundMs)} ms, max ≤ ${fmtMs(c.maxBoundMs)} ms; buckets ${c.buckets.map((b) => `≤${fmtMs(b.leMs)}ms:${b.count}`).join(' ')}`);
  }
  if (r.workerRestarts !== null && r.workerRestarts > 0) out.push(`  worker restarts on the target: ${r.workerRestarts}`);
  for (const [node, counts] of Object.entries(r.events)) {
    out.push(`  ${node} logged: ${Object.entries(counts).map(([m, n]) => `"${m}" ×${n}`).join(', ')}`);
  }
  for (const n of r.notes) out.push(`  note: ${n}`);
  for (const f of r.failures) out.push(`  FAIL: ${f}`);
  return out.join('\n');
}

export function fullReport(results: readonly ScenarioResult[]): string {
  return [
    summaryTable(results),
    '',
    `pass: 0 lost, 0 duplicates, 0 errors, recovery ≤ ${RECOVERY_LIMIT_MS} ms after the fault and after the heal ("never": not back to 90 % by the end)`,
    '',
    ...results.map(details),
  ].join('\n');
}
