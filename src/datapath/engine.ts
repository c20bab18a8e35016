// The test kit's face (vxnet_testkit.node): the datapath's per-packet functions — encapsulation,
// validation and decapsulation, route lookup — on one route snapshot, configured, validated and
// counted exactly as a Datapath is. For byte-vector tests and microbenchmarks; the product never
// loads it.
import { loadTestkit, type NativeEngine, type NativeRxResult, type NativeTxResult } from './native';
import { nativeOptions, portOf, validateDatapathConfig, type DatapathConfig } from './config';
import { PeerSlots, RouteState, type PeerRoute } from './routes';
import { buildStats, type DatapathStats } from './stats';
import { parseIPv4 } from '../net/ip';

export class EncapEngine {
  private readonly routes: RouteState;

  private constructor(
    readonly config: DatapathConfig,
    private readonly native: NativeEngine,
  ) {
    this.routes = new RouteState(native, new PeerSlots(native), 0, portOf(config), config.encap === 'vxlan', 'setRoutes');
  }

  /** An engine for `cfg` (checked as Datapath.create checks it; DatapathConfigError naming the field). */
  static create(cfg: DatapathConfig): EncapEngine {
    validateDatapathConfig(cfg);
    return new EncapEngine(cfg, new (loadTestkit().Engine)(nativeOptions(cfg)));
  }

  /** Replaces the route snapshot whole, as Datapath.setRoutes. */
  setRoutes(routes: PeerRoute[]): void {
    this.routes.set(routes);
  }

  get peers(): readonly PeerRoute[] {
    return this.routes.routes;
  }

  get routeCount(): number {
    return this.native.routeCount;
  }

  /** One packet read from the TUN, as a worker's transmit pass handles it. */
  encap(packet: Buffer): NativeTxResult {
    return this.native.tx(packet);
  }

  /** One datagram from underlay address `srcIp`, as a worker's receive pass validates and decapsulates it. */
  decap(srcIp: string, datagram: Buffer): NativeRxResult {
    return this.native.rx(parseIPv4(srcIp), datagram);
  }

  /** What encap() and decap() counted, in a Datapath's stats() shape (no workers, no offloads). */
  stats(): DatapathStats {
    const offload = { vnetHdr: false, tunTso: false, tunUso: false, udpGso: false, udpGro: false, cpuLocal: false };
    return buildStats(this.native.counters(), this.routes.peerStats(), new Float64Array(0), offload);
  }

  /** Native microbenchmark kernels: elapsed ns for `iterations` runs of the hot-path function. */
  get bench() {
    const n = this.native;
    return {
      encap: (packet: Buffer, iterations: number) => n.benchTx(packet, iterations),
      decap: (srcIp: string, dgram: Buffer, iterations: number) => n.benchRx(parseIPv4(srcIp), dgram, iterations),
      lookup: (dsts: Uint32Array, rounds: number) => n.benchLookup(dsts, rounds),
    };
  }
}

/**
 * The checksum loop every payload byte goes through (csum_partial) as a microbenchmark: elapsed ns
 * for `iterations` checksums of an in-cache `bytes`-long buffer, with the vector loop the CPU has
 * (`checksumVectorLoop()`) or with the scalar one.
 */
export function benchChecksum(bytes: number, iterations: number, loop: 'vector' | 'scalar'): number {
  return loadTestkit().benchChecksum(bytes, iterations, loop === 'vector');
}

/** The vector checksum loop this CPU runs ('avx2'), or undefined where it has none. */
export function checksumVectorLoop(): string | undefined {
  return loadTestkit().checksumVectorLoop || undefined;
}
