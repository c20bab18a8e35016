// flannel's "vxlan" backend in userspace: the native datapath speaks VXLAN on port 8472 with a
// stable VTEP MAC, so flanneld hosts with a kernel flannel.<VNI> device interoperate with it.
import type { Backend, BackendContext, BackendNetwork } from './backend';
import type { Lease, LeaseAttrs } from '../subnet/types';
import type { PeerRoute } from '../datapath';
import { isIPv4 } from '../net/ip';
import { FLANNEL_DEFAULT_PORT, FLANNEL_ENCAP_OVERHEAD, PeerFilter, peerVtepMac, stableVtepMac, VxlanBackendData, vxlanPort, vxlanVni } from './common';
import { startUserspace, USERSPACE_TUN } from './udp';

export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly vni: number;
  readonly port: number;
  readonly vtepMac: string;

  constructor(private readonly ctx: BackendContext) {
    this.vni = vxlanVni(ctx.config);
    this.port = vxlanPort(ctx.config, FLANNEL_DEFAULT_PORT.vxlan);
    this.vtepMac = stableVtepMac(ctx.iface, this.vni);
  }

  async leaseAttrs(): Promise<LeaseAttrs> {
    const backendData: VxlanBackendData = { VNI: this.vni, VtepMAC: this.vtepMac };
    return { publicIp: this.ctx.iface.publicIp, backendType: this.type, backendData };
  }

  async start(lease: Lease): Promise<BackendNetwork> {
    const { config, iface, log } = this.ctx;
    const port = this.port;
    const filter = new PeerFilter<PeerRoute>(log, (l) => {
      // flannel's vxlan network ignores leases of any other backend type.
      if (l.attrs.backendType !== 'vxlan') return { reason: `backend type ${JSON.stringify(l.attrs.backendType)} is not vxlan` };
      if (!isIPv4(l.attrs.publicIp)) return { reason: `PublicIP invalid: ${JSON.stringify(l.attrs.publicIp)}` };
      const mac = peerVtepMac(l);
      return typeof mac === 'string' ? { subnet: l.subnet, publicIp: l.attrs.publicIp, port, vtepMac: mac } : mac;
    });
    return startUserspace(
      'vxlan',
      {
        encap: 'vxlan',
        tunName: USERSPACE_TUN,
        mtu: iface.mtu - FLANNEL_ENCAP_OVERHEAD.vxlan,
        network: config.network,
        localSubnet: lease.subnet,
        port,
        bindAddress: iface.address,
        vni: this.vni,
        vtepMac: this.vtepMac,
      },
      filter,
      log,
    );
  }
}
