// The shape of `vxnet bench --json FILE`, its validation and the ratios to the kernel reference.
// Pure code: the runner, the report renderer and the unit tests share it.
import { ratio } from './stats';
import { BACKEND_KINDS, type BackendKind } from '../../src/backend/registry';

/** Every backend, in the registry's order (src/backend/registry.ts: the one list). */
export const BACKENDS: readonly BackendKind[] = BACKEND_KINDS;
export type BackendName = BackendKind;

/** The reference every ratio is taken against. */
export const REFERENCE: BackendName = 'kernel-vxlan';

export const METRIC_KEYS = ['tcp1Gbps', 'tcp4Gbps', 'rttP50Us', 'rttP99Us', 'rttLoadP50Us', 'rttLoadP99Us', 'pps64', 'pps64NoLoss', 'loss64', 'cpuSecPerGB', 'rssMB'] as const;
export type MetricKey = (typeof METRIC_KEYS)[number];

/** Metrics added after results were first stored: a result without them (older JSON) is still valid. */
export const LATER_METRIC_KEYS: ReadonlySet<MetricKey> = new Set(['pps64NoLoss', 'rttLoadP50Us', 'rttLoadP99Us']);

export interface MetricInfo {
  label: string;
  unit: string;
  /** Whether a larger value is better (for the chart's and table's wording only). */
  higherIsBetter: boolean;
}

export const METRICS: Record<MetricKey, MetricInfo> = {
  tcp1Gbps: { label: 'TCP, 1 stream', unit: 'Gbit/s', higherIsBetter: true },
  tcp4Gbps: { label: 'TCP, 4 streams', unit: 'Gbit/s', higherIsBetter: true },
  rttP50Us: { label: 'RTT p50', unit: 'µs', higherIsBetter: false },
  rttP99Us: { label: 'RTT p99', unit: 'µs', higherIsBetter: false },
  rttLoadP50Us: { label: 'RTT p50 beside 4 TCP streams', unit: 'µs', higherIsBetter: false },
  rttLoadP99Us: { label: 'RTT p99 beside 4 TCP streams', unit: 'µs', higherIsBetter: false },
  pps64: { label: '64-byte forwarding', unit: 'packets/s', higherIsBetter: true },
  pps64NoLoss: { label: '64-byte zero-loss rate (≤ 0.1 % loss)', unit: 'packets/s', higherIsBetter: true },
  loss64: { label: '64-byte loss', unit: 'fraction', higherIsBetter: false },
  cpuSecPerGB: { label: 'CPU per GB moved (whole machine)', unit: 'CPU s/GB', higherIsBetter: false },
  rssMB: { label: 'Daemon RSS', unit: 'MB', higherIsBetter: false },
};

/** One paced trial of the zero-loss search (see lib/search.ts), as stored in the JSON. */
export interface NoLossTrial {
  /** The rate the search aimed at; requestedPps is what the generator was asked (aim / its recent achieved-to-asked ratio). */
  aimedPps?: number;
  requestedPps: number;
  offeredPps: number;
  sent: number;
  delivered: number;
  loss: number;
  seconds: number;
  pass: boolean;
  /** False for the unpaced flood, recorded as the first trial (requestedPps 0 there). */
  paced?: boolean;
  /** Times the paced generator fell behind and restarted its schedule (see pktgen --pps). */
  resets?: number;
}

/** How pps64NoLoss was found. */
export interface NoLossSearch {
  lossLimit: number;
  /** The search's upper bound: the max-delivered rate (pps64). */
  maxPps: number;
  floorPps: number;
  threads: number;
  trialSeconds: number;
  /** No paced trial lost but none offered 95 % of maxPps: the figure is a lower bound. */
  generatorLimited?: boolean;
  trials: NoLossTrial[];
}

/** One backend's figures: the metric keys (null = could not be measured) plus extras. */
export type BackendResult = Record<MetricKey, number | null> & {
  /** Offered 64-byte load: what the generator put on the wire, packets/s. */
  genPps64?: number | null;
  /** Generator threads of the kept 64-byte run. */
  genThreads?: number;
  /** CPU seconds per GB of the daemon processes alone (0 for kernel datapaths). */
  daemonCpuSecPerGB?: number | null;
  /** The trials behind pps64NoLoss. */
  noLoss64?: NoLossSearch;
  rttSamples?: number;
  mtu?: number;
  errors?: string[];
};

