// The backends vxnet has, in one list (flannel's backend registration): the daemon picks one for
// net-conf.json's Backend section (flannel's Type, plus our Datapath field choosing between the
// userspace datapath and the kernel's own vxlan device); the demo, the bench and the chart read the
// same list. A new backend: one module exporting a BackendDescriptor, one line here.
import type { NetworkConfig } from '../subnet/types';
import type { Backend, BackendContext, BackendDescriptor } from './backend';
import { udpBackend } from './udp';
import { vxlanBackend } from './vxlan';
import { kernelVxlanBackend } from './kernel-vxlan';
import { hostGwBackend } from './host-gw';

export const BACKEND_DESCRIPTORS = [udpBackend, vxlanBackend, kernelVxlanBackend, hostGwBackend] as const;

export type BackendKind = (typeof BACKEND_DESCRIPTORS)[number]['kind'];
export const BACKEND_KINDS: readonly BackendKind[] = BACKEND_DESCRIPTORS.map((d) => d.kind);

export function descriptorOf(kind: BackendKind): BackendDescriptor<BackendKind> {
  return BACKEND_DESCRIPTORS.find((d) => d.kind === kind) as BackendDescriptor<BackendKind>;
}

/** The descriptor net-conf.json's Backend section selects (Type and Datapath, case-insensitive, as flanneld). */
export function backendDescriptor(config: NetworkConfig): BackendDescriptor<BackendKind> {
  const type = String(config.backend.type ?? '').toLowerCase();
  const options = BACKEND_DESCRIPTORS.filter((d) => d.type === type);
  if (options.length === 0) {
    const types = [...new Set(BACKEND_DESCRIPTORS.map((d) => d.type))];
    throw new Error(`Backend.Type: unsupported backend ${JSON.stringify(config.backend.type)} (expected one of ${types.join(', ')})`);
  }
  const datapath = config.backend.raw.Datapath;
  if (datapath === undefined || datapath === null) return options[0];
  const d = typeof datapath === 'string' ? options.find((o) => o.datapath === datapath.toLowerCase()) : undefined;
  if (!d) {
    throw new Error(
      `Backend.Datapath: ${JSON.stringify(datapath)} is not available for Type ${JSON.stringify(type)} (expected ${options.map((o) => JSON.stringify(o.datapath)).join(' or ')})`,
    );
  }
  return d;
}

export function backendKind(config: NetworkConfig): BackendKind {
  return backendDescriptor(config).kind;
}

/** Checks the whole Backend section (kind and its own fields) without creating anything; returns the kind. */
export function checkBackendConfig(config: NetworkConfig): BackendKind {
  const d = backendDescriptor(config);
  d.validate(config);
  return d.kind;
}

export function createBackend(ctx: BackendContext): Backend {
  return backendDescriptor(ctx.config).create(ctx);
}
