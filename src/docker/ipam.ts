// IPAM of one host in one Docker network: container addresses come from this host's lease of the
// network's range (flannel's model: no per-address coordination across hosts). The lease's first
// address is the bridge (the network's gateway on this host); the network and broadcast addresses
// are never handed out.
import { type Cidr, cidrContains, cidrHost, cidrSize, formatCidr, formatIPv4, parseIPv4 } from '../net/ip';
import { DockerRequestError } from './protocol';

/** The bridge's address in a lease: its first host address. */
export function gatewayOf(lease: Cidr): number {
  return cidrHost(lease, 1);
}

export class AddressPool {
  private readonly used = new Set<number>();

  constructor(readonly lease: Cidr) {}

  get gateway(): number {
    return gatewayOf(this.lease);
  }

  /** "a.b.c.d/len" with the lease's prefix length, as dockerd wants it. */
  withLen(ip: number): string {
    return `${formatIPv4(ip)}/${this.lease.prefixLen}`;
  }

  /** Addresses handed out now (containers, not the gateway). */
  get allocated(): number[] {
    return [...this.used].sort((a, b) => a - b);
  }

  /** Restores an allocation (from the saved state); false when it does not fit this lease. */
  restore(ip: number): boolean {
    if (!this.assignable(ip)) return false;
    this.used.add(ip);
    return true;
  }

  private assignable(ip: number): boolean {
    const last = cidrHost(this.lease, cidrSize(this.lease) - 1);
    return cidrContains(this.lease, ip) && ip !== this.lease.ip && ip !== last && ip !== this.gateway;
  }

  /**
   * `requested` (docker run --ip) if it is free and in the lease, else the lowest free address.
   * Errors name the flag the user gave (or the range that is full).
   */
  allocate(requested: string | undefined, networkLabel: string): number {
    if (requested) {
      let ip: number;
      try {
        ip = parseIPv4(requested.replace(/\/\d+$/, ''));
      } catch {
        throw new DockerRequestError('--ip', `${JSON.stringify(requested)} is not an IPv4 address`);
      }
      if (!cidrContains(this.lease, ip)) {
        throw new DockerRequestError('--ip', `${formatIPv4(ip)} is not in this host's lease ${formatCidr(this.lease)} of network ${networkLabel} (each host hands out addresses from its own lease)`);
      }
      if (!this.assignable(ip)) throw new DockerRequestError('--ip', `${formatIPv4(ip)} is the network, gateway or broadcast address of ${formatCidr(this.lease)}`);
      if (this.used.has(ip)) throw new DockerRequestError('--ip', `${formatIPv4(ip)} is already in use in network ${networkLabel}`);
      this.used.add(ip);
      return ip;
    }
    const size = cidrSize(this.lease);
    for (let n = 2; n < size - 1; n++) {
      const ip = cidrHost(this.lease, n);
      if (!this.used.has(ip)) {
        this.used.add(ip);
        return ip;
      }
    }
    throw new DockerRequestError(
      '--ipam-opt vxnet.subnet-len',
      `no free address left in this host's lease ${formatCidr(this.lease)} of network ${networkLabel} (${size - 3} containers); create the network with a shorter vxnet.subnet-len for larger per-host leases`,
    );
  }

  release(ip: number): boolean {
    return this.used.delete(ip);
  }
}
