// The typed face of the native datapath: validates configuration, configures the TUN with
// iproute2, and turns peer lists into route snapshots. Packets never come through here.
import { addon, NativeDatapath, type DatapathOffloads } from './native';
import { Cidr, cidrCovers, formatCidr, formatIPv4, maskOf, parseIPv4, parseMac } from '../net/ip';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import { ip } from '../net/iproute';

export type EncapKind = 'udp' | 'vxlan';

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

/** Underlay bytes each encapsulation adds: outer IPv4 + UDP (+ VXLAN + inner Ethernet). */
export const ENCAP_OVERHEAD: Record<EncapKind, number> = { udp: 20 + 8, vxlan: 20 + 8 + 8 + 14 };
export const DEFAULT_PORT: Record<EncapKind, number> = { udp: 8285, vxlan: 8472 };

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
  if (cfg.vni !== undefined && (!Number.isInteger(cfg.vni) || cfg.vni < 0 || cfg.vni > 0xffffff)) {
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

/** Stable per-peer counter slots; a reused slot starts from a baseline so counts never leak. */
class PeerSlots {
  private readonly bySubnet = new Map<string, number>();
  private readonly baseline = new Map<number, Float64Array>();
  private free: number[] = [];
  private next = 0;

  constructor(private readonly native: NativeDatapath) {}

  assign(keys: string[]): number[] {
    const keep = new Set(keys);
    for (const [k, slot] of this.bySubnet) {
      if (!keep.has(k)) {
        this.bySubnet.delete(k);
        this.free.push(slot);
      }
    }
    return keys.map((k) => {
      let slot = this.bySubnet.get(k);
      if (slot === undefined) {
        slot = this.next < addon.maxPeerSlots ? this.next++ : (this.free.shift() ?? 0xffffffff);
        if (slot !== 0xffffffff) {
          this.baseline.set(slot, this.native.peerCounters(Uint32Array.of(slot)));
          this.bySubnet.set(k, slot);
        }
      }
      return slot;
    });
  }

  read(slot: number, into: Float64Array, at: number): number[] {
    const base = this.baseline.get(slot);
    return [0, 1, 2, 3].map((k) => into[at + k] - (base ? base[k] : 0));
  }
}

export class Datapath {
  private routes: PeerRoute[] = [];
  private slots: number[] = [];
  private readonly peerSlots: PeerSlots;
  private closed = false;

  private constructor(
    readonly config: DatapathConfig,
    private readonly native: NativeDatapath,
  ) {
    this.peerSlots = new PeerSlots(native);
  }

  /** An engine without TUN or sockets: for byte-vector tests and microbenchmarks. */
  static detached(cfg: DatapathConfig): Datapath {
    validateDatapathConfig(cfg);
    return new Datapath(cfg, new addon.Datapath(nativeOptions(cfg)));
  }

  /**
   * Opens the TUN and UDP socket, configures the TUN (MTU, address, up; the kernel then routes the
   * whole overlay network into it) and starts the workers. On any failure nothing is left behind.
   */
  static async create(cfg: DatapathConfig): Promise<Datapath> {
    validateDatapathConfig(cfg);
    const native = new addon.Datapath(nativeOptions(cfg));
    const name = native.open();
    try {
      // Like flannel's udp backend: the lease's network address with the overlay's prefix length,
      // so the kernel installs "<network> dev <tun>" itself; the local bridge's /24 stays more specific.
      await ip('link', 'set', 'dev', name, 'mtu', String(cfg.mtu));
      await ip('addr', 'add', `${formatIPv4(cfg.localSubnet.ip)}/${cfg.network.prefixLen}`, 'dev', name);
      disableIPv6(name);
      await ip('link', 'set', 'dev', name, 'up');
      native.start();
    } catch (e) {
      native.stop();
      throw e;
    }
    return new Datapath({ ...cfg, tunName: name }, native);
  }

  get tunName(): string {
    return this.native.tunName || this.config.tunName;
  }

  get routeCount(): number {
    return this.native.routeCount;
  }

  /** Publishes a whole new route snapshot; workers switch to it without pausing. */
  setRoutes(routes: PeerRoute[]): void {
    const port = this.config.port ?? DEFAULT_PORT[this.config.encap];
    const keys = routes.map((r) => formatCidr(r.subnet));
    if (new Set(keys).size !== keys.length) throw new Error('setRoutes: duplicate subnet in route list');
    const slots = this.peerSlots.assign(keys);
    const size = addon.routeRecordSize;
    const buf = Buffer.alloc(routes.length * size);
    routes.forEach((r, i) => {
      const at = i * size;
      if ((r.subnet.ip & maskOf(r.subnet.prefixLen)) >>> 0 !== r.subnet.ip) {
        throw new Error(`setRoutes: host bits set in ${formatCidr(r.subnet)}`);
      }
      buf.writeUInt32LE(r.subnet.ip, at);
      buf.writeUInt32LE(parseIPv4(r.publicIp), at + 4);
      buf.writeUInt32LE(slots[i], at + 8);
      buf.writeUInt16LE(r.port ?? port, at + 12);
      buf.writeUInt8(r.subnet.prefixLen, at + 14);
      if (r.vtepMac) parseMac(r.vtepMac).copy(buf, at + 16);
      else if (this.config.encap === 'vxlan') throw new Error(`setRoutes: peer ${formatCidr(r.subnet)} has no VTEP MAC`);
    });
    this.native.setRoutes(buf);
    this.routes = routes.slice();
    this.slots = slots;
  }

  get peers(): readonly PeerRoute[] {
    return this.routes;
  }

  stats(): DatapathStats {
    const vals = this.native.counters();
    const out = { drops: {} as Record<string, number>, peers: [] as PeerStats[], workers: [] } as unknown as DatapathStats;
    addon.counterNames.forEach((name, i) => {
      const field = COUNTER_FIELDS[name];
      if (field) (out as unknown as Record<string, number>)[field] = vals[i];
      else out.drops[name] = vals[i];
    });
    const pc = this.native.peerCounters(Uint32Array.from(this.slots));
    out.peers = this.routes.map((r, i) => {
      const [txPackets, txBytes, rxPackets, rxBytes] = this.peerSlots.read(this.slots[i], pc, i * 4);
      return { subnet: formatCidr(r.subnet), publicIp: r.publicIp, txPackets, txBytes, rxPackets, rxBytes };
    });
    const wc = this.native.workerCounters();
    for (let i = 0; i + 1 < wc.length; i += 2) out.workers.push({ txPackets: wc[i], rxPackets: wc[i + 1] });
    out.offload = this.native.offload;
    return out;
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

  /** Joins the workers and closes the fds; the TUN (and its address and route) disappears. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.stop();
  }
}
