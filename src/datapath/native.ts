// Loads the compiled addon (lazily) and declares its exact shape; nothing here adapts behaviour.
import path from 'node:path';

/**
 * Options of `new addon.Datapath()`. The numeric ones are checked by the addon against its specs
 * (`NativeAddon.options.datapath`: limits, defaults, which are required); see native/options.h.
 */
export interface NativeDatapathOptions {
  tunName: string;
  encap: 'udp' | 'vxlan';
  mtu: number;
  vni?: number;
  bindIp?: number;
  port: number;
  batch?: number;
  queues: number;
  tunIp?: number;
  busyPollUs?: number;
  sliceUs?: number;
  tunQueueLen?: number;
  /** 0 or 1. */
  cpuLocal?: number;
  sockBuf?: number;
  icmpPerSec?: number;
  localNet?: number;
  localPrefixLen?: number;
  icmpSrc?: number;
  localMac?: Buffer;
  /** false: no network of its own (vxlan only); networks come from addNetwork. Default true. */
  defaultNetwork?: boolean;
}

/** One more network on the datapath's port (vxlan): the VNI demultiplexes received frames onto it. */
export interface NativeNetworkOptions {
  tunName: string;
  /** Path of the network namespace to create the TUN in (absent: the datapath's own). */
  netns?: string;
  mtu: number;
  vni: number;
  localNet: number;
  localPrefixLen: number;
  localMac: Buffer;
  tunIp: number;
  icmpSrc?: number;
}

export interface NativeNetworkInfo {
  tunName: string;
  tunTso: boolean;
  tunUso: boolean;
  routeCount: number;
}


export interface NativeDatapath {
  open(): string;
  start(): void;
  stop(): void;
  /** Without `network`: the default network's (id 0). */
  setRoutes(records: Buffer, network?: number): void;
  /** Without `network`: the default network's plus what belongs to no network; with it, that network's. */
  counters(network?: number): Float64Array;
  peerCounters(slots: Uint32Array): Float64Array;
  workerCounters(network?: number): Float64Array;
  /** Opens the TUN (in its namespace) and publishes the network; returns its id. */
  addNetwork(opts: NativeNetworkOptions): number;
  /** Unpublishes it; its fds close once no worker holds it (networkReleased). */
  removeNetwork(network: number): void;
  networkReleased(network: number): boolean;
  /** Drops a released network's counters. */
  forgetNetwork(network: number): void;
  networkInfo(network?: number): NativeNetworkInfo;
  readonly offload: DatapathOffloads;
  readonly tunName: string;
  readonly running: boolean;
  readonly routeCount: number;
}

/** One numeric option's spec, as the addon exports it (native/options.h). */
export interface NativeOptionSpec {
  min: number;
  max: number;
  /** Absent for required options. */
  default?: number;
  required: boolean;
}

/** A field of the route record: byte offset and width (little endian). */
export interface NativeRouteField {
  offset: number;
  size: number;
}

export interface NativeAddon {
  Datapath: new (opts: NativeDatapathOptions) => NativeDatapath;
  /** Every counter then every drop reason, in the order counters() returns them. */
  counterNames: string[];
  /** The numeric options of a datapath and of an added network. */
  options: {
    datapath: Record<'mtu' | 'vni' | 'port' | 'bindIp' | 'batch' | 'queues' | 'busyPollUs' | 'sliceUs' | 'cpuLocal' | 'sockBuf' | 'tunQueueLen' | 'icmpPerSec' | 'localNet' | 'localPrefixLen' | 'icmpSrc' | 'tunIp', NativeOptionSpec>;
    network: Record<'mtu' | 'vni' | 'localNet' | 'localPrefixLen' | 'icmpSrc' | 'tunIp', NativeOptionSpec>;
  };
  /** The largest overlay MTU per encapsulation (the outer datagram fits in 65535 bytes). */
  maxMtu: { udp: number; vxlan: number };
  /** The route record setRoutes() takes, one per peer. */
  routeRecord: { size: number; net: NativeRouteField; peerIp: NativeRouteField; slot: NativeRouteField; port: NativeRouteField; prefixLen: NativeRouteField; mac: NativeRouteField };
  maxPeerSlots: number;
  /** The slot of a peer without counters. */
  noSlot: number;
  headroom: number;
}

export type NativeTxResult =
  | { drop: string; icmp?: Buffer }
  | { peerIp: number; port: number; slot: number; frame: Buffer };
export type NativeRxResult = { drop: string } | { slot: number; inner: Buffer };

/**
 * The test kit's engine (vxnet_testkit.node, its own node-gyp target): the datapath's pure
 * per-packet functions over one route snapshot and counter block, no fds. Options as the datapath's.
 */
export interface NativeEngine {
  setRoutes(records: Buffer): void;
  counters(): Float64Array;
  peerCounters(slots: Uint32Array): Float64Array;
  tx(packet: Buffer): NativeTxResult;
  rx(srcIp: number, datagram: Buffer): NativeRxResult;
  benchTx(packet: Buffer, iterations: number): number;
  benchRx(srcIp: number, datagram: Buffer, iterations: number): number;
  benchLookup(dsts: Uint32Array, rounds: number): number;
  readonly routeCount: number;
}

export interface NativeTestkit {
  Engine: new (opts: NativeDatapathOptions) => NativeEngine;
  /** Elapsed ns for `iterations` checksums (csum_partial) of one in-cache `bytes`-long buffer. */
  benchChecksum(bytes: number, iterations: number, vector: boolean): number;
  /** The vector checksum loop this CPU runs ('avx2'), or '' (scalar only). */
  readonly checksumVectorLoop: string;
}

/** The first of `candidates` that loads (an env override, then the build output). */
function load<T>(file: string, override: string | undefined): T {
  // dist/src/datapath -> repository root
  const root = path.resolve(__dirname, '..', '..', '..');
  const candidates = [override, path.join(root, 'build', 'Release', file)];
  let lastErr: unknown;
  for (const c of candidates) {
    if (!c) continue;
    try {
      return require(c) as T;
    } catch (e) {
      lastErr = e;
    }
  }
  throw new Error(`vxnet native addon ${file} not built (run \`npm install\`): ${(lastErr as Error)?.message}`);
}

let loaded: NativeAddon | undefined;

/** The addon, loaded on first call (a load failure throws, and is retried at the next call). */
export function loadAddon(): NativeAddon {
  return (loaded ??= load<NativeAddon>('vxnet_datapath.node', process.env.VXNET_ADDON));
}

let testkit: NativeTestkit | undefined;

/** The test kit addon (tests and microbenchmarks only), loaded on first call. */
export function loadTestkit(): NativeTestkit {
  return (testkit ??= load<NativeTestkit>('vxnet_testkit.node', process.env.VXNET_TESTKIT));
}

/** The addon, loaded on first property access, so importing this module never needs it built. */
export const addon: NativeAddon = new Proxy({} as NativeAddon, {
  get: (_target, prop) => Reflect.get(loadAddon(), prop),
  has: (_target, prop) => Reflect.has(loadAddon(), prop),
});

/** Which offloads the kernel accepted when the datapath was opened (each falls back on its own). */
export interface DatapathOffloads {
  vnetHdr: boolean;
  tunTso: boolean;
  /** UDP super-packets from the TUN (TUN_F_USO4, Linux >= 6.2). */
  tunUso: boolean;
  udpGso: boolean;
  udpGro: boolean;
  /** CPU-local steering in effect: workers pinned, the receive and TUN steering programs attached. */
  cpuLocal: boolean;
}
