// flannel's "host-gw" backend: no encapsulation, one route per peer subnet via the peer's public
// IP on the underlay interface; every host must share one L2 segment.
import type { Backend, BackendContext, BackendDescriptor, BackendNetwork, BackendStats } from './backend';
import type { Logger } from '../log';
import type { Lease, LeaseAttrs } from '../subnet/types';
import { formatCidr } from '../net/ip';
import { linkExists, runBatch } from '../net/iproute';
import { checkPeer, PeerFilter } from './common';
import { commandHooks } from './peer-commands';
import { PeerReconciler, type PeerList } from './reconciler';

interface RouteEntry {
  subnet: string;
  gateway: string;
}

/**
 * Peers whose gateway is not on-link on `dev`, i.e. reaching it needs a gateway of its own (one
 * batched `ip route get` for all the gateways).
 */
async function offLinkPeers(peers: PeerList<RouteEntry>, dev: string): Promise<Map<string, string>> {
  const gateways = [...new Set(peers.map(([, r]) => r.gateway))];
  const lines = gateways.map((g) => `route get ${g} oif ${dev}`);
  const { failed, stdout } = await runBatch('ip', lines, ['-j']);
  // One JSON array per command that succeeded; each names the address it resolved.
  const routes = new Map<string, { gateway?: string; type?: string }>();
  for (const doc of stdout.split('\n')) {
    if (!doc.trim()) continue;
    for (const r of JSON.parse(doc) as Array<{ dst: string; gateway?: string; type?: string }>) routes.set(r.dst, r);
  }
  const why = new Map<string, string>();
  gateways.forEach((g, i) => {
    const r = routes.get(g);
    if (failed.has(i)) why.set(g, `ip ${lines[i]}: ${failed.get(i)}`);
    else if (!r || r.gateway || (r.type !== undefined && r.type !== 'unicast')) {
      why.set(g, `peer ${g} is not on the same L2 network as ${dev} (host-gw requires it)`);
    }
  });
  return new Map(peers.filter(([, r]) => why.has(r.gateway)).map(([key, r]) => [key, why.get(r.gateway)!]));
}

class HostGwNetwork implements BackendNetwork {
  private readonly peers: PeerReconciler<RouteEntry>;

  constructor(
    private readonly dev: string,
    readonly mtu: number,
    filter: PeerFilter<RouteEntry>,
    log: Logger,
  ) {
    this.peers = new PeerReconciler<RouteEntry>('host-gw', filter, commandHooks({
      check: (peers) => offLinkPeers(peers, dev),
      // replace: a stale route to the same subnet (other gateway or device) is overwritten, as flannel does.
      install: (_key, r) => [[{ tool: 'ip', line: `route replace ${r.subnet} via ${r.gateway} dev ${dev}` }]],
      remove: (_key, r) => [[{ tool: 'ip', line: `route del ${r.subnet} via ${r.gateway} dev ${dev}` }]],
      equal: (a, b) => a.gateway === b.gateway,
      describe: (r) => ({ gateway: r.gateway }),
    }, log), log);
  }

  setPeers(peers: Lease[]): Promise<void> {
    return this.peers.setPeers(peers);
  }

  stats(): BackendStats {
    return {
      backend: 'host-gw',
      datapath: 'kernel',
      device: this.dev,
      mtu: this.mtu,
      peerCount: this.peers.installed.size,
      peers: [...this.peers.installed.values()].map((r) => ({ subnet: r.subnet, publicIp: r.gateway, gateway: r.gateway })),
      failedPeers: this.peers.failed,
      skippedPeers: this.peers.skipped,
      // The kernel forwards: no datapath counters of vxnet's own (the underlay device counts everything).
      counters: {},
      drops: {},
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

export const hostGwBackend: BackendDescriptor<'host-gw'> = {
  kind: 'host-gw',
  type: 'host-gw',
  datapath: 'kernel',
  section: { Type: 'host-gw' },
  // flannel's host-gw reads no Backend field of its own.
  validate() {},
  create: (ctx) => new HostGwBackend(ctx),
};
