// flannel's "udp" backend on the native datapath: one TUN carrying the whole overlay network and
// a UDP socket (default port 8285) exchanging bare IP packets with every peer.
import type { Backend, BackendContext, BackendDescriptor, BackendNetwork, BackendStats } from './backend';
import type { Logger } from '../log';
import type { Lease, LeaseAttrs, NetworkConfig } from '../subnet/types';
import { formatCidr } from '../net/ip';
import type { Datapath, DatapathConfig, EncapKind, PeerRoute } from '../datapath';
import { addon } from '../datapath/native';
import { backendBool, backendInt, checkPeer, FLANNEL_DEFAULT_PORT, FLANNEL_ENCAP_OVERHEAD, PeerFilter, Serial } from './common';

/** TUN name of the userspace backends (flanneld's udp backend uses flannel0). */
export const USERSPACE_TUN = 'vxnet0';

/** A started userspace datapath whose routes follow the accepted peers. */
export class UserspaceNetwork implements BackendNetwork {
  private readonly serial = new Serial();
  private closed = false;

  constructor(
    private readonly kind: string,
    private readonly datapath: Datapath,
    private readonly filter: PeerFilter<PeerRoute>,
    private readonly log: Logger,
  ) {}

  get mtu(): number {
    return this.datapath.config.mtu;
  }

  /** The running datapath (the Docker networks add theirs to it: src/docker/datapath.ts). */
  get datapathHandle(): Datapath {
    return this.datapath;
  }

  setPeers(peers: Lease[]): Promise<void> {
    return this.serial.run(async () => {
      if (this.closed) throw new Error(`${this.kind}: setPeers after close`);
      const routes = [...this.filter.apply(peers).values()].map((p) => p.value);
      this.datapath.setRoutes(routes);
      this.log.info('peers updated', { backend: this.kind, peers: routes.length });
    });
  }

  stats(): BackendStats {
    const base = {
      backend: this.kind,
      datapath: 'userspace' as const,
      device: this.datapath.tunName,
      mtu: this.mtu,
      peerCount: this.datapath.peers.length,
      failedPeers: [],
      skippedPeers: this.filter.skipped,
    };
    if (this.closed) return { ...base, peers: [], counters: {}, drops: {} };
    const { drops, peers, workers, lanes, offload, ...counters } = this.datapath.stats();
    const macs = new Map(this.datapath.peers.map((r) => [formatCidr(r.subnet), r.vtepMac]));
    return {
      ...base,
      peers: peers.map((p) => ({ ...p, ...(macs.get(p.subnet) ? { vtepMac: macs.get(p.subnet) } : {}) })),
      counters,
      drops,
      workers,
      lanes,
      offload: { ...offload },
    };
  }

  close(): Promise<void> {
    return this.serial.run(async () => {
      this.closed = true;
      this.datapath.close();
    });
  }
}

/** The datapath settings every userspace backend derives from its context and lease. */
export function userspaceConfig(encap: EncapKind, ctx: BackendContext, lease: Lease, port: number): DatapathConfig {
  const workers = userspaceWorkers(ctx.config);
  const cpuLocal = userspaceCpuLocal(ctx.config);
  return {
    ...(workers ? { queues: workers } : {}),
    ...(cpuLocal !== undefined ? { cpuLocal } : {}),
    encap,
    tunName: USERSPACE_TUN,
    mtu: ctx.iface.mtu - FLANNEL_ENCAP_OVERHEAD[encap],
    network: ctx.config.network,
    localSubnet: lease.subnet,
    port,
    bindAddress: ctx.iface.address,
  };
}

/** Opens the datapath; Datapath.create itself leaves nothing behind when it fails. */
export async function startUserspace(
  kind: string,
  cfg: DatapathConfig,
  filter: PeerFilter<PeerRoute>,
  log: Logger,
): Promise<UserspaceNetwork> {
  // Loaded on demand: only the userspace backends need the native addon.
  const { Datapath } = await import('../datapath');
  const datapath = await Datapath.create(cfg);
  log.info('datapath started', { backend: kind, tun: datapath.tunName, mtu: cfg.mtu, port: cfg.port });
  return new UserspaceNetwork(kind, datapath, filter, log);
}

/** flannel: every udp host listens on the same configured port (default 8285; 0 is no port). */
function udpPort(config: NetworkConfig): number {
  return backendInt(config, 'Port', FLANNEL_DEFAULT_PORT.udp, 1, 65535);
}

/** vxnet's own key of the userspace backends: worker threads (TUN queues, at most the addon's limit); absent = one per core. */
export function userspaceWorkers(config: NetworkConfig): number {
  return backendInt(config, 'Workers', 0, 1, addon.options.datapath.queues.max);
}

/** vxnet's own key of the userspace backends: keep each flow on one CPU (DatapathConfig.cpuLocal); absent = the datapath's default. */
export function userspaceCpuLocal(config: NetworkConfig): boolean | undefined {
  return backendBool(config, 'CpuLocal');
}

export class UdpBackend implements Backend {
  readonly type = 'udp';
  readonly port: number;

  constructor(private readonly ctx: BackendContext) {
    this.port = udpPort(ctx.config);
  }

  async leaseAttrs(): Promise<LeaseAttrs> {
    // flanneld's udp backend publishes only PublicIP (no BackendData).
    return { publicIp: this.ctx.iface.publicIp, backendType: this.type };
  }

  async start(lease: Lease): Promise<BackendNetwork> {
    const { log } = this.ctx;
    const port = this.port;
    // flannel's udp peers accept every lease; "" is what flanneld's udp backend writes.
    const filter = new PeerFilter<PeerRoute>(log, (l) => checkPeer(l, ['udp', '']) ?? { subnet: l.subnet, publicIp: l.attrs.publicIp, port });
    return startUserspace('udp', userspaceConfig('udp', this.ctx, lease, port), filter, log);
  }
}

export const udpBackend: BackendDescriptor<'udp'> = {
  kind: 'udp',
  type: 'udp',
  datapath: 'userspace',
  section: { Type: 'udp' },
  validate(config) {
    udpPort(config);
    userspaceWorkers(config);
    userspaceCpuLocal(config);
  },
  create: (ctx) => new UdpBackend(ctx),
};
