// Several bench runs summarised into one result (`vxnet bench --runs N`): per metric the median
// and the min–max spread over the runs; ratios to kernel-vxlan are taken within each run and then
// summarised (the median of the per-run ratios, not the ratio of the medians). Pure functions.
import { BACKENDS, BackendName, BackendResult, BenchResult, METRIC_KEYS, ScalingPoint, Spread, computeRatios, failedBackend } from './schema';
import { median } from './stats';

export type { Spread };

/** Median and min–max of the finite values; null when there is none. */
export function spreadOf(values: ReadonlyArray<number | null | undefined>): Spread | null {
  const xs = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  if (xs.length === 0) return null;
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

/** Numeric extras of a backend result that are summarised like the metrics. */
const EXTRA_KEYS = ['genPps64', 'daemonCpuSecPerGB', 'rttSamples', 'mtu', 'genThreads'] as const;

/**
 * Field-wise median of objects of the same shape: numbers → median of the finite ones (null if
 * none), booleans → true only if true in every object, anything else → the first object's value.
 */
export function medianObject<T extends object>(objs: readonly T[]): T {
  const out: Record<string, unknown> = {};
  const rows = objs as ReadonlyArray<Record<string, unknown>>;
  const keys = [...new Set(rows.flatMap((o) => Object.keys(o)))];
  for (const k of keys) {
    const vs = rows.map((o) => o[k]).filter((v) => v !== undefined);
    if (vs.length && vs.every((v) => typeof v === 'number' || v === null)) {
      out[k] = spreadOf(vs as Array<number | null>)?.median ?? null;
    } else if (vs.length && vs.every((v) => typeof v === 'boolean')) {
      out[k] = vs.every(Boolean);
    } else {
      out[k] = vs[0];
    }
  }
  return out as T;
}

function summarizeBackend(runs: readonly BenchResult[], b: BackendName): { result: BackendResult; spread: Record<string, Spread | null> } {
  const rs = runs.map((r) => r.backends?.[b]).filter((r): r is BackendResult => !!r);
  const result = failedBackend('') as BackendResult;
  result.errors = runs.flatMap((r, i) => (r.backends?.[b]?.errors ?? []).map((e) => `run ${i + 1}: ${e}`));
  const spread: Record<string, Spread | null> = {};
  for (const k of METRIC_KEYS) {
    const s = spreadOf(rs.map((r) => r[k]));
    spread[k] = s;
    result[k] = s ? s.median : null;
  }
  const extras = result as Record<string, unknown>;
  for (const k of EXTRA_KEYS) {
    const s = spreadOf(rs.map((r) => r[k] as number | null | undefined));
    if (s) {
      extras[k] = s.median;
      if (k === 'daemonCpuSecPerGB') spread[k] = s;
    } else if (rs.some((r) => k in r)) extras[k] = null;
  }
  return { result, spread };
}

/**
 * One BenchResult standing for all `runs`: `backends` holds per-metric medians, `ratios` the medians
 * of the per-run ratios, `spread` / `ratioSpread` the min–max behind each, `runs` the runs themselves.
 * Shape-compatible with a single run, so the table, chart and report render it unchanged.
 */
export function summarizeRuns(runs: readonly BenchResult[]): BenchResult {
  if (runs.length === 0) throw new RangeError('summarizeRuns: no runs');
  const first = runs[0];
  const backends = {} as BenchResult['backends'];
  const spread: NonNullable<BenchResult['spread']> = {};
  const ratioSpread: NonNullable<BenchResult['ratioSpread']> = {};
  const ratios: Record<string, Record<string, number | null>> = {};
  const perRunRatios = runs.map((r) => r.ratios ?? computeRatios(r.backends ?? {}));
  for (const b of BACKENDS) {
    if (!runs.some((r) => r.backends?.[b])) continue;
    const s = summarizeBackend(runs, b);
    backends[b] = s.result;
    spread[b] = s.spread;
    ratios[b] = {};
    ratioSpread[b] = {};
    for (const k of METRIC_KEYS) {
      const rsp = spreadOf(perRunRatios.map((r) => r[b]?.[k]));
      ratioSpread[b][k] = rsp;
      ratios[b][k] = rsp ? rsp.median : null;
    }
  }
  const out: BenchResult = {
    machine: { ...first.machine, loadAvgAtEnd: runs[runs.length - 1].machine?.loadAvgAtEnd },
    backends,
    command: first.command,
    quick: first.quick,
    startedAt: first.startedAt,
    durationSeconds: runs.reduce((s, r) => s + (r.durationSeconds ?? 0), 0),
    ratios,
    runCount: runs.length,
    spread,
    ratioSpread,
    errors: runs.flatMap((r, i) => (r.errors ?? []).map((e) => `run ${i + 1}: ${e}`)),
  };
  const relays = runs.map((r) => r.relay).filter((x): x is NonNullable<BenchResult['relay']> => !!x);
  if (relays.length) {
    const med = (k: 'rttP50Us' | 'rttP99Us') => spreadOf(relays.map((x) => x[k]))?.median ?? null;
    out.relay = { rttP50Us: med('rttP50Us'), rttP99Us: med('rttP99Us'), errors: relays.flatMap((x) => x.errors) };
  }
  const gens = runs.map((r) => r.generator).filter((g): g is Record<string, unknown> => !!g);
  if (gens.length) out.generator = medianObject(gens);
  const scs = runs.map((r) => r.scaling).filter((s): s is NonNullable<BenchResult['scaling']> => !!s);
  if (scs.length) {
    const sc: NonNullable<BenchResult['scaling']> = { subnetLen: scs[0].subnetLen, backends: {}, controlPlane: {}, rssMB10k: {} };
    for (const b of [...new Set(scs.flatMap((s) => Object.keys(s.backends)))]) {
      const peers = [...new Set(scs.flatMap((s) => (s.backends[b] ?? []).map((p) => p.peers)))].sort((x, y) => x - y);
      sc.backends[b] = peers.map((n) => medianObject(scs.map((s) => s.backends[b]?.find((p) => p.peers === n)).filter((p): p is ScalingPoint => !!p)));
    }
    for (const b of [...new Set(scs.flatMap((s) => Object.keys(s.controlPlane ?? {})))]) {
      sc.controlPlane![b] = medianObject(scs.map((s) => s.controlPlane?.[b]).filter((c): c is NonNullable<typeof c> => !!c));
    }
    for (const b of [...new Set(scs.flatMap((s) => Object.keys(s.rssMB10k ?? {})))]) {
      sc.rssMB10k![b] = spreadOf(scs.map((s) => s.rssMB10k?.[b]))?.median ?? null;
    }
    out.scaling = sc;
  }
  const micros = runs.map((r) => r.micro).filter((m): m is NonNullable<BenchResult['micro']> => !!m && m.length > 0);
  if (micros.length) {
    const names = [...new Set(micros.flatMap((m) => m.map((x) => x.name)))];
    out.micro = names.map((name) => medianObject(micros.map((m) => m.find((x) => x.name === name)).filter((x): x is NonNullable<typeof x> => !!x)));
  }
  out.runs = runs.map((r) => ({ ...r }));
  return out;
}
