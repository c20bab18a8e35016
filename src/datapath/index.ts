// The typed face of the native datapath: validates configuration, configures the TUN with
// iproute2, and turns peer lists into route snapshots. Packets never come through here.
import { addon, NativeDatapath, type DatapathOffloads } from './native';
import { Cidr, cidrContains, cidrCovers, cidrOverlaps, formatCidr, formatIPv4, maskOf, parseIPv4, parseMac } from '../net/ip';
import { statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { ipIn, sysctlIn } from '../net/iproute';
import { DEFAULT_PORT, ENCAP_OVERHEAD, MAX_VNI } from '../net/wire';

export type { Encap as EncapKind } from '../net/wire';
import type { Encap as EncapKind } from '../net/wire';

/**
 * The overlay is IPv4: without this the kernel sends router solicitations and MLD reports into the
 * TUN, which the datapath can only drop (tx_not_ipv4), muddying the drop counters. Best effort:
 * a kernel without IPv6 has no such file.
 */
function disableIPv6(dev: string): void {
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '1');
  } catch {
    // No IPv6 in this kernel or namespace: nothing to silence.
  }
}

/** disableIPv6 for a TUN in another namespace (best effort, as above). */
async function disableIPv6In(netns: string | undefined, dev: string): Promise<void> {
  if (netns === undefined) return disableIPv6(dev);
  await sysctlIn(netns, `net/ipv6/conf/${dev}/disable_ipv6`, '1').catch(() => undefined);
}

/**
 * Gives a new TUN its MTU and address and brings it up, in `netns` or here. The address carries
 * the overlay's prefix length (as flannel's udp backend), so the kernel routes the whole overlay
 * network into the TUN; a local bridge's smaller subnet stays more specific.
 */
async function configureTun(netns: string | undefined, name: string, mtu: number, address: number, network: Cidr): Promise<void> {
  await ipIn(netns, 'link', 'set', 'dev', name, 'mtu', String(mtu));
  await ipIn(netns, 'addr', 'add', `${formatIPv4(address)}/${network.prefixLen}`, 'dev', name);
  await disableIPv6In(netns, name);
  await ipIn(netns, 'link', 'set', 'dev', name, 'up');
}

/** Underlay bytes each encapsulation adds: outer IPv4 + UDP (+ VXLAN + inner Ethernet). */
export { DEFAULT_PORT, ENCAP_OVERHEAD } from '../net/wire';

export interface DatapathConfig {
  encap: EncapKind;
  /** TUN device name (at most 15 characters). */
  tunName: string;
  /** MTU of the TUN (the overlay MTU). */
  mtu: number;
  /** The whole overlay network: routed into the TUN. */
  network: Cidr;
  /** Our own lease: inner destinations of received packets must fall inside it. */
  localSubnet: Cidr;
  port?: number;
  /** Underlay address to bind the UDP socket to (default: any). */
  bindAddress?: string;
  vni?: number;
  /** Our VTEP MAC (vxlan). */
  vtepMac?: string;
  /** Worker threads, each with its own TUN queue and UDP sockets, serving both directions (default: one per core, at most 16). */
  queues?: number;
  batch?: number;
  /**
   * Microseconds a worker keeps polling without sleeping after its last packet (default 50, 0 =
   * never): a reply arriving within it is handled without a thread wake-up. Bounded CPU per burst.
   */
  busyPollUs?: number;
  /**
   * Scheduler slice the workers request, in µs (EEVDF, Linux >= 6.12; default 100, 0 = the
   * kernel's): a worker woken by a packet preempts a CPU-bound task at once instead of after its slice.
   */
  sliceUs?: number;
  icmpPerSec?: number;
}

/**
 * A datapath with no network of its own: the UDP port, sockets and workers only (VXLAN), serving
 * the networks added with Datapath.addNetwork(). Fields as in DatapathConfig.
 */
