// Picks the backend for net-conf.json's Backend section: flannel's Type, plus our Datapath field
// choosing between the userspace datapath and the kernel's own vxlan device.
import type { NetworkConfig } from '../subnet/types';
import type { Backend, BackendContext, BackendFactory } from './backend';
import { UdpBackend } from './udp';
import { VxlanBackend } from './vxlan';
import { KernelVxlanBackend } from './kernel-vxlan';
import { HostGwBackend } from './host-gw';

export type BackendKind = 'udp' | 'vxlan' | 'kernel-vxlan' | 'host-gw';

const FACTORIES: Record<BackendKind, BackendFactory> = {
  udp: (ctx) => new UdpBackend(ctx),
  vxlan: (ctx) => new VxlanBackend(ctx),
  'kernel-vxlan': (ctx) => new KernelVxlanBackend(ctx),
  'host-gw': (ctx) => new HostGwBackend(ctx),
};

/** Which datapaths each flannel Type can run on; the first is the default. */
const DATAPATHS: Record<string, Record<string, BackendKind>> = {
  udp: { userspace: 'udp' },
  vxlan: { userspace: 'vxlan', kernel: 'kernel-vxlan' },
  'host-gw': { kernel: 'host-gw' },
};

export function backendKind(config: NetworkConfig): BackendKind {
  // flanneld looks backend types up case-insensitively.
  const type = String(config.backend.type ?? '').toLowerCase();
  const options = DATAPATHS[type];
  if (!options) {
    throw new Error(`Backend.Type: unsupported backend ${JSON.stringify(config.backend.type)} (expected one of ${Object.keys(DATAPATHS).join(', ')})`);
  }
  const datapath = config.backend.raw.Datapath;
  if (datapath === undefined || datapath === null) return Object.values(options)[0];
  const kind = typeof datapath === 'string' ? options[datapath.toLowerCase()] : undefined;
  if (!kind) {
    throw new Error(
      `Backend.Datapath: ${JSON.stringify(datapath)} is not available for Type ${JSON.stringify(type)} (expected ${Object.keys(options).map((o) => JSON.stringify(o)).join(' or ')})`,
    );
  }
  return kind;
}

export function createBackend(ctx: BackendContext): Backend {
  return FACTORIES[backendKind(ctx.config)](ctx);
}
