// Helpers shared by the backends: reading Backend.* fields, the VTEP MAC, peer filtering and
// serialising host changes so overlapping setPeers/close calls never interleave.
import { createHash } from 'node:crypto';
import type { Lease, LeaseAttrs, NetworkConfig } from '../subnet/types';
import type { Backend, BackendContext, BackendNetwork, ExternalInterface } from './backend';
import type { Logger } from '../log';
import { formatCidr, formatMac, isIPv4, MAC_RE } from '../net/ip';
import { DEFAULT_PORT, MAX_VNI } from '../net/wire';

/** flanneld's wire constants, as the backends name them (owned by net/wire.ts). */
export { DEFAULT_PORT as FLANNEL_DEFAULT_PORT, ENCAP_OVERHEAD as FLANNEL_ENCAP_OVERHEAD } from '../net/wire';

/** An optional integer field of the Backend section; errors name `Backend.<field>`. */
export function backendInt(config: NetworkConfig, field: string, fallback: number, min: number, max: number): number {
  const v = config.backend.raw[field];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new Error(`Backend.${field}: must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A boolean Backend key; undefined when absent (the caller's default applies). */
export function backendBool(config: NetworkConfig, field: string): boolean | undefined {
  const v = config.backend.raw[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new Error(`Backend.${field}: must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** Backend.Port for the vxlan kinds: flannel treats 0 (and absence) as the kernel default 8472. */
export function vxlanPort(config: NetworkConfig, fallback: number): number {
  const port = backendInt(config, 'Port', 0, 0, 65535);
  return port === 0 ? fallback : port;
}

/** Backend.VNI (flannel's default is 1; the VXLAN header has 24 bits). */
export function vxlanVni(config: NetworkConfig): number {
  return backendInt(config, 'VNI', 1, 0, MAX_VNI);
}

/**
 * A locally administered unicast MAC derived from the host's addresses and the VNI: a restarted
 * host publishes the same VtepMAC, so the permanent neighbour entries peers hold stay valid.
 */
export function stableVtepMac(iface: ExternalInterface, vni: number): string {
  const digest = createHash('sha256').update(`vxnet-vtep|${iface.publicIp}|${iface.address}|${vni}`).digest();
  const mac = Buffer.from(digest.subarray(0, 6));
  mac[0] = (mac[0] & 0xfe) | 0x02;
  return formatMac(mac);
}

/** flannel's vxlan BackendData: `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`. */
export interface VxlanBackendData {
  VNI: number;
  VtepMAC: string;
}

/** The peer's VtepMAC (lower-cased), or a reason why its BackendData is unusable. */
export function peerVtepMac(lease: Lease): string | { reason: string } {
  const data = lease.attrs.backendData as Partial<VxlanBackendData> | null | undefined;
  if (!data || typeof data !== 'object') return { reason: 'BackendData missing' };
  if (typeof data.VtepMAC !== 'string' || !MAC_RE.test(data.VtepMAC)) {
    return { reason: `BackendData.VtepMAC invalid: ${JSON.stringify(data.VtepMAC)}` };
  }
  return data.VtepMAC.toLowerCase();
}

/** The peer's VtepMAC if it is a vxlan lease with a usable PublicIP and BackendData. */
export function vxlanPeerMac(lease: Lease): string | { reason: string } {
  // flannel's vxlan network ignores leases of any other backend type.
  return checkPeer(lease, ['vxlan']) ?? peerVtepMac(lease);
}

/** The options of flannel's vxlan Backend section both vxlan datapaths read, and what they derive. */
export interface VxlanOptions {
  vni: number;
  port: number;
  vtepMac: string;
}

export function readVxlanOptions(config: NetworkConfig, iface: ExternalInterface): VxlanOptions {
  const vni = vxlanVni(config);
  const port = vxlanPort(config, DEFAULT_PORT.vxlan);
  // Deterministic, so it is known before the lease is written and survives restarts.
  return { vni, port, vtepMac: stableVtepMac(iface, vni) };
}

/** What the userspace and the kernel vxlan backends share: options, BackendType and lease attributes. */
export abstract class VxlanBackendBase implements Backend {
  readonly type = 'vxlan';
  readonly vni: number;
  readonly port: number;
  readonly vtepMac: string;

  constructor(protected readonly ctx: BackendContext) {
    ({ vni: this.vni, port: this.port, vtepMac: this.vtepMac } = readVxlanOptions(ctx.config, ctx.iface));
  }

  async leaseAttrs(): Promise<LeaseAttrs> {
    const backendData: VxlanBackendData = { VNI: this.vni, VtepMAC: this.vtepMac };
    return { publicIp: this.ctx.iface.publicIp, backendType: this.type, backendData };
  }

  abstract start(lease: Lease): Promise<BackendNetwork>;
}

/**
 * Why a lease is no peer of a backend speaking `types` (the first names it in the reason): another
 * backend type or an unusable PublicIP. Undefined when it may be one.
 */
export function checkPeer(lease: Lease, types: readonly string[]): { reason: string } | undefined {
  if (!types.includes(lease.attrs.backendType)) {
    return { reason: `backend type ${JSON.stringify(lease.attrs.backendType)} is not ${types[0]}` };
  }
  if (!isIPv4(lease.attrs.publicIp)) return { reason: `PublicIP invalid: ${JSON.stringify(lease.attrs.publicIp)}` };
  return undefined;
}

export function leaseKey(lease: Lease): string {
  return formatCidr(lease.subnet);
}

/**
 * Keeps the peers `accept` maps to a value, warning once about each peer it rejects (setPeers runs
 * on every lease change; repeating the same warning each time would drown the log).
 */
export class PeerFilter<T> {
  private warned = new Map<string, string>();

  constructor(
    private readonly log: Logger,
    private readonly accept: (lease: Lease) => T | { reason: string },
  ) {}

  apply(peers: Lease[]): Map<string, { lease: Lease; value: T }> {
    const out = new Map<string, { lease: Lease; value: T }>();
    const warned = new Map<string, string>();
    for (const lease of peers) {
      const key = leaseKey(lease);
      const value = this.accept(lease);
      if (isRejection(value)) {
        if (this.warned.get(key) !== value.reason) {
          this.log.warn('ignoring peer lease', { subnet: key, backendType: lease.attrs.backendType, reason: value.reason });
        }
        warned.set(key, value.reason);
      } else if (out.has(key)) {
        this.log.warn('ignoring duplicate peer lease', { subnet: key });
      } else {
        out.set(key, { lease, value });
      }
    }
    this.warned = warned;
    return out;
  }

  get skipped(): string[] {
    return [...this.warned.keys()];
  }
}

function isRejection(v: unknown): v is { reason: string } {
  return typeof v === 'object' && v !== null && typeof (v as { reason?: unknown }).reason === 'string';
}

/** Runs tasks one at a time in call order; a failed task does not block the ones after it. */
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const next = this.tail.then(task, task);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** Undo actions for a start() in progress, run newest first when a later step fails. */
export class Rollback {
  private readonly steps: Array<() => Promise<unknown> | unknown> = [];

  push(step: () => Promise<unknown> | unknown): void {
    this.steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        await step();
      } catch {
        // Best effort: the original failure is what the caller needs to see.
      }
    }
    this.steps.length = 0;
  }
}

/** Deletions tolerate entries that are already gone; other failures are logged, not thrown. */
export async function bestEffortDelete(log: Logger, what: string, cmd: () => Promise<unknown>): Promise<void> {
  try {
    await cmd();
  } catch (e) {
    const msg = errorMessage(e);
    if (!isAbsentError(msg)) log.warn(`failed to delete ${what}`, { error: msg });
  }
}

/** Whether iproute2's complaint about a deletion means the entry (or its device) is already gone. */
export function isAbsentError(msg: string): boolean {
  return /No such|Cannot find|not found|does not exist/i.test(msg);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