export interface PortConfig {
  encap?: 'vxlan';
  port?: number;
  bindAddress?: string;
  queues?: number;
  batch?: number;
  busyPollUs?: number;
  sliceUs?: number;
  icmpPerSec?: number;
}

/**
 * One network of several on a datapath's UDP port (VXLAN): received frames are demultiplexed by
 * VNI onto it, validated against its own peers only, and written into its own TUN; what its TUN
 * hands over is encapsulated with its VNI towards its own peers.
 */
export interface NetworkConfig {
  /** VXLAN network identifier, 0..16777215; unique among the datapath's networks. */
  vni: number;
  /** TUN device name (1-15 characters of [A-Za-z0-9_.-]); must not exist yet in its namespace. */
  tunName: string;
  /**
   * The network namespace the TUN is created and configured in, as a path (an nsfs bind mount
   * such as /run/netns/NAME or /run/vxnet/netns/NAME, or /proc/PID/ns/net). Default: the
   * datapath's own namespace. The namespace must outlive the network.
   */
  netns?: string;
  /** MTU of the TUN (576..65485). */
  mtu: number;
  /** The network's whole range: routed into the TUN (in its namespace). */
  network: Cidr;
  /** This host's lease of it: inner destinations of received packets must fall inside. */
  localSubnet: Cidr;
  /** Our VTEP MAC on this network: peers address their frames to it. */
  vtepMac: string;
  /**
   * The TUN's own address, given with the network's prefix length (default: localSubnet's
   * network address, as flannel does). Must lie inside localSubnet.
   */
  tunAddress?: string;
}

export interface PeerRoute {
  subnet: Cidr;
  publicIp: string;
  port?: number;
  /** The peer's VTEP MAC (vxlan). */
  vtepMac?: string;
}

