// The datapath v2 floors (issue 8) checked against a bench result: per floor and userspace backend,
// the per-run values (ratios to kernel-vxlan of the same run, or absolute where the floor is
// absolute), their median and min–max, and whether the median meets the floor. Pure code: the
// report renders it, the unit tests check it, the runner prints it.
import { REFERENCE, computeRatios, type BenchResult } from './schema';
import { spreadOf, type Spread } from './summary';

export const FLOOR_BACKENDS = ['udp', 'vxlan'] as const;

export interface FloorDef {
  id: string;
  label: string;
  /** The value must be at least (`min`) or at most (`max`) the bound. */
  bound: number;
  kind: 'min' | 'max';
  /** Shown for comparison, not a floor of the issue: no verdict. */
  informational?: boolean;
  /** One run's value for one backend, or null where the run lacks the figures. */
  value(run: BenchResult, backend: string): number | null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

function ratioOf(key: 'tcp1Gbps' | 'tcp4Gbps' | 'rttP50Us' | 'rttP99Us' | 'pps64' | 'pps64NoLoss') {
  return (run: BenchResult, b: string): number | null => num((run.ratios ?? computeRatios(run.backends))[b]?.[key]);
}

/** pps with `peers` in the route table over pps with `base` (the field `key` of both points). */
function scalingRatio(peers: number, base: number, key: 'pps' | 'ppsTwoPeers' = 'pps') {
  return (run: BenchResult, b: string): number | null => {
    const pts = run.scaling?.backends[b];
    const hi = num(pts?.find((p) => p.peers === peers)?.[key]);
    const lo = num(pts?.find((p) => p.peers === base)?.[key]);
    return hi !== null && lo !== null && lo > 0 ? hi / lo : null;
  };
}

export const FLOORS: readonly FloorDef[] = [
  { id: 'tcp1', label: 'TCP 1 stream ≥ 0.5×', bound: 0.5, kind: 'min', value: ratioOf('tcp1Gbps') },
  { id: 'tcp4', label: 'TCP 4 streams ≥ 0.5×', bound: 0.5, kind: 'min', value: ratioOf('tcp4Gbps') },
  {
    id: 'tcp4own',
    label: 'TCP 4 streams ≥ 1.3× own 1 stream',
    bound: 1.3,
    kind: 'min',
    value: (run, b) => {
      const one = num(run.backends[b as keyof BenchResult['backends']]?.tcp1Gbps);
      const four = num(run.backends[b as keyof BenchResult['backends']]?.tcp4Gbps);
      return one !== null && four !== null && one > 0 ? four / one : null;
    },
  },
  { id: 'rttP50', label: 'RTT p50 ≤ 2×', bound: 2, kind: 'max', value: ratioOf('rttP50Us') },
  { id: 'rttP99', label: 'RTT p99 ≤ 3×', bound: 3, kind: 'max', value: ratioOf('rttP99Us') },
  { id: 'pps64NoLoss', label: '`pps64NoLoss` ≥ 0.5×', bound: 0.5, kind: 'min', value: ratioOf('pps64NoLoss') },
  { id: 'pps64', label: '`pps64` ≥ 0.8×', bound: 0.8, kind: 'min', value: ratioOf('pps64') },
  {
    id: 'daemonCpu',
    label: 'two daemons ≤ 0.8 CPU s/GB (`daemonCpuSecPerGB`)',
    bound: 0.8,
    kind: 'max',
    value: (run, b) => num(run.backends[b as keyof BenchResult['backends']]?.daemonCpuSecPerGB),
  },
  {
    id: 'rttP50relay',
    label: "(for comparison) RTT p50 of the minimal relay (one thread, poll(), no checks: the TUN + UDP design with none of vxnet's work), the same in both columns",
    bound: 2,
    kind: 'max',
    informational: true,
    value: (run) => {
      const relay = num(run.relay?.rttP50Us);
      const ref = num(run.backends[REFERENCE]?.rttP50Us);
      return relay !== null && ref !== null && ref > 0 ? relay / ref : null;
    },
  },
  {
    id: 'scaling',
    label: 'route lookup flat: 10,000 peers in the table ≥ 0.95× of 3, the same traffic (to two peers)',
    bound: 0.95,
    kind: 'min',
    value: scalingRatio(10_000, 3, 'ppsTwoPeers'),
  },
  {
    id: 'scalingAll',
    label: '(for comparison) traffic spread over all 10,000 peers vs over the 2 of a 3-peer table',
    bound: 0.95,
    kind: 'min',
    informational: true,
    value: scalingRatio(10_000, 3),
  },
  {
    id: 'scaling2',
    label: '(for comparison) traffic spread over all 10,000 peers vs to the 1 of a 2-peer table',
    bound: 0.95,
    kind: 'min',
    informational: true,
    value: scalingRatio(10_000, 2),
  },
];

export interface FloorCheck {
  floor: FloorDef;
  backend: string;
  /** One value per run (null where a run lacks it). */
  perRun: Array<number | null>;
  spread: Spread | null;
  /** The median meets the bound; null when no run had the figure. */
  met: boolean | null;
  /** Runs whose own value meets the bound, of those with a value. */
  runsMet: number;
}

export function meets(f: Pick<FloorDef, 'bound' | 'kind'>, v: number): boolean {
  return f.kind === 'min' ? v >= f.bound : v <= f.bound;
}

/** Every floor for every userspace backend over the result's runs (the result itself if it has none). */
export function checkFloors(result: BenchResult): FloorCheck[] {
  const runs = result.runs?.length ? result.runs : [result];
  const out: FloorCheck[] = [];
  for (const floor of FLOORS) {
    for (const backend of FLOOR_BACKENDS) {
      const perRun = runs.map((r) => floor.value(r, backend));
      const spread = spreadOf(perRun);
      const vals = perRun.filter((v): v is number => v !== null);
      out.push({
        floor,
        backend,
        perRun,
        spread,
        met: spread ? meets(floor, spread.median) : null,
        runsMet: vals.filter((v) => meets(floor, v)).length,
      });
    }
  }
  return out;
}

/** The floors table (markdown): median [min–max] per backend, and whether the median meets it. */
export function renderFloors(result: BenchResult): string {
  const checks = checkFloors(result);
  const runs = result.runs?.length ? result.runs.length : 1;
  const f2 = (v: number) => (Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));
  const lines = [`| floor (ratios to ${REFERENCE} of the same run unless absolute) | ${FLOOR_BACKENDS.join(' | ')} | met (median) |`, `|---|${FLOOR_BACKENDS.map(() => '---:').join('|')}|---|`];
  for (const floor of FLOORS) {
    const mine = checks.filter((c) => c.floor === floor);
    const cells = mine.map((c) => {
      if (!c.spread) return 'n/a';
      const rng = c.spread.n > 1 ? ` [${f2(c.spread.min)}–${f2(c.spread.max)}]` : '';
      return `${f2(c.spread.median)}${rng}${runs > 1 ? ` (${c.runsMet}/${c.spread.n} runs)` : ''}`;
    });
    const verdict = floor.informational
      ? '—'
      : mine.every((c) => c.met === null)
      ? 'n/a'
      : FLOOR_BACKENDS.map((b, i) => `${b} ${mine[i].met === null ? 'n/a' : mine[i].met ? 'yes' : 'no'}`).join(', ');
    lines.push(`| ${floor.label} | ${cells.join(' | ')} | ${verdict} |`);
  }
  return lines.join('\n');
}
