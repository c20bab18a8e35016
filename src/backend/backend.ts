// One small interface per backend, after flannel's Backend/Network: the backend turns peer leases
// into forwarding state and never talks to etcd itself.
import type { Lease, LeaseAttrs, NetworkConfig } from '../subnet/types';

export interface ExternalInterface {
  /** Underlay interface name (flanneld --iface). */
  name: string;
  /** Its IPv4 address. */
  address: string;
  /** Address published to peers (flanneld --public-ip; defaults to `address`). */
  publicIp: string;
  mtu: number;
}

import type { Logger } from '../log';
/** Re-exported for the backends' convenience; log.ts owns it. */
export type { Logger };

export interface BackendContext {
  config: NetworkConfig;
  iface: ExternalInterface;
  log: Logger;
}

/** A peer whose forwarding state the backend holds. */
export interface BackendPeer {
  subnet: string;
  publicIp: string;
  /** vxlan: the peer's VTEP MAC. */
  vtepMac?: string;
  /** host-gw: the next hop (the peer's PublicIP). */
  gateway?: string;
  /** Per-peer counters, where the datapath keeps them (userspace). */
  txPackets?: number;
  txBytes?: number;
  rxPackets?: number;
  rxBytes?: number;
}

/**
 * What a running backend reports for status and metrics. Built from what the backend holds in
 * memory: stats() never blocks (no command, no I/O), so status stays cheap whatever the backend.
 */
export interface BackendStats {
  /** Backend kind: udp, vxlan, kernel-vxlan, host-gw. */
  backend: string;
  datapath: 'userspace' | 'kernel';
  /** The device the overlay is routed into (TUN, flannel.<VNI>, or the underlay for host-gw). */
  device: string;
  mtu: number;
  /** Peers with forwarding state installed (gauge). */
  peerCount: number;
  peers: BackendPeer[];
  /** Peers whose installation failed (retried), and leases this backend does not serve. */
  failedPeers: string[];
  skippedPeers: string[];
  /** Cumulative counters: the userspace datapath's, or the device's kernel counters. */
  counters: Record<string, number>;
  /** Packets dropped by the datapath, by reason (userspace; empty for kernel datapaths). */
  drops: Record<string, number>;
  /** Userspace: inner packets each worker sent and received. */
  workers?: Array<{ txPackets: number; rxPackets: number }>;
  /** With CPU-local steering: each worker's light and bulk lane (DatapathStats.lanes). */
  lanes?: Array<{ worker: number; lane: 'light' | 'bulk'; txPackets: number; rxPackets: number }>;
  /** Userspace: which offloads the kernel accepted. */
  offload?: Record<string, boolean>;
}

/** A running backend bound to our lease. */
export interface BackendNetwork {
  /** MTU for local containers (docker0 and subnet.env FLANNEL_MTU). */
  readonly mtu: number;
  /** Replaces the whole peer set (every lease except our own); idempotent. */
  setPeers(peers: Lease[]): Promise<void>;
  /** Counters and state for status and metrics (never blocks). */
  stats(): BackendStats;
  /** Re-reads what stats() cannot read without blocking (a kernel device's counters); status and metrics await it first. */
  refreshStats?(): Promise<void>;
  /** Removes everything the backend created on the host. */
  close(): Promise<void>;
}

export interface Backend {
  /** BackendType written into our lease. */
  readonly type: string;
  /** Our lease attributes (BackendData included), computed before the lease is acquired. */
  leaseAttrs(): Promise<LeaseAttrs>;
  /** Creates devices and state for `lease`; throws (leaving nothing behind) on failure. */
  start(lease: Lease): Promise<BackendNetwork>;
}

export type BackendFactory = (ctx: BackendContext) => Backend;

/**
 * One backend module's whole contract with the rest of vxnet (flannel's backend registration): the
 * registry, the demo, the bench and the chart read the list of these (src/backend/registry.ts).
 * Adding a backend is one module exporting a descriptor and one line in that list.
 */
export interface BackendDescriptor<K extends string = string> {
  /** vxnet's name for it: status, --backend of the demo, the bench's columns. */
  readonly kind: K;
  /** flannel's Backend.Type it serves (matched case-insensitively, as flanneld does). */
  readonly type: string;
  /** Backend.Datapath that selects it; the first descriptor of a Type is its default. */
  readonly datapath: 'userspace' | 'kernel';
  /** The net-conf.json Backend section that selects it (what the demo and the bench write). */
  readonly section: Readonly<Record<string, unknown>>;
  /** Checks this backend's own Backend.* fields; throws an Error naming `Backend.<field>`. */
  validate(config: NetworkConfig): void;
  create(ctx: BackendContext): Backend;
}