export interface PeerStats {
  subnet: string;
  publicIp: string;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

export interface DatapathStats {
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
  txBatches: number;
  rxBatches: number;
  tunReads: number;
  tunWrites: number;
  /** TCP super-packets read from the TUN and segmented in the datapath (TSO). */
  tunTsoReads: number;
  /** Coalesced TCP super-packets written into the TUN (GRO). */
  tunGroWrites: number;
  icmpUnreachableSent: number;
  icmpUnreachableSuppressed: number;
  /**
   * Received TCP/UDP packets whose sender left the checksum to offload (the field held only the
   * pseudo-header sum, as a kernel peer on a veth underlay sends them); the datapath filled it in.
   */
  rxCsumCompleted: number;
  /** Received TCP super-packets (a peer's GSO packet delivered whole over a veth underlay), written as TSO. */
  rxSuperPackets: number;
  /** UDP super-packets (GSO_UDP_L4, a local UDP_SEGMENT sender) read from the TUN and cut into datagrams. */
  tunUsoReads: number;
  /** Dropped packets by reason (every reason present, zero or not). */
  drops: Record<string, number>;
  peers: PeerStats[];
  /** Inner packets each worker thread sent and received (is the load spread over the cores?). */
  workers: Array<{ txPackets: number; rxPackets: number }>;
  /** Which offloads the kernel accepted. */
  offload: DatapathOffloads;
}

export class DatapathConfigError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

const COUNTER_FIELDS: Record<string, keyof Omit<DatapathStats, 'drops' | 'peers'>> = {
  tx_packets: 'txPackets',
  tx_bytes: 'txBytes',
  rx_packets: 'rxPackets',
  rx_bytes: 'rxBytes',
  tx_batches: 'txBatches',
  rx_batches: 'rxBatches',
  tun_reads: 'tunReads',
  tun_writes: 'tunWrites',
  tun_tso_reads: 'tunTsoReads',
  tun_gro_writes: 'tunGroWrites',
  icmp_unreachable_sent: 'icmpUnreachableSent',
  icmp_unreachable_suppressed: 'icmpUnreachableSuppressed',
  rx_csum_completed: 'rxCsumCompleted',
  rx_super_packets: 'rxSuperPackets',
  tun_uso_reads: 'tunUsoReads',
};

/** Every drop reason the datapath counts, in its own order. */
export const DROP_REASONS: readonly string[] = addon.counterNames.filter((n) => !(n in COUNTER_FIELDS));

export function validateDatapathConfig(cfg: DatapathConfig): void {
  if (cfg.encap !== 'udp' && cfg.encap !== 'vxlan') {
    throw new DatapathConfigError('encap', `must be "udp" or "vxlan", got ${JSON.stringify(cfg.encap)}`);
  }
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(cfg.tunName)) {
    throw new DatapathConfigError('tunName', `must be 1-15 characters of [A-Za-z0-9_.-], got ${JSON.stringify(cfg.tunName)}`);
  }
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 576 || cfg.mtu > 65535 - ENCAP_OVERHEAD[cfg.encap]) {
    throw new DatapathConfigError('mtu', `must be an integer in 576..${65535 - ENCAP_OVERHEAD[cfg.encap]}, got ${cfg.mtu}`);
  }
  if (!cidrCovers(cfg.network, cfg.localSubnet)) {
    throw new DatapathConfigError('localSubnet', `${formatCidr(cfg.localSubnet)} is not inside ${formatCidr(cfg.network)}`);
  }
  if (cfg.port !== undefined && (!Number.isInteger(cfg.port) || cfg.port < 1 || cfg.port > 65535)) {
    throw new DatapathConfigError('port', `must be in 1..65535, got ${cfg.port}`);
  }
  if (cfg.busyPollUs !== undefined && (!Number.isInteger(cfg.busyPollUs) || cfg.busyPollUs < 0 || cfg.busyPollUs > 10000)) {
    throw new DatapathConfigError('busyPollUs', `must be an integer in 0..10000, got ${cfg.busyPollUs}`);
  }
  if (cfg.sliceUs !== undefined && (!Number.isInteger(cfg.sliceUs) || cfg.sliceUs < 0 || cfg.sliceUs > 100000)) {
    throw new DatapathConfigError('sliceUs', `must be an integer in 0..100000, got ${cfg.sliceUs}`);
  }
  if (cfg.queues !== undefined && (!Number.isInteger(cfg.queues) || cfg.queues < 1 || cfg.queues > 16)) {
    throw new DatapathConfigError('queues', `must be an integer in 1..16, got ${cfg.queues}`);
  }
  if (cfg.vni !== undefined && (!Number.isInteger(cfg.vni) || cfg.vni < 0 || cfg.vni > MAX_VNI)) {
    throw new DatapathConfigError('vni', `must fit in 24 bits (0..16777215), got ${cfg.vni}`);
  }
  if (cfg.encap === 'vxlan' && !cfg.vtepMac) throw new DatapathConfigError('vtepMac', 'required for vxlan');
  if (cfg.vtepMac) {
    try {
      parseMac(cfg.vtepMac);
    } catch (e) {
      throw new DatapathConfigError('vtepMac', (e as Error).message);
    }
  }
  if (cfg.bindAddress !== undefined) {
    try {
      parseIPv4(cfg.bindAddress);
    } catch (e) {
      throw new DatapathConfigError('bindAddress', (e as Error).message);
    }
  }
}

/** One worker per core the process may run on (at most 16 TUN queues). */
export function defaultQueues(): number {
  return Math.max(1, Math.min(16, os.availableParallelism()));
}

function nativeOptions(cfg: DatapathConfig) {
  return {
    tunName: cfg.tunName,
    encap: cfg.encap,
    mtu: cfg.mtu,
    vni: cfg.vni ?? 1,
    port: cfg.port ?? DEFAULT_PORT[cfg.encap],
    bindIp: cfg.bindAddress ? parseIPv4(cfg.bindAddress) : 0,
    batch: cfg.batch,
    queues: cfg.queues ?? defaultQueues(),
    busyPollUs: cfg.busyPollUs,
    sliceUs: cfg.sliceUs,
    icmpPerSec: cfg.icmpPerSec,
    localNet: cfg.localSubnet.ip,
    localPrefixLen: cfg.localSubnet.prefixLen,
    // ICMP errors come from the unreachable destination: a local source would be dropped as a martian.
    icmpSrc: 0,
    // The TUN's own address: a datagram of ours from it that comes back through the TUN is a loop.
    tunIp: cfg.localSubnet.ip,
    localMac: cfg.vtepMac ? parseMac(cfg.vtepMac) : undefined,
  };
}

