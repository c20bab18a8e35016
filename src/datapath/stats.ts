// The datapath's statistics: counters (named by native/counters.h via contract.generated.ts), drops
// by reason, per-peer and per-worker counts.
import type { DatapathOffloads } from './native';
import { COUNTER_FIELDS, COUNTER_NAMES, DROP_REASONS, type DatapathCounters } from './contract.generated';
import type { PeerStats } from './routes';

/** The datapath's counters (their fields and meanings come from native/counters.h, see contract.generated.ts), drops, peers and workers. */
export interface DatapathStats extends DatapathCounters {
  /** Dropped packets by reason (every reason present, zero or not). */
  drops: Record<string, number>;
  peers: PeerStats[];
  /** Inner packets each worker (one per queue; with CPU-local steering, one per CPU) sent and received (is the load spread over the cores?). */
  workers: Array<{ txPackets: number; rxPackets: number }>;
  /**
   * With CPU-local steering, each worker's two lanes (a thread, a TUN queue and a receiving
   * socket each): `light` carries flows whose bursts are small (pings, requests) both ways,
   * `bulk` the rest (docs/datapath.md, "Under bulk load"). Empty without steering.
   */
  lanes: Array<{ worker: number; lane: 'light' | 'bulk'; txPackets: number; rxPackets: number }>;
  /** Which offloads the kernel accepted. */
  offload: DatapathOffloads;
}

/** DatapathStats from the native counter arrays (in the order of contract.generated.ts). */
export function buildStats(vals: Float64Array, peers: PeerStats[], wc: Float64Array, offload: DatapathOffloads): DatapathStats {
  if (vals.length !== COUNTER_NAMES.length + DROP_REASONS.length) {
    throw new Error(`the datapath addon reports ${vals.length} counters, this build expects ${COUNTER_NAMES.length + DROP_REASONS.length}: rebuild it (npm run build:native)`);
  }
  const counters = {} as DatapathCounters;
  COUNTER_NAMES.forEach((name, i) => {
    counters[COUNTER_FIELDS[name]] = vals[i];
  });
  const drops: Record<string, number> = {};
  DROP_REASONS.forEach((reason, i) => {
    drops[reason] = vals[COUNTER_NAMES.length + i];
  });
  // [tx, rx] per lane thread: with steering the light lanes' (worker 0..n-1), then the bulk lanes'.
  const pairs: Array<{ txPackets: number; rxPackets: number }> = [];
  for (let i = 0; i + 1 < wc.length; i += 2) pairs.push({ txPackets: wc[i], rxPackets: wc[i + 1] });
  const workers: DatapathStats['workers'] = [];
  const lanes: DatapathStats['lanes'] = [];
  if (offload.cpuLocal && pairs.length % 2 === 0) {
    const n = pairs.length / 2;
    for (let i = 0; i < n; i++) {
      const [light, bulk] = [pairs[i], pairs[n + i]];
      workers.push({ txPackets: light.txPackets + bulk.txPackets, rxPackets: light.rxPackets + bulk.rxPackets });
      lanes.push({ worker: i, lane: 'light', ...light }, { worker: i, lane: 'bulk', ...bulk });
    }
  } else {
    workers.push(...pairs);
  }
  return { ...counters, drops, peers, workers, lanes, offload };
}
