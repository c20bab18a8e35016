// flannel's "vxlan" backend in userspace: the native datapath speaks VXLAN on port 8472 with a
// stable VTEP MAC, so flanneld hosts with a kernel flannel.<VNI> device interoperate with it.
import type { BackendDescriptor, BackendNetwork } from './backend';
import type { Lease } from '../subnet/types';
import type { PeerRoute } from '../datapath';
import { PeerFilter, VxlanBackendBase, vxlanPeerMac, vxlanPort, vxlanVni } from './common';
import { DEFAULT_PORT } from '../net/wire';
import { startUserspace, userspaceConfig, userspaceCpuLocal, userspaceWorkers } from './udp';

export class VxlanBackend extends VxlanBackendBase {
  async start(lease: Lease): Promise<BackendNetwork> {
    const { log } = this.ctx;
    const port = this.port;
    const filter = new PeerFilter<PeerRoute>(log, (l) => {
      const mac = vxlanPeerMac(l);
      return typeof mac === 'string' ? { subnet: l.subnet, publicIp: l.attrs.publicIp, port, vtepMac: mac } : mac;
    });
    const cfg = { ...userspaceConfig('vxlan', this.ctx, lease, port), vni: this.vni, vtepMac: this.vtepMac };
    return startUserspace('vxlan', cfg, filter, log);
  }
}

export const vxlanBackend: BackendDescriptor<'vxlan'> = {
  kind: 'vxlan',
  type: 'vxlan',
  datapath: 'userspace',
  section: { Type: 'vxlan', Datapath: 'userspace' },
  validate(config) {
    vxlanVni(config);
    vxlanPort(config, DEFAULT_PORT.vxlan);
    userspaceWorkers(config);
    userspaceCpuLocal(config);
  },
  create: (ctx) => new VxlanBackend(ctx),
};