/** Stable per-peer counter slots, shared by every network of a datapath (its slots are one space); a reused slot starts from a baseline so counts never leak. */
class PeerSlots {
  private readonly byKey = new Map<string, number>();
  private readonly baseline = new Map<number, Float64Array>();
  private free: number[] = [];
  private next = 0;

  constructor(private readonly native: NativeDatapath) {}

  /** Slots for `keys` of network `scope`; that network's other keys give theirs up. */
  assign(scope: number, keys: string[]): number[] {
    const prefix = `${scope}|`;
    const keep = new Set(keys.map((k) => prefix + k));
    for (const [k, slot] of this.byKey) {
      if (k.startsWith(prefix) && !keep.has(k)) {
        this.byKey.delete(k);
        this.free.push(slot);
      }
    }
    return keys.map((key) => {
      const k = prefix + key;
      let slot = this.byKey.get(k);
      if (slot === undefined) {
        slot = this.next < addon.maxPeerSlots ? this.next++ : (this.free.shift() ?? 0xffffffff);
        if (slot !== 0xffffffff) {
          this.baseline.set(slot, this.native.peerCounters(Uint32Array.of(slot)));
          this.byKey.set(k, slot);
        }
      }
      return slot;
    });
  }

  /** Gives up every slot of network `scope`. */
  release(scope: number): void {
    this.assign(scope, []);
  }

  read(slot: number, into: Float64Array, at: number): number[] {
    const base = this.baseline.get(slot);
    return [0, 1, 2, 3].map((k) => into[at + k] - (base ? base[k] : 0));
  }
}

/** The native route records of `routes` (24 bytes each), with their counter slots. */
function routeRecords(routes: PeerRoute[], slots: number[], port: number, needMac: boolean, what: string): Buffer {
  const size = addon.routeRecordSize;
  const buf = Buffer.alloc(routes.length * size);
  routes.forEach((r, i) => {
    const at = i * size;
    if ((r.subnet.ip & maskOf(r.subnet.prefixLen)) >>> 0 !== r.subnet.ip) {
      throw new Error(`${what}: host bits set in ${formatCidr(r.subnet)}`);
    }
    buf.writeUInt32LE(r.subnet.ip, at);
    buf.writeUInt32LE(parseIPv4(r.publicIp), at + 4);
    buf.writeUInt32LE(slots[i], at + 8);
    buf.writeUInt16LE(r.port ?? port, at + 12);
    buf.writeUInt8(r.subnet.prefixLen, at + 14);
    if (r.vtepMac) parseMac(r.vtepMac).copy(buf, at + 16);
    else if (needMac) throw new Error(`${what}: peer ${formatCidr(r.subnet)} has no VTEP MAC`);
  });
  return buf;
}

/** Routes of one network with their slots: the part of setRoutes/setPeers shared by both. */
class RouteState {
  routes: PeerRoute[] = [];
  slots: number[] = [];

  constructor(
    private readonly native: NativeDatapath,
    private readonly peerSlots: PeerSlots,
    private readonly scope: number,
    private readonly port: number,
    private readonly needMac: boolean,
    private readonly what: string,
  ) {}

  set(routes: PeerRoute[]): void {
    const keys = routes.map((r) => formatCidr(r.subnet));
    if (new Set(keys).size !== keys.length) throw new Error(`${this.what}: duplicate subnet in route list`);
    // Validate before any slot changes hands.
    routeRecords(routes, routes.map(() => 0xffffffff), this.port, this.needMac, this.what);
    const slots = this.peerSlots.assign(this.scope, keys);
    const buf = routeRecords(routes, slots, this.port, this.needMac, this.what);
    this.native.setRoutes(buf, this.scope);
    this.routes = routes.slice();
    this.slots = slots;
  }

