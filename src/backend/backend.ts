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

/** A running backend bound to our lease. */
export interface BackendNetwork {
  /** MTU for local containers (docker0 and subnet.env FLANNEL_MTU). */
  readonly mtu: number;
  /** Replaces the whole peer set (every lease except our own); idempotent. */
  setPeers(peers: Lease[]): Promise<void>;
  /** Counters and state for status and metrics. */
  stats(): Record<string, unknown>;
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
