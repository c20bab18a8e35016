// The typed face of the native datapath: validates configuration, configures the TUN with
// iproute2, and turns peer lists into route snapshots. Packets never come through here.
import { addon, NativeDatapath } from './native';
import { checkNetworkConfig, DatapathConfigError, nativeOptions, portOf, validateDatapathConfig, type DatapathConfig, type NetworkConfig, type PortConfig } from './config';
import { PeerSlots, RouteState, type PeerRoute } from './routes';
import { buildStats, type DatapathStats } from './stats';
import { Cidr, cidrOverlaps, formatCidr, formatIPv4, parseIPv4, parseMac } from '../net/ip';
import { writeFileSync } from 'node:fs';
import { ipIn, sysctlIn } from '../net/iproute';

export type { Encap as EncapKind } from '../net/wire';

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
export { checkNetworkConfig, DatapathConfigError, defaultQueues, validateDatapathConfig, type DatapathConfig, type NetworkConfig, type PortConfig } from './config';
export type { PeerRoute, PeerStats } from './routes';
export type { DatapathStats } from './stats';
export { COUNTER_NAMES, DROP_REASONS, type CounterName, type DropReason, type DatapathCounters } from './contract.generated';

/** The id of the network a datapath opens with (DatapathConfig's), in the native face. */
const DEFAULT_NETWORK = 0;

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
      this.own = new RouteState(native, this.peerSlots, DEFAULT_NETWORK, portOf(config), config.encap === 'vxlan', 'setRoutes');
    }
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
      others.push({ vni: this.config.vni ?? addon.options.datapath.vni.default!, tunName: this.tunName, network: this.config.network, what: 'the default network' });
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
    const port = portOf(this.config);
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