  peerStats(): PeerStats[] {
    const pc = this.native.peerCounters(Uint32Array.from(this.slots));
    return this.routes.map((r, i) => {
      const [txPackets, txBytes, rxPackets, rxBytes] = this.peerSlots.read(this.slots[i], pc, i * 4);
      return { subnet: formatCidr(r.subnet), publicIp: r.publicIp, txPackets, txBytes, rxPackets, rxBytes };
    });
  }
}

/** DatapathStats from the native counter arrays. */
function buildStats(vals: Float64Array, peers: PeerStats[], wc: Float64Array, offload: DatapathOffloads): DatapathStats {
  const out = { drops: {} as Record<string, number>, peers, workers: [] } as unknown as DatapathStats;
  addon.counterNames.forEach((name, i) => {
    const field = COUNTER_FIELDS[name];
    if (field) (out as unknown as Record<string, number>)[field] = vals[i];
    else out.drops[name] = vals[i];
  });
  for (let i = 0; i + 1 < wc.length; i += 2) out.workers.push({ txPackets: wc[i], rxPackets: wc[i + 1] });
  out.offload = offload;
  return out;
}

/** The id of the network a datapath opens with (DatapathConfig's), in the native face. */
const DEFAULT_NETWORK = 0;

function checkNetworkConfig(cfg: NetworkConfig): void {
  if (!Number.isInteger(cfg.vni) || cfg.vni < 0 || cfg.vni > MAX_VNI) {
    throw new DatapathConfigError('vni', `must fit in 24 bits (0..16777215), got ${cfg.vni}`);
  }
  if (typeof cfg.tunName !== 'string' || !/^[A-Za-z0-9_.-]{1,15}$/.test(cfg.tunName)) {
    throw new DatapathConfigError('tunName', `must be 1-15 characters of [A-Za-z0-9_.-], got ${JSON.stringify(cfg.tunName)}`);
  }
  if (cfg.netns !== undefined) {
    if (typeof cfg.netns !== 'string' || !cfg.netns.startsWith('/')) {
      throw new DatapathConfigError('netns', `must be an absolute path to a network namespace, got ${JSON.stringify(cfg.netns)}`);
    }
    try {
      statSync(cfg.netns);
    } catch (e) {
      throw new DatapathConfigError('netns', `${cfg.netns}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  const maxMtu = 65535 - ENCAP_OVERHEAD.vxlan;
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 576 || cfg.mtu > maxMtu) {
    throw new DatapathConfigError('mtu', `must be an integer in 576..${maxMtu}, got ${cfg.mtu}`);
  }
  if (!cfg.network || !Number.isInteger(cfg.network.prefixLen)) throw new DatapathConfigError('network', 'must be a CIDR prefix');
  if (!cfg.localSubnet || !cidrCovers(cfg.network, cfg.localSubnet)) {
    throw new DatapathConfigError('localSubnet', `${cfg.localSubnet ? formatCidr(cfg.localSubnet) : String(cfg.localSubnet)} is not inside ${formatCidr(cfg.network)}`);
  }
  if (!cfg.vtepMac) throw new DatapathConfigError('vtepMac', 'required for vxlan');
  try {
    parseMac(cfg.vtepMac);
  } catch (e) {
    throw new DatapathConfigError('vtepMac', (e as Error).message);
  }
  if (cfg.tunAddress !== undefined) {
    let a: number;
    try {
      a = parseIPv4(cfg.tunAddress);
    } catch (e) {
      throw new DatapathConfigError('tunAddress', (e as Error).message);
    }
    if (!cidrContains(cfg.localSubnet, a)) {
      throw new DatapathConfigError('tunAddress', `${cfg.tunAddress} is not inside localSubnet ${formatCidr(cfg.localSubnet)}`);
    }
  }
}

export class Datapath {
  private readonly peerSlots: PeerSlots;
  private readonly own: RouteState | undefined;
  private readonly networks = new Map<number, DatapathNetwork>();
  private closed = false;

  private constructor(
    readonly config: DatapathConfig,
    private readonly native: NativeDatapath,
    /** False for a datapath opened with createPort(): it has networks only through addNetwork(). */
    readonly hasDefaultNetwork = true,
  ) {
    this.peerSlots = new PeerSlots(native);
    if (hasDefaultNetwork) {
      this.own = new RouteState(native, this.peerSlots, DEFAULT_NETWORK, config.port ?? DEFAULT_PORT[config.encap], config.encap === 'vxlan', 'setRoutes');
    }
  }

  /** An engine without TUN or sockets: for byte-vector tests and microbenchmarks. */
  static detached(cfg: DatapathConfig): Datapath {
    validateDatapathConfig(cfg);
    return new Datapath(cfg, new addon.Datapath(nativeOptions(cfg)));
  }

  /**
   * Opens the TUN and UDP socket, configures the TUN (MTU, address, up; the kernel then routes the
   * whole overlay network into it) and starts the workers. On any failure nothing is left behind.
   * The network of `cfg` is the datapath's default network; with `encap: 'vxlan'` more networks
   * can share its port (addNetwork).
   */
  static async create(cfg: DatapathConfig): Promise<Datapath> {
    validateDatapathConfig(cfg);
    const native = new addon.Datapath(nativeOptions(cfg));
    const name = native.open();
    try {
      await configureTun(undefined, name, cfg.mtu, cfg.localSubnet.ip, cfg.network);
      native.start();
    } catch (e) {
      native.stop();
      throw e;
    }
    return new Datapath({ ...cfg, tunName: name }, native);
  }

  /**
   * Opens the UDP port (sockets, workers) with no network of its own: every network it serves is
   * added with addNetwork(). VXLAN only. stats() then counts only what belongs to no network.
   */
  static async createPort(cfg: PortConfig): Promise<Datapath> {
    if (cfg.encap !== undefined && cfg.encap !== 'vxlan') {
      throw new DatapathConfigError('encap', `a datapath without a network of its own is vxlan only, got ${JSON.stringify(cfg.encap)}`);
    }
    // Checked as a DatapathConfig with placeholders for the absent network.
    const full: DatapathConfig = { ...cfg, encap: 'vxlan', tunName: 'none', mtu: 1450, network: { ip: 0, prefixLen: 0 }, localSubnet: { ip: 0, prefixLen: 0 }, vtepMac: '02:00:00:00:00:00' };
    validateDatapathConfig(full);
    const native = new addon.Datapath({ ...nativeOptions(full), tunName: '', defaultNetwork: false });
    native.open();
    try {
      native.start();
    } catch (e) {
      native.stop();
      throw e;
    }
    return new Datapath(full, native, false);
  }

  get tunName(): string {
    return this.hasDefaultNetwork ? this.native.tunName || this.config.tunName : '';
  }

  get routeCount(): number {
    return this.native.routeCount;
  }

  /** Publishes a whole new route snapshot of the default network; workers switch to it without pausing. */
  setRoutes(routes: PeerRoute[]): void {
    if (!this.own) throw new Error('setRoutes: this datapath has no network of its own (createPort); use its networks\' setPeers');
    this.own.set(routes);
  }

  get peers(): readonly PeerRoute[] {
    return this.own?.routes ?? [];
  }

  /**
   * Counters of the default network plus what belongs to no network of the datapath (receive
   * batches; datagrams too short to name a network, or whose VNI is none of ours, from a sender
   * that is or is not a peer: rx_short, rx_bad_vni, rx_vxlan_flags, rx_unknown_peer). For one
   * network only, as before networks could be added, that is everything.
   */
  stats(): DatapathStats {
    const offload = this.native.offload;
    return buildStats(this.native.counters(), this.own?.peerStats() ?? [], this.native.workerCounters(), offload);
  }

  /**
   * Adds a network on this datapath's port (VXLAN only): opens its TUN (one queue per worker) in
   * `cfg.netns` or here, gives it its MTU and address (the network's prefix length, so its range
   * is routed into it) and brings it up; the workers pick it up without pausing the others. It has
   * no peers until setPeers(). Fails (DatapathConfigError naming the field) when the VNI is taken,
   * the TUN name exists in that namespace, the range overlaps another network's in the same
   * namespace, or a field is invalid; then nothing is left behind.
   */
  async addNetwork(cfg: NetworkConfig): Promise<DatapathNetwork> {
    if (this.closed) throw new Error('addNetwork: datapath closed');
    if (this.config.encap !== 'vxlan') {
      throw new DatapathConfigError('encap', 'udp encapsulation carries no VNI: a udp datapath serves only its own network');
    }
    checkNetworkConfig(cfg);
    const others: Array<{ vni: number; tunName: string; netns?: string; network: Cidr; what: string }> = [...this.networks.values()].map((n) => ({
      vni: n.config.vni, tunName: n.tunName, netns: n.config.netns, network: n.config.network, what: `network ${n.config.vni}`,
    }));
    if (this.hasDefaultNetwork) {
      others.push({ vni: this.config.vni ?? 1, tunName: this.tunName, network: this.config.network, what: 'the default network' });
    }
    for (const o of others) {
      if (o.vni === cfg.vni) throw new DatapathConfigError('vni', `${cfg.vni} is already served by ${o.what}`);
      if (o.netns === cfg.netns && o.tunName === cfg.tunName) throw new DatapathConfigError('tunName', `${cfg.tunName} is already ${o.what}'s TUN`);
      if (o.netns === cfg.netns && cidrOverlaps(o.network, cfg.network)) {
        throw new DatapathConfigError('network', `${formatCidr(cfg.network)} overlaps ${formatCidr(o.network)} of ${o.what} in the same namespace`);
      }
    }
    const address = cfg.tunAddress !== undefined ? parseIPv4(cfg.tunAddress) : cfg.localSubnet.ip;
    let id: number;
    try {
      id = this.native.addNetwork({
        tunName: cfg.tunName,
        netns: cfg.netns,
        mtu: cfg.mtu,
        vni: cfg.vni,
        localNet: cfg.localSubnet.ip,
        localPrefixLen: cfg.localSubnet.prefixLen,
        localMac: parseMac(cfg.vtepMac),
        // A datagram of ours from the TUN's address that comes back through the TUN is a loop.
        tunIp: address,
        // ICMP errors come from the unreachable destination, as for the default network.
        icmpSrc: 0,
      });
    } catch (e) {
      const msg = (e as Error).message;
      if (/already exists/.test(msg)) throw new DatapathConfigError('tunName', msg);
      if (/netns|setns/.test(msg)) throw new DatapathConfigError('netns', msg);
      throw e;
    }
    const port = this.config.port ?? DEFAULT_PORT.vxlan;
    const net = new DatapathNetwork(cfg, id, this.native, new RouteState(this.native, this.peerSlots, id, port, true, 'setPeers'), this.peerSlots, () => this.networks.delete(id));
    this.networks.set(id, net);
    try {
      await configureTun(cfg.netns, net.tunName, cfg.mtu, address, cfg.network);
    } catch (e) {
      await net.close().catch(() => undefined);
      throw e;
    }
    return net;
  }

  /** The networks added with addNetwork() and not closed yet. */
  get addedNetworks(): readonly DatapathNetwork[] {
    return [...this.networks.values()];
  }

  /** Pure encapsulation of one packet against the current routes (tests, microbenchmarks). */
  encapForTest(packet: Buffer) {
    return this.native.testTx(packet);
  }

  /** Pure validation + decapsulation of one datagram from `srcIp` (tests, microbenchmarks). */
  decapForTest(srcIp: string, datagram: Buffer) {
    return this.native.testRx(parseIPv4(srcIp), datagram);
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

  /**
   * Joins the workers and closes the fds; every TUN (the default network's and the added ones',
   * with their addresses and routes) disappears. Added networks are closed with it.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const n of this.networks.values()) n.markClosed();
    this.native.stop();
    for (const n of [...this.networks.values()]) n.finishClose();
  }
}

/**
 * A network added to a datapath (Datapath.addNetwork): its VNI, its TUN (possibly in another
 * namespace), its peers and its counters; it shares the datapath's port, sockets and workers.
 *
 * Contract:
 * - Receive: a VXLAN frame carrying this VNI is checked against this network's peers only (outer
 *   source a peer of this network, inner source inside that peer's subnet, inner destination
 *   inside localSubnet) and written into this network's TUN; no other network's TUN ever sees it.
 *   Coalescing never merges packets of two networks.
 * - Transmit: what this TUN hands over goes to this network's peers only, with this VNI.
 * - setPeers publishes a whole new route snapshot (as Datapath.setRoutes); workers switch without pausing.
 * - stats() has the shape of Datapath.stats(): this network's counters, drops and peers. Frames
 *   that name no network (rx_short, unknown VNI) are counted by the datapath, not here.
 * - close() unpublishes the network, waits until no worker can still use its fds or tables, then
 *   closes them (its TUN, with its address and routes, disappears). The returned promise resolves
 *   then; stats() keeps returning the final counters.
 */
export class DatapathNetwork {
  private closing?: Promise<void>;
  private final?: DatapathStats;
  private gone = false;

  /** @internal Made by Datapath.addNetwork. */
  constructor(
    readonly config: NetworkConfig,
    /** The datapath's id of this network (stable while it lives; never reused). */
    readonly id: number,
    private readonly native: NativeDatapath,
    private readonly routes: RouteState,
    private readonly peerSlots: PeerSlots,
    private readonly onClosed: () => void,
  ) {}

  get vni(): number {
    return this.config.vni;
  }

  /** The TUN's name in its namespace (config.netns, or the datapath's). */
  get tunName(): string {
    return this.config.tunName;
  }

  get routeCount(): number {
    return this.gone ? 0 : this.native.networkInfo(this.id).routeCount;
  }

  get peers(): readonly PeerRoute[] {
    return this.routes.routes;
  }

  get closed(): boolean {
    return this.closing !== undefined || this.gone;
  }

  /** Publishes this network's whole peer list (every peer needs its VTEP MAC). */
  setPeers(routes: PeerRoute[]): void {
    if (this.closed) throw new Error(`setPeers: network ${this.config.vni} is closed`);
    this.routes.set(routes);
  }

  stats(): DatapathStats {
    if (this.final) return this.final;
    const info = this.native.networkInfo(this.id);
    const offload = { ...this.native.offload, tunTso: info.tunTso, tunUso: info.tunUso };
    return buildStats(this.native.counters(this.id), this.routes.peerStats(), this.native.workerCounters(this.id), offload);
  }

  /** Removes the network; resolves once its fds are closed and its TUN is gone. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.remove();
    return this.closing;
  }

  private async remove(): Promise<void> {
    if (this.gone) return;
    this.native.removeNetwork(this.id);
    // Workers let go at the top of their next loop (they are woken for it): normally within one pass.
    const deadline = Date.now() + 10_000;
    while (!this.native.networkReleased(this.id)) {
      if (Date.now() > deadline) throw new Error(`network ${this.config.vni}: workers still hold it after 10 s`);
      await new Promise((r) => setTimeout(r, 1));
    }
    this.finishClose();
  }

  /** @internal The datapath is stopping: no more setPeers. */
  markClosed(): void {
    this.closing ??= Promise.resolve();
  }

  /** @internal Its fds are closed: keep the final counters, give up its ids. */
  finishClose(): void {
    if (this.gone) return;
    this.final = this.stats();
    this.gone = true;
    this.native.forgetNetwork(this.id);
    this.peerSlots.release(this.id);
    this.onClosed();
  }
}
