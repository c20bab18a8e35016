// flannel's "host-gw" backend: no encapsulation, one route per peer subnet via the peer's public
// IP on the underlay interface; every host must share one L2 segment.
import type { Backend, BackendContext, BackendNetwork, Logger } from './backend';
import type { Lease, LeaseAttrs } from '../subnet/types';
import { formatCidr, isIPv4 } from '../net/ip';
import { ip, linkExists } from '../net/iproute';
import { errorMessage, PeerFilter, Serial } from './common';

interface RouteEntry {
  subnet: string;
  gateway: string;
}

/** The peer's address is on-link when reaching it needs no gateway of its own. */
async function onLink(addr: string, dev: string): Promise<boolean> {
  const out = JSON.parse(await ip('-j', 'route', 'get', addr, 'oif', dev)) as Array<{ gateway?: string; type?: string }>;
  return out.length > 0 && !out[0].gateway && (out[0].type === undefined || out[0].type === 'unicast');
}

class HostGwNetwork implements BackendNetwork {
  private readonly installed = new Map<string, RouteEntry>();
  private readonly failed = new Set<string>();
  private readonly serial = new Serial();
  private closed = false;

  constructor(
    private readonly dev: string,
    readonly mtu: number,
    private readonly filter: PeerFilter<RouteEntry>,
    private readonly log: Logger,
  ) {}

  setPeers(peers: Lease[]): Promise<void> {
    return this.serial.run(async () => {
      if (this.closed) throw new Error('host-gw: setPeers after close');
      const want = new Map([...this.filter.apply(peers)].map(([k, p]) => [k, p.value]));
      for (const [key, have] of this.installed) {
        if (want.get(key)?.gateway !== have.gateway) await this.remove(key, have);
      }
      this.failed.clear();
      for (const [key, route] of want) {
        if (this.installed.has(key)) continue;
        try {
          if (!(await onLink(route.gateway, this.dev))) {
            throw new Error(`peer ${route.gateway} is not on the same L2 network as ${this.dev} (host-gw requires it)`);
          }
          // replace: a stale route to the same subnet (other gateway or device) is overwritten, as flannel does.
          await ip('route', 'replace', route.subnet, 'via', route.gateway, 'dev', this.dev);
          this.installed.set(key, route);
        } catch (e) {
          this.failed.add(key);
          this.log.error('failed to add host-gw route', { subnet: key, gateway: route.gateway, error: errorMessage(e) });
        }
      }
    });
  }

  private async remove(key: string, r: RouteEntry): Promise<void> {
    try {
      await ip('route', 'del', r.subnet, 'via', r.gateway, 'dev', this.dev);
    } catch (e) {
      const msg = errorMessage(e);
      if (!/No such process|not found|Cannot find/i.test(msg)) this.log.warn('failed to delete host-gw route', { subnet: key, error: msg });
    }
    this.installed.delete(key);
  }

  stats(): Record<string, unknown> {
    return {
      backend: 'host-gw',
      datapath: 'kernel',
      device: this.dev,
      mtu: this.mtu,
      peerCount: this.installed.size,
      routes: [...this.installed.values()],
      failedPeers: [...this.failed],
      skippedPeers: this.filter.skipped,
    };
  }

  close(): Promise<void> {
    return this.serial.run(async () => {
      if (this.closed) return;
      this.closed = true;
      for (const [key, r] of [...this.installed]) await this.remove(key, r);
    });
  }
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw';

  constructor(private readonly ctx: BackendContext) {
    // flannel refuses host-gw behind NAT: peers route straight to our interface address.
    if (ctx.iface.publicIp !== ctx.iface.address) {
      throw new Error(
        `host-gw: public IP ${ctx.iface.publicIp} differs from interface address ${ctx.iface.address} (NAT is not supported by host-gw)`,
      );
    }
  }

  async leaseAttrs(): Promise<LeaseAttrs> {
    return { publicIp: this.ctx.iface.publicIp, backendType: this.type };
  }

  async start(_lease: Lease): Promise<BackendNetwork> {
    const { iface, log } = this.ctx;
    if (!(await linkExists(iface.name))) throw new Error(`host-gw: interface ${iface.name} does not exist`);
    const filter = new PeerFilter<RouteEntry>(log, (l) => {
      if (l.attrs.backendType !== 'host-gw') return { reason: `backend type ${JSON.stringify(l.attrs.backendType)} is not host-gw` };
      if (!isIPv4(l.attrs.publicIp)) return { reason: `PublicIP invalid: ${JSON.stringify(l.attrs.publicIp)}` };
      return { subnet: formatCidr(l.subnet), gateway: l.attrs.publicIp };
    });
    // No encapsulation: containers get the full underlay MTU.
    return new HostGwNetwork(iface.name, iface.mtu, filter, log);
  }
}
