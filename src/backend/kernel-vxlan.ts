// flannel's "vxlan" backend on the kernel's vxlan device, programmed as flanneld programs it:
// flannel.<VNI> (nolearning), <subnet>.0/32 on it, and per peer a permanent neighbour, an FDB
// entry and an onlink route, so vxnet and flanneld hosts are interchangeable.
import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { Backend, BackendContext, BackendNetwork, Logger } from './backend';
import type { Lease, LeaseAttrs } from '../subnet/types';
import { Cidr, formatCidr, formatIPv4, isIPv4 } from '../net/ip';
import { bridge, ip } from '../net/iproute';
import {
  errorMessage,
  FLANNEL_DEFAULT_PORT,
  FLANNEL_ENCAP_OVERHEAD,
  PeerFilter,
  peerVtepMac,
  Rollback,
  Serial,
  stableVtepMac,
  VxlanBackendData,
  vxlanPort,
  vxlanVni,
} from './common';

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

const samePeer = (a: PeerEntry, b: PeerEntry) => a.gateway === b.gateway && a.publicIp === b.publicIp && a.mac === b.mac;

/** Deletions tolerate entries that are already gone. */
async function bestEffortDelete(log: Logger, what: string, cmd: () => Promise<string>): Promise<void> {
  try {
    await cmd();
  } catch (e) {
    const msg = errorMessage(e);
    if (!/No such|Cannot find|not found|does not exist/i.test(msg)) log.warn(`failed to delete ${what}`, { error: msg });
  }
}

class KernelVxlanNetwork implements BackendNetwork {
  private readonly installed = new Map<string, PeerEntry>();
  private readonly failed = new Set<string>();
  private readonly serial = new Serial();
  private closed = false;

  constructor(
    private readonly dev: string,
    readonly mtu: number,
    private readonly filter: PeerFilter<PeerEntry>,
    private readonly log: Logger,
  ) {}

  setPeers(peers: Lease[]): Promise<void> {
    return this.serial.run(async () => {
      if (this.closed) throw new Error(`kernel-vxlan: setPeers after close`);
      const want = new Map([...this.filter.apply(peers)].map(([k, p]) => [k, p.value]));
      for (const [key, have] of this.installed) {
        const next = want.get(key);
        if (!next || !samePeer(have, next)) await this.removePeer(key, have);
      }
      this.failed.clear();
      for (const [key, entry] of want) {
        if (this.installed.has(key)) continue;
        try {
          await this.addPeer(entry);
          this.installed.set(key, entry);
        } catch (e) {
          this.failed.add(key);
          this.log.error('failed to program vxlan peer', { subnet: key, publicIp: entry.publicIp, error: errorMessage(e) });
        }
      }
    });
  }

  /** flannel's order: neighbour, FDB, then the route (else the kernel would ARP for the gateway). */
  private async addPeer(p: PeerEntry): Promise<void> {
    await ip('neigh', 'replace', p.gateway, 'lladdr', p.mac, 'dev', this.dev, 'nud', 'permanent');
    try {
      await bridge('fdb', 'replace', p.mac, 'dev', this.dev, 'dst', p.publicIp, 'self', 'permanent');
      await ip('route', 'replace', formatCidr(p.subnet), 'via', p.gateway, 'dev', this.dev, 'onlink');
    } catch (e) {
      await bestEffortDelete(this.log, 'fdb entry', () => bridge('fdb', 'del', p.mac, 'dev', this.dev, 'dst', p.publicIp, 'self'));
      await bestEffortDelete(this.log, 'neighbour', () => ip('neigh', 'del', p.gateway, 'dev', this.dev));
      throw e;
    }
  }

  /** Route first so no traffic is steered at a next hop that is being removed. */
  private async removePeer(key: string, p: PeerEntry): Promise<void> {
    const d = this.dev;
    await bestEffortDelete(this.log, `route ${key}`, () => ip('route', 'del', key, 'via', p.gateway, 'dev', d, 'onlink'));
    await bestEffortDelete(this.log, `neighbour ${p.gateway}`, () => ip('neigh', 'del', p.gateway, 'dev', d));
    await bestEffortDelete(this.log, `fdb ${p.mac}`, () => bridge('fdb', 'del', p.mac, 'dev', d, 'dst', p.publicIp, 'self'));
    this.installed.delete(key);
  }

  stats(): Record<string, unknown> {
    return {
      backend: 'vxlan',
      datapath: 'kernel',
      device: this.dev,
      mtu: this.mtu,
      peerCount: this.installed.size,
      peers: [...this.installed.values()].map((p) => ({ subnet: formatCidr(p.subnet), publicIp: p.publicIp, vtepMac: p.mac })),
      failedPeers: [...this.failed],
      skippedPeers: this.filter.skipped,
      ...(this.closed ? {} : deviceCounters(this.dev)),
    };
  }

  close(): Promise<void> {
    return this.serial.run(async () => {
      if (this.closed) return;
      this.closed = true;
      // Routes, neighbours and FDB entries of the device go with it.
      await bestEffortDelete(this.log, `device ${this.dev}`, () => ip('link', 'del', 'dev', this.dev));
      this.installed.clear();
    });
  }
}

/** Kernel counters of `dev` (stats() is synchronous; it is called for status, not per packet). */
export function deviceCounters(dev: string): Record<string, number> {
  try {
    const out = execFileSync('ip', ['-s', '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
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

export class KernelVxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly vni: number;
  readonly port: number;
  readonly device: string;
  readonly vtepMac: string;

  constructor(private readonly ctx: BackendContext) {
    this.vni = vxlanVni(ctx.config);
    this.port = vxlanPort(ctx.config, FLANNEL_DEFAULT_PORT.vxlan);
    this.device = `flannel.${this.vni}`;
    if (this.device.length > 15) throw new Error(`Backend.VNI: device name ${this.device} exceeds 15 characters`);
    // Deterministic, so it is known before the lease is written and survives restarts.
    this.vtepMac = stableVtepMac(ctx.iface, this.vni);
  }

  async leaseAttrs(): Promise<LeaseAttrs> {
    const backendData: VxlanBackendData = { VNI: this.vni, VtepMAC: this.vtepMac };
    return { publicIp: this.ctx.iface.publicIp, backendType: this.type, backendData };
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
      if (l.attrs.backendType !== 'vxlan') return { reason: `backend type ${JSON.stringify(l.attrs.backendType)} is not vxlan` };
      if (!isIPv4(l.attrs.publicIp)) return { reason: `PublicIP invalid: ${JSON.stringify(l.attrs.publicIp)}` };
      const mac = peerVtepMac(l);
      if (typeof mac !== 'string') return mac;
      return { subnet: l.subnet, gateway: formatIPv4(l.subnet.ip), publicIp: l.attrs.publicIp, mac };
    });
    return new KernelVxlanNetwork(spec.name, mtu, filter, log);
  }
}
