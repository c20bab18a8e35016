// flannel's "vxlan" backend on the kernel's vxlan device, programmed as flanneld programs it:
// flannel.<VNI> (nolearning), <subnet>.0/32 on it, and per peer a permanent neighbour, an FDB
// entry and an onlink route, so vxnet and flanneld hosts are interchangeable.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import type { BackendContext, BackendDescriptor, BackendNetwork, BackendStats } from './backend';
import type { Logger } from '../log';
import type { Lease } from '../subnet/types';
import { Cidr, formatCidr, formatIPv4 } from '../net/ip';
import { ip } from '../net/iproute';
import { bestEffortDelete, FLANNEL_ENCAP_OVERHEAD, PeerFilter, Rollback, VxlanBackendBase, vxlanPeerMac, vxlanPort, vxlanVni } from './common';
import { DEFAULT_PORT } from '../net/wire';
import type { NetworkConfig } from '../subnet/types';
import { commandHooks, type PeerSteps } from './peer-commands';
import { PeerReconciler } from './reconciler';

interface DeviceSpec {
  name: string;
  vni: number;
  local: string;
  lowerDev: string;
  port: number;
  mac: string;
  mtu: number;
}

interface VxlanLinkJson {
  ifname: string;
  address?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number; local?: string; link?: string; port?: number } };
}

/** Why an existing device cannot be reused (flannel compares type, VNI, lower device, local IP and port). */
function incompatibility(link: VxlanLinkJson, want: DeviceSpec): string | undefined {
  const kind = link.linkinfo?.info_kind;
  if (kind !== 'vxlan') return `link type ${kind ?? 'unknown'} vs vxlan`;
  const d = link.linkinfo?.info_data ?? {};
  if (d.id !== want.vni) return `vni ${d.id} vs ${want.vni}`;
  if (d.link !== undefined && d.link !== want.lowerDev) return `vtep interface ${d.link} vs ${want.lowerDev}`;
  if (d.local !== undefined && d.local !== want.local) return `vtep IP ${d.local} vs ${want.local}`;
  if (d.port !== undefined && d.port !== want.port) return `port ${d.port} vs ${want.port}`;
  // Ours only: the MAC is in our lease, so the device must carry exactly that one.
  if (link.address?.toLowerCase() !== want.mac) return `MAC ${link.address} vs ${want.mac}`;
  return undefined;
}

async function showLink(name: string): Promise<VxlanLinkJson | undefined> {
  try {
    return (JSON.parse(await ip('-d', '-j', 'link', 'show', 'dev', name)) as VxlanLinkJson[])[0];
  } catch {
    return undefined;
  }
}

/** Creates (or keeps a compatible) vxlan device, with flannel's delete-and-recreate on mismatch. */
async function ensureDevice(spec: DeviceSpec, log: Logger): Promise<void> {
  const existing = await showLink(spec.name);
  if (existing) {
    const why = incompatibility(existing, spec);
    if (!why) {
      await ip('link', 'set', 'dev', spec.name, 'mtu', String(spec.mtu));
      return;
    }
    log.warn('vxlan device exists with incompatible configuration; recreating', { device: spec.name, incompatible: why });
    await ip('link', 'del', 'dev', spec.name);
  }
  await ip(
    'link', 'add', spec.name, 'address', spec.mac, 'mtu', String(spec.mtu),
    'type', 'vxlan', 'id', String(spec.vni), 'local', spec.local, 'dev', spec.lowerDev,
    'dstport', String(spec.port), 'nolearning',
  );
}

/** Leaves exactly `addr` on the device (flannel's EnsureV4AddressOnLink). */
async function ensureOnlyAddress(dev: string, addr: string): Promise<void> {
  const out = JSON.parse(await ip('-j', '-4', 'addr', 'show', 'dev', dev)) as Array<{
    addr_info?: Array<{ local: string; prefixlen: number }>;
  }>;
  for (const a of out[0]?.addr_info ?? []) {
    const have = `${a.local}/${a.prefixlen}`;
    if (have !== addr) await ip('addr', 'del', have, 'dev', dev);
  }
  await ip('addr', 'replace', addr, 'dev', dev);
}

interface PeerEntry {
  subnet: Cidr;
  gateway: string;
  publicIp: string;
  mac: string;
}

class KernelVxlanNetwork implements BackendNetwork {
  private readonly peers: PeerReconciler<PeerEntry>;

  constructor(
    private readonly dev: string,
    readonly mtu: number,
    filter: PeerFilter<PeerEntry>,
    private readonly log: Logger,
  ) {
    this.peers = new PeerReconciler<PeerEntry>('kernel-vxlan', filter, commandHooks({
      install: (key, p) => this.installSteps(key, p),
      remove: (key, p) => this.removeSteps(key, p),
      equal: (a, b) => a.gateway === b.gateway && a.publicIp === b.publicIp && a.mac === b.mac,
      describe: (p) => ({ publicIp: p.publicIp, vtepMac: p.mac }),
    }, log), log);
  }

  setPeers(peers: Lease[]): Promise<void> {
    return this.peers.setPeers(peers);
  }

  /** flannel's order: neighbour and FDB entry, then the route (else the kernel would ARP for the gateway). */
  private installSteps(key: string, p: PeerEntry): PeerSteps {
    const d = this.dev;
    return [
      [
        { tool: 'ip', line: `neigh replace ${p.gateway} lladdr ${p.mac} dev ${d} nud permanent` },
        { tool: 'bridge', line: `fdb replace ${p.mac} dev ${d} dst ${p.publicIp} self permanent` },
      ],
      [{ tool: 'ip', line: `route replace ${key} via ${p.gateway} dev ${d} onlink` }],
    ];
  }

