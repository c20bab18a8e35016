// flannel's "host-gw" backend: no encapsulation, one route per peer subnet via the peer's public
// IP on the underlay interface; every host must share one L2 segment.
import type { Backend, BackendContext, BackendNetwork, Logger } from './backend';
import type { Lease, LeaseAttrs } from '../subnet/types';
import { formatCidr } from '../net/ip';
import { ip, linkExists } from '../net/iproute';
import { bestEffortDelete, checkPeer, PeerFilter } from './common';
import { PeerReconciler } from './reconciler';

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
  private readonly peers: PeerReconciler<RouteEntry>;

  constructor(
    private readonly dev: string,
    readonly mtu: number,
    filter: PeerFilter<RouteEntry>,
    log: Logger,
  ) {
    this.peers = new PeerReconciler<RouteEntry>('host-gw', filter, {
      install: async (_key, r) => {
        if (!(await onLink(r.gateway, dev))) {
          throw new Error(`peer ${r.gateway} is not on the same L2 network as ${dev} (host-gw requires it)`);
        }
        // replace: a stale route to the same subnet (other gateway or device) is overwritten, as flannel does.
        await ip('route', 'replace', r.subnet, 'via', r.gateway, 'dev', dev);
      },
      remove: (key, r) => bestEffortDelete(log, `host-gw route ${key}`, () => ip('route', 'del', r.subnet, 'via', r.gateway, 'dev', dev)),
      equal: (a, b) => a.gateway === b.gateway,
      describe: (r) => ({ gateway: r.gateway }),
    }, log);
  }

  setPeers(peers: Lease[]): Promise<void> {
    return this.peers.setPeers(peers);
  }

  stats(): Record<string, unknown> {
    return {
      backend: 'host-gw',
      datapath: 'kernel',
      device: this.dev,
      mtu: this.mtu,
      peerCount: this.peers.installed.size,
      routes: [...this.peers.installed.values()],
      failedPeers: this.peers.failed,
      skippedPeers: this.peers.skipped,
    };
  }

  close(): Promise<void> {
    return this.peers.close();
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
    const filter = new PeerFilter<RouteEntry>(log, (l) => checkPeer(l, ['host-gw']) ?? { subnet: formatCidr(l.subnet), gateway: l.attrs.publicIp });
    // No encapsulation: containers get the full underlay MTU.
    return new HostGwNetwork(iface.name, iface.mtu, filter, log);
  }
}
