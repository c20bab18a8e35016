// What `vxnet status --json` returns and /metrics is rendered from: the daemon's status as plain
// data. A leaf module (types only): the daemon builds it, the CLI, metrics, test bed and tests read it.

export interface PeerStatus {
  subnet: string;
  publicIp: string;
  backendType: string;
  vtepMac?: string;
  /** Whether the backend holds forwarding state for it (route, FDB/neighbour, datapath entry). */
  installed: boolean;
  expiration?: string;
  txPackets?: number;
  txBytes?: number;
  rxPackets?: number;
  rxBytes?: number;
}

export interface DaemonStatus {
  version: string;
  /** starting until subnet.env, ip-masq and the first peer sync are done; stopping once stop() began. */
  state?: 'starting' | 'running' | 'stopping';
  pid: number;
  startedAt: string;
  uptimeSeconds: number;
  rssBytes: number;
  network: string;
  subnetFile: string;
  ipMasq: boolean;
  /** vxnet's iptables chains (forward rules, ip-masq) and their resync; absent from older daemons. */
  iptables?: {
    forwardRules: boolean;
    ipMasq: boolean;
    /** The host's iptables: nf_tables or legacy (unset when no rules are wanted). */
    mode?: string;
    /** iptables-nft found iptables-legacy tables too (a DROP there is not undone by our rules). */
    legacyTablesPresent?: boolean;
    resyncSeconds: number;
    /** table/chain of each chain kept, e.g. filter/VXNET-FWD. */
    chains: string[];
    /** Times a resync found a chain changed (flushed, jump deleted or moved) and rewrote it. */
    repairs: number;
    lastRepair?: string;
    lastCheck?: string;
    lastError?: string;
  };
  backend: {
    /** udp, vxlan, kernel-vxlan or host-gw. */
    kind: string;
    type: string;
    mtu: number;
    device?: string;
    iface: string;
    publicIp: string;
  };
  lease: {
    subnet: string;
    state: 'none' | 'held' | 'lost';
    expiration?: string;
    renewals: number;
    backendData?: unknown;
  };
  etcd: {
    state: 'connected' | 'unreachable';
    endpoints: string[];
    prefix: string;
    lastContact?: string;
    lastError?: string;
    /** Set while the daemon runs from its snapshot (started while etcd was down): the snapshot's time. */
    snapshotFrom?: string;
  };
  peers: PeerStatus[];
  /** Leases ignored, by reason (malformed, overlap, outside). */
  rejected: Record<string, number>;
  /** Well-formed leases no backend installs (a PublicIP inside the overlay network would loop), now. */
  refusedLeases?: Array<{ subnet: string; publicIp: string; reason: string; detail: string }>;
  /** Lease versions refused so far, by reason. */
  refusedLeasesTotal?: Record<string, number>;
  /** Peer leases the backend could not use (e.g. another backend type), with the reason. */
  skippedPeers: string[];
  /** Backend counters: packets/bytes each way and drops by reason (userspace) or device counters (kernel). */
  counters: Record<string, number>;
  drops: Record<string, number>;
  /** The Docker networks (--docker-plugin). */
  docker?: DockerStatus;
}

export interface DockerNetworkStatus {
  name: string;
  id: string;
  range: string;
  vni: number;
  lease: string;
  leaseState: string;
  gateway: string;
  namespace: string;
  tun?: string;
  mtu: number;
  endpoints: Array<{ id: string; address: string; joined: boolean }>;
  peers: Array<{ subnet: string; publicIp: string; vtepMac?: string; installed: boolean; txPackets?: number; txBytes?: number; rxPackets?: number; rxBytes?: number }>;
  counters: Record<string, number>;
  drops: Record<string, number>;
  conflict?: string;
  error?: string;
}

export interface DockerStatus {
  socket: string;
  engine?: string;
  syncNetworks: boolean;
  networks: DockerNetworkStatus[];
  /** Networks in etcd this host does not have (with --docker-sync-networks they are created here). */
  remoteNetworks: Array<{ name: string; range: string; vni: number; deleted: boolean }>;
  lastSyncError?: string;
  /** Drops of the Docker networks' own VXLAN port (a backend other than userspace vxlan): unknown VNIs, senders. */
  portDrops?: Record<string, number>;
}