  /** Route first so no traffic is steered at a next hop that is being removed. */
  private removeSteps(key: string, p: PeerEntry): PeerSteps {
    const d = this.dev;
    return [
      [{ tool: 'ip', line: `route del ${key} via ${p.gateway} dev ${d} onlink` }],
      [
        // `ip neigh` ends a whole batch when the kernel refuses one line, as it does deleting an
        // entry that is gone: setting it first makes the deletion always succeed.
        { tool: 'ip', line: `neigh replace ${p.gateway} lladdr ${p.mac} dev ${d} nud permanent` },
        { tool: 'ip', line: `neigh del ${p.gateway} dev ${d}` },
        { tool: 'bridge', line: `fdb del ${p.mac} dev ${d} dst ${p.publicIp} self` },
      ],
    ];
  }

  /** The device's kernel counters as last read by refreshStats() (stats() never runs a command). */
  private deviceCounters: Record<string, number> = {};
  private refreshing: Promise<void> | undefined;

  async refreshStats(): Promise<void> {
    if (this.peers.closed) return;
    // One `ip` at a time, shared by concurrent callers (status and /metrics at once).
    this.refreshing ??= deviceCounters(this.dev)
      .then((c) => void (this.deviceCounters = c))
      .finally(() => (this.refreshing = undefined));
    await this.refreshing;
  }

  stats(): BackendStats {
    return {
      backend: 'vxlan',
      datapath: 'kernel',
      device: this.dev,
      mtu: this.mtu,
      peerCount: this.peers.installed.size,
      peers: [...this.peers.installed.values()].map((p) => ({ subnet: formatCidr(p.subnet), publicIp: p.publicIp, vtepMac: p.mac })),
      failedPeers: this.peers.failed,
      skippedPeers: this.peers.skipped,
      counters: this.peers.closed ? {} : { ...this.deviceCounters },
      drops: {},
    };
  }

  close(): Promise<void> {
    // Routes, neighbours and FDB entries of the device go with it.
    return this.peers.close(() => bestEffortDelete(this.log, `device ${this.dev}`, () => ip('link', 'del', 'dev', this.dev)));
  }
}

/** Kernel counters of `dev` (empty when the device is gone or `ip` fails). */
export async function deviceCounters(dev: string): Promise<Record<string, number>> {
  try {
    const { stdout: out } = await promisify(execFile)('ip', ['-s', '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
    const s = (JSON.parse(out) as Array<{ stats64?: { rx: Record<string, number>; tx: Record<string, number> } }>)[0]?.stats64;
    if (!s) return {};
    return {
      rxPackets: s.rx.packets, rxBytes: s.rx.bytes, rxDropped: s.rx.dropped, rxErrors: s.rx.errors,
      txPackets: s.tx.packets, txBytes: s.tx.bytes, txDropped: s.tx.dropped, txErrors: s.tx.errors,
    };
  } catch {
    return {};
  }
}

export class KernelVxlanBackend extends VxlanBackendBase {
  readonly device: string;

  constructor(ctx: BackendContext) {
    super(ctx);
    this.device = kernelDevice(this.vni);
  }

  async start(lease: Lease): Promise<BackendNetwork> {
    const { iface, log } = this.ctx;
    const mtu = iface.mtu - FLANNEL_ENCAP_OVERHEAD.vxlan;
    const spec: DeviceSpec = {
      name: this.device,
      vni: this.vni,
      local: iface.address,
      lowerDev: iface.name,
      port: this.port,
      mac: this.vtepMac,
      mtu,
    };
    const rollback = new Rollback();
    try {
      rollback.push(() => ip('link', 'del', 'dev', spec.name));
      await ensureDevice(spec, log);
      // flannel: no router advertisements on the vxlan device.
      await writeFile(`/proc/sys/net/ipv6/conf/${spec.name}/accept_ra`, '0').catch(() => undefined);
      // The lease's network address as /32: a source for host-to-pod traffic, no broadcast routes.
      await ensureOnlyAddress(spec.name, `${formatIPv4(lease.subnet.ip)}/32`);
      await ip('link', 'set', 'dev', spec.name, 'up');
    } catch (e) {
      await rollback.run();
      throw e;
    }
    log.info('vxlan device ready', { device: spec.name, vni: spec.vni, vtepMac: spec.mac, port: spec.port, mtu });
    const filter = new PeerFilter<PeerEntry>(log, (l) => {
      const mac = vxlanPeerMac(l);
      return typeof mac === 'string' ? { subnet: l.subnet, gateway: formatIPv4(l.subnet.ip), publicIp: l.attrs.publicIp, mac } : mac;
    });
    return new KernelVxlanNetwork(spec.name, mtu, filter, log);
  }
}

/** flannel's device name, flannel.<VNI>; it must fit IFNAMSIZ. */
function kernelDevice(vni: number): string {
  const device = `flannel.${vni}`;
  if (device.length > 15) throw new Error(`Backend.VNI: device name ${device} exceeds 15 characters`);
  return device;
}

export const kernelVxlanBackend: BackendDescriptor<'kernel-vxlan'> = {
  kind: 'kernel-vxlan',
  type: 'vxlan',
  datapath: 'kernel',
  section: { Type: 'vxlan', Datapath: 'kernel' },
  validate(config: NetworkConfig) {
    kernelDevice(vxlanVni(config));
    vxlanPort(config, DEFAULT_PORT.vxlan);
  },
  create: (ctx) => new KernelVxlanBackend(ctx),
};
