/**
 * Small hand-written SVG charts for the bench report: a line chart (linear
 * or log y, optional vertical event markers) and a grouped bar chart. Plain
 * strings, no dependencies; the output opens in any browser and renders on
 * GitHub.
 */

export interface Series {
  name: string;
  points: readonly (readonly [number, number])[];
  dashed?: boolean;
}

export interface Marker {
  x: number;
  label: string;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly Series[];
  markers?: readonly Marker[];
  /** Logarithmic y axis (values ≤ 0 are left out). Default false. */
  yLog?: boolean;
  /** Default 720 × 400. */
  width?: number;
  height?: number;
}

export interface BarGroup {
  label: string;
  bars: readonly { name: string; value: number }[];
}

export interface BarChartOptions {
  title: string;
  yLabel: string;
  groups: readonly BarGroup[];
  width?: number;
  height?: number;
}

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const MARGIN = { left: 72, right: 24, top: 44, bottom: 56 };

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A short number for an axis label: 1 500 → "1.5k". */
export function shortNumber(v: number): string {
  const a = Math.abs(v);
  const trim = (x: number) => String(Number(x.toPrecision(3)));
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e3) return `${trim(v / 1e3)}k`;
  if (a === 0) return '0';
  return trim(v);
}

/** Round tick positions covering [lo, hi], about `count` of them. */
export function linearTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9 && out.length < 50; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** Ticks at 1, 2, 5 × powers of ten within [lo, hi] (lo > 0). */
export function logTicks(lo: number, hi: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)) && out.length < 60; e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) out.push(Number(v.toPrecision(12)));
    }
  }
  return out;
}

const fmt = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(1));

function frame(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="600">${escapeXml(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 720;
  const height = o.height ?? 400;
  const pw = width - MARGIN.left - MARGIN.right;
  const ph = height - MARGIN.top - MARGIN.bottom;
  const usable = (y: number) => Number.isFinite(y) && (!o.yLog || y > 0);
  const pts = o.series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && usable(y)));
  const xs = [...pts.map(([x]) => x), ...(o.markers ?? []).map((m) => m.x)];
  const ys = pts.map(([, y]) => y);
  let xLo = xs.length ? Math.min(...xs) : 0;
  let xHi = xs.length ? Math.max(...xs) : 1;
  if (xHi <= xLo) xHi = xLo + 1;
  if (xLo > 0 && xLo < (xHi - xLo) * 0.5) xLo = 0;
  let yLo: number;
  let yHi: number;
  if (o.yLog) {
    yLo = ys.length ? 10 ** Math.floor(Math.log10(Math.min(...ys))) : 0.1;
    yHi = ys.length ? 10 ** Math.ceil(Math.log10(Math.max(...ys))) : 10;
    if (yHi <= yLo) yHi = yLo * 10;
  } else {
    yLo = 0;
    yHi = ys.length ? Math.max(...ys) * 1.08 : 1;
    if (yHi <= 0) yHi = 1;
    const t = linearTicks(0, yHi);
    yHi = Math.max(yHi, t.at(-1) ?? yHi);
  }
  const sx = (x: number) => MARGIN.left + ((x - xLo) / (xHi - xLo)) * pw;
  const sy = o.yLog
    ? (y: number) => MARGIN.top + ph - ((Math.log10(y) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))) * ph
    : (y: number) => MARGIN.top + ph - ((y - yLo) / (yHi - yLo)) * ph;
  const body: string[] = [];
  const yTicks = o.yLog ? logTicks(yLo, yHi) : linearTicks(yLo, yHi);
  for (const v of yTicks) {
    const y = sy(v).toFixed(1);
    body.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(shortNumber(v))}</text>`);
  }
  for (const v of linearTicks(xLo, xHi, 6)) {
    const x = sx(v).toFixed(1);
    body.push(`<line x1="${x}" x2="${x}" y1="${MARGIN.top + ph}" y2="${MARGIN.top + ph + 4}" stroke="#333"/>`);
    body.push(`<text x="${x}" y="${MARGIN.top + ph + 18}" text-anchor="middle">${escapeXml(shortNumber(v))}</text>`);
  }
  body.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  body.push(`<text x="${MARGIN.left + pw / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(o.xLabel)}</text>`);
  body.push(
    `<text transform="translate(16 ${MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel + (o.yLog ? ' (log scale)' : ''))}</text>`,
  );
  for (const [i, m] of (o.markers ?? []).entries()) {
    const x = sx(m.x).toFixed(1);
    body.push(`<line x1="${x}" x2="${x}" y1="${MARGIN.top}" y2="${MARGIN.top + ph}" stroke="#555" stroke-dasharray="4 3"/>`);
    // Staggered so labels of nearby events do not overprint each other.
    const ly = MARGIN.top + 6 + (i % 3) * (ph / 3);
    body.push(`<text transform="translate(${Number(x) + 4} ${ly}) rotate(90)" font-size="11" fill="#333">${escapeXml(m.label)}</text>`);
  }
  o.series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const p = s.points.filter(([x, y]) => Number.isFinite(x) && usable(y));
    if (p.length === 0) return;
    const d = p.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
    body.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    for (const [x, y] of p) body.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${color}"><title>${escapeXml(`${s.name}: ${fmt(x)}, ${fmt(y)}`)}</title></circle>`);
  });
  body.push(...legend(o.series.map((s, i) => ({ name: s.name, color: PALETTE[i % PALETTE.length]!, dashed: s.dashed ?? false })), MARGIN.left + 8, MARGIN.top + 8));
  return frame(width, height, o.title, body);
}