export interface ScalingPoint {
  peers: number;
  pps: number | null;
  loss: number | null;
  offeredPps?: number | null;
  /** Seconds from writing the step's leases to etcd until all were installed. */
  installSeconds?: number | null;
  leasesWritten?: number;
  rssMB?: number | null;
  /**
   * From 3 peers on: pps with the same table but the traffic to the first two fake peers only (the
   * traffic of the 3-peer point): the table's cost per packet, batching unchanged.
   */
  ppsTwoPeers?: number | null;
  lossTwoPeers?: number | null;
}

/**
 * The minimal relay (bench/lib/relay.ts: one thread, poll(), flannel's udp format, no checks) between
 * h1 and h2, measured like a backend's idle RTT: what the TUN + UDP design costs with none of vxnet's
 * work.
 */
export interface RelayResult {
  rttP50Us: number | null;
  rttP99Us: number | null;
  rttSamples?: number;
  errors: string[];
}

export interface BenchResult {
  machine: Record<string, unknown>;
  backends: Record<BackendName, BackendResult>;
  command?: string;
  /** Backend keys added to the userspace backends' net-conf (--backend-option), when any. */
  userspaceOptions?: Record<string, unknown>;
  quick?: boolean;
  startedAt?: string;
  durationSeconds?: number;
  ratios?: Record<string, Record<string, number | null>>;
  generator?: Record<string, unknown>;
  scaling?: {
    subnetLen?: number;
    backends: Record<string, ScalingPoint[]>;
    /** Time from 1,000 leases written to etcd until all are installed, per backend. */
    controlPlane?: Record<string, { leases: number; seconds: number | null; writeSeconds?: number | null }>;
    /** Daemon RSS with 10,000 leases in etcd, per backend. */
    rssMB10k?: Record<string, number | null>;
  };
  micro?: Array<{ name: string; nsPerOp: number; opsPerSec: number; rme: number; samples: number }>;
  /** The minimal relay's RTT (absent in results from before it was measured). */
  relay?: RelayResult;
  errors?: string[];
  /** Set by `--runs N` (N > 1): the figures above are medians over `runs`. */
  runCount?: number;
  /** Per backend and metric: median and min–max over the runs. */
  spread?: Record<string, Record<string, Spread | null>>;
  /** Per backend and metric: the per-run ratios to the reference, summarised. */
  ratioSpread?: Record<string, Record<string, Spread | null>>;
  runs?: BenchResult[];
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  /** How many runs had a value. */
  n: number;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks the documented shape; returns every problem found (empty when valid). A metric may be null
 * only when the run recorded why in the backend's `errors`.
 */
export function validateResult(doc: unknown): string[] {
  const problems: string[] = [];
  if (!isObject(doc)) return ['result is not a JSON object'];
  if (!isObject(doc.machine)) problems.push('machine: missing or not an object');
  if (!isObject(doc.backends)) {
    problems.push('backends: missing or not an object');
    return problems;
  }
  for (const b of BACKENDS) {
    const r = doc.backends[b];
    if (!isObject(r)) {
      problems.push(`backends.${b}: missing`);
      continue;
    }
    const errors = Array.isArray(r.errors) ? r.errors : [];
    for (const k of METRIC_KEYS) {
      const v = r[k];
      if (v === undefined && LATER_METRIC_KEYS.has(k)) continue;
      if (v === null) {
        if (errors.length === 0) problems.push(`backends.${b}.${k}: null without an error recorded`);
      } else if (typeof v !== 'number' || !Number.isFinite(v)) {
        problems.push(`backends.${b}.${k}: not a finite number (${JSON.stringify(v)})`);
      } else if (v < 0) {
        problems.push(`backends.${b}.${k}: negative (${v})`);
      } else if (k === 'loss64' && v > 1) {
        problems.push(`backends.${b}.loss64: a fraction must be at most 1 (${v})`);
      }
    }
  }
  for (const b of Object.keys(doc.backends)) {
    if (!(BACKENDS as readonly string[]).includes(b)) problems.push(`backends.${b}: unknown backend`);
  }
  return problems;
}

/** value / kernel-vxlan value for every backend and metric (null where either is missing). */
export function computeRatios(backends: Partial<Record<BackendName, BackendResult>>): Record<string, Record<string, number | null>> {
  const ref = backends[REFERENCE];
  const out: Record<string, Record<string, number | null>> = {};
  for (const b of BACKENDS) {
    const r = backends[b];
    if (!r) continue;
    out[b] = {};
    for (const k of METRIC_KEYS) out[b][k] = ratio(r[k], ref?.[k]);
  }
  return out;
}

/** An all-null backend entry carrying the reason (used when a backend could not run at all). */
export function failedBackend(reason: string): BackendResult {
  const r = { errors: [reason] } as BackendResult;
  for (const k of METRIC_KEYS) r[k] = null;
  return r;
}
