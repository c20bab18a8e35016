// Renders a bench result as a self-contained SVG chart: one panel per metric with a bar per backend
// (value and ratio to kernel-vxlan beside it), plus a scaling panel when the run measured one.
// Pure function of the JSON, so the chart in docs/bench/ can be re-rendered from the stored result.
import { BACKENDS, BenchResult, METRIC_KEYS, METRICS, REFERENCE, computeRatios } from './schema';
import { human } from './stats';

const COLORS: Record<string, string> = {
  udp: '#e4a72c',
  vxlan: '#3b7dd8',
  'kernel-vxlan': '#7a7a7a',
  'host-gw': '#3aa565',
};

const PANEL_W = 470;
const PANEL_H = 150;
const GAP = 20;
const LABEL_W = 100;
const BAR_H = 20;

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}"${attrs ? ' ' + attrs : ''}>${escapeXml(s)}</text>`;
}

function fmtValue(key: string, v: number | null): string {
  if (v === null || !Number.isFinite(v)) return 'not measured';
  if (key === 'loss64') return `${(v * 100).toFixed(v < 0.01 ? 2 : 1)}%`;
  if (key.endsWith('Gbps')) return v.toFixed(2);
  if (key === 'cpuSecPerGB' || key === 'rssMB') return v.toFixed(v < 10 ? 2 : 1);
  return human(v);
}

function fmtRatio(r: number | null): string {
  return r === null || !Number.isFinite(r) ? '' : `×${r.toFixed(2)}`;
}

/** A panel of horizontal bars, one row per label. */
type Row = { label: string; color: string; value: number | null; shown: string; note: string; lo?: number; hi?: number };

function barPanel(x0: number, y0: number, title: string, rows: Row[], panelW = PANEL_W, panelH = PANEL_H, labelW = LABEL_W): string {
  const out: string[] = [];
  out.push(`<g transform="translate(${x0},${y0})">`);
  out.push(`<rect x="0" y="0" width="${panelW}" height="${panelH}" fill="#fafafa" stroke="#ddd"/>`);
  out.push(text(10, 18, title, 'font-weight="bold"'));
  const max = Math.max(0, ...rows.map((r) => Math.max(r.value !== null && Number.isFinite(r.value) ? r.value : 0, r.hi !== undefined && Number.isFinite(r.hi) ? r.hi : 0)));
  const LABEL_W = labelW;
  const plotW = panelW - LABEL_W - 150;
  rows.forEach((r, i) => {
    const y = 30 + i * (BAR_H + 8);
    out.push(text(LABEL_W - 6, y + BAR_H - 6, r.label, 'text-anchor="end"'));
    const w = max > 0 && r.value !== null && Number.isFinite(r.value) ? Math.max(1, (r.value / max) * plotW) : 0;
    out.push(`<rect x="${LABEL_W}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${r.color}"/>`);
    let textX = LABEL_W + w + 6;
    if (max > 0 && r.lo !== undefined && r.hi !== undefined && Number.isFinite(r.lo) && Number.isFinite(r.hi) && r.hi > r.lo) {
      // Multi-run spread: a min–max whisker across the bar's end.
      const x1 = LABEL_W + (r.lo / max) * plotW;
      const x2 = LABEL_W + (r.hi / max) * plotW;
      const ym = y + BAR_H / 2;
      out.push(`<path d="M${x1.toFixed(1)},${ym} H${x2.toFixed(1)} M${x1.toFixed(1)},${y + 4} V${y + BAR_H - 4} M${x2.toFixed(1)},${y + 4} V${y + BAR_H - 4}" stroke="#222" fill="none"/>`);
      textX = Math.max(textX, x2 + 6);
    }
    out.push(text(textX, y + BAR_H - 6, `${r.shown}${r.note ? '  ' + r.note : ''}`));
  });
  out.push('</g>');
  return out.join('\n');
}

export function renderChart(result: BenchResult): string {
  const ratios = result.ratios ?? computeRatios(result.backends);
  const panels: string[] = [];
  METRIC_KEYS.forEach((key, i) => {
    const m = METRICS[key];
    const rows = BACKENDS.map((b) => {
      const v = result.backends[b]?.[key] ?? null;
      const sp = result.spread?.[b]?.[key];
      return {
        label: b,
        color: COLORS[b],
        value: v,
        shown: fmtValue(key, v),
        note: b === REFERENCE ? '(ref)' : fmtRatio(ratios[b]?.[key] ?? null),
        ...(sp && sp.n > 1 ? { lo: sp.min, hi: sp.max } : {}),
      };
    });
    const better = m.higherIsBetter ? 'higher is better' : 'lower is better';
    panels.push(barPanel(GAP + (i % 2) * (PANEL_W + GAP), 60 + Math.floor(i / 2) * (PANEL_H + GAP), `${m.label} (${m.unit}; ${better})`, rows));
  });
  let height = 60 + Math.ceil(METRIC_KEYS.length / 2) * (PANEL_H + GAP);
  const scaling = result.scaling?.backends ?? {};
  const scalingRows: Row[] = [];
  for (const [b, points] of Object.entries(scaling)) {
    for (const p of points) {
      const ref = b === REFERENCE ? undefined : scaling[REFERENCE]?.find((q) => q.peers === p.peers)?.pps;
      const r = ref && p.pps !== null ? `${fmtRatio(p.pps / ref)}, ` : '';
      const loss = p.loss === null || p.loss === undefined ? r : `${r}loss ${fmtValue('loss64', p.loss)}`;
      scalingRows.push({ label: `${b}, ${p.peers.toLocaleString('en-US')} peers`, color: COLORS[b] ?? '#999', value: p.pps, shown: fmtValue('pps64', p.pps), note: loss });
    }
  }
  if (scalingRows.length) {
    const h = 40 + scalingRows.length * (BAR_H + 8);
    panels.push(barPanel(GAP, height, '64-byte forwarding vs route-table size (packets/s, traffic spread over all peers)', scalingRows, 2 * PANEL_W + GAP, h, 200));
    height += h + GAP;
  }
  const width = 2 * PANEL_W + 3 * GAP;
  const m = result.machine ?? {};
  const subtitle = [
    m.cpuModel ? String(m.cpuModel) : undefined,
    m.cpus !== undefined ? `${m.cpus} CPUs` : undefined,
    m.kernel ? `Linux ${m.kernel}` : undefined,
    result.quick ? 'quick run' : undefined,
    result.runCount && result.runCount > 1 ? `median of ${result.runCount} runs, whiskers min–max` : undefined,
    result.startedAt ? String(result.startedAt).slice(0, 16).replace('T', ' ') : undefined,
  ]
    .filter(Boolean)
    .join(' · ');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    text(GAP, 24, 'vxnet bench: backends side by side (ratios to kernel-vxlan)', 'font-size="16" font-weight="bold"'),
    text(GAP, 44, subtitle, 'fill="#555"'),
    ...panels,
    '</svg>',
    '',
  ].join('\n');
}