function legend(items: readonly { name: string; color: string; dashed: boolean }[], x: number, y: number): string[] {
  const out: string[] = [];
  const w = Math.max(...items.map((it) => it.name.length), 4) * 6.6 + 34;
  out.push(`<rect x="${x}" y="${y}" width="${w.toFixed(0)}" height="${items.length * 16 + 8}" fill="#ffffff" fill-opacity="0.85" stroke="#ccc"/>`);
  items.forEach((it, i) => {
    const ly = y + 14 + i * 16;
    out.push(`<line x1="${x + 6}" x2="${x + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="${it.color}" stroke-width="3"${it.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    out.push(`<text x="${x + 30}" y="${ly}">${escapeXml(it.name)}</text>`);
  });
  return out;
}

export function barChart(o: BarChartOptions): string {
  const width = o.width ?? 720;
  const height = o.height ?? 400;
  const pw = width - MARGIN.left - MARGIN.right;
  const ph = height - MARGIN.top - MARGIN.bottom;
  const names = [...new Set(o.groups.flatMap((g) => g.bars.map((b) => b.name)))];
  const max = Math.max(0, ...o.groups.flatMap((g) => g.bars.map((b) => b.value)).filter(Number.isFinite));
  const ticks = linearTicks(0, max > 0 ? max * 1.08 : 1);
  const yHi = Math.max(ticks.at(-1) ?? 1, max > 0 ? max * 1.08 : 1);
  const sy = (v: number) => MARGIN.top + ph - (v / yHi) * ph;
  const body: string[] = [];
  for (const v of ticks) {
    const y = sy(v).toFixed(1);
    body.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    body.push(`<text x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeXml(shortNumber(v))}</text>`);
  }
  const gw = pw / Math.max(1, o.groups.length);
  const bw = Math.min(60, (gw * 0.8) / Math.max(1, names.length));
  o.groups.forEach((g, gi) => {
    const gx = MARGIN.left + gi * gw + (gw - bw * names.length) / 2;
    names.forEach((name, ni) => {
      const bar = g.bars.find((b) => b.name === name);
      if (bar === undefined || !Number.isFinite(bar.value)) return;
      const x = gx + ni * bw;
      const y = sy(bar.value);
      const color = PALETTE[ni % PALETTE.length]!;
      body.push(`<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(MARGIN.top + ph - y).toFixed(1)}" fill="${color}"><title>${escapeXml(`${g.label} ${name}: ${bar.value}`)}</title></rect>`);
      body.push(`<text x="${(x + bw / 2 - 1).toFixed(1)}" y="${(y - 4).toFixed(1)}" text-anchor="middle" font-size="10">${escapeXml(shortNumber(bar.value))}</text>`);
    });
    body.push(`<text x="${(MARGIN.left + gi * gw + gw / 2).toFixed(1)}" y="${MARGIN.top + ph + 18}" text-anchor="middle">${escapeXml(g.label)}</text>`);
  });
  body.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  body.push(`<text transform="translate(16 ${MARGIN.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeXml(o.yLabel)}</text>`);
  if (names.length > 1) body.push(...legend(names.map((name, i) => ({ name, color: PALETTE[i % PALETTE.length]!, dashed: false })), MARGIN.left + pw - (Math.max(...names.map((n) => n.length)) * 6.6 + 42), MARGIN.top + 8));
  return frame(width, height, o.title, body);
}
