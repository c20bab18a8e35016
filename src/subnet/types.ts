// Plain lease and network types shared by the subnet manager, the backends and the daemon.
import type { Cidr } from '../net/ip';

/** What a host publishes about itself in its lease (flannel's LeaseAttrs). */
export interface LeaseAttrs {
  publicIp: string;
  publicIpv6?: string;
  /** "udp", "vxlan", "host-gw", ... as flanneld writes it. */
  backendType: string;
  /** Backend-specific JSON, kept as parsed JSON (vxlan: {"VNI":1,"VtepMAC":"…"}). */
  backendData?: unknown;
}

export interface Lease {
  subnet: Cidr;
  attrs: LeaseAttrs;
  /** When the etcd lease behind it expires, if known. */
  expiration?: Date;
  /** etcd mod revision of the key. */
  revision?: number;
}

/** Backend section of net-conf.json; `raw` keeps every field as written (Port, VNI, Datapath…). */
export interface BackendConfig {
  type: string;
  raw: Record<string, unknown>;
}

/** flannel's net-conf.json, validated. */
export interface NetworkConfig {
  network: Cidr;
  subnetLen: number;
  /** First and last subnet network addresses that may be leased (host order). */
  subnetMin: number;
  subnetMax: number;
  backend: BackendConfig;
}
