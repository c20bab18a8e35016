// Docker networks in etcd, the same on every host. Under <etcd-prefix>/docker/:
//
//   networks/<key>/config          the network's identity, a flannel net-conf.json plus vxnet's fields:
//                                  {"Network":"10.250.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":4096},
//                                   "Name":"net1","Options":{...},"Deleted":false}
//   networks/<key>/subnets/<sn>    per-host leases, flannel's lease keys and JSON (TTL, renewal: src/subnet/)
//   vnis/<vni>                     -> <key>: one network per VNI, claimed in the transaction creating the network
//   names/<name>                   -> <key>: one network per Docker network name
//
// <key> is the range as flannel writes subnets ("10.250.0.0-16"): dockerd tells the IPAM driver only the
// range when it asks for a pool, so the range is what identifies a network before its name is known.
import { CompareResult, CompareTarget, type Etcd3, Range } from 'etcd3';
import { type Cidr, cidrOverlaps, formatCidr, parseCidr } from '../net/ip';
import { keyToSubnet, subnetToKey } from '../subnet/lease';
import type { EtcdRegistry, LeaseRegistry, LeaseWatch, LeaseWatchHandlers } from '../subnet/registry';
import { MAX_VNI } from '../net/wire';

/** Docker's range of VXLAN IDs for its overlay networks; below it are flannel's (VNI 1 by default). */
export const VNI_MIN = 4096;
export const VNI_MAX = MAX_VNI;

export interface NetworkSpec {
  network: Cidr;
  subnetLen: number;
  /** IPAM options as given at creation (`--ipam-opt`), kept for hosts that create the network later. */
  options: Record<string, string>;
}

export interface NetworkRecord extends NetworkSpec {
  key: string;
  /** The Docker network name; "" until a host learned it from dockerd. */
  name: string;
  vni: number;
  /** Removed with `docker network rm` on a host that syncs networks: the others remove theirs too. */
  deleted: boolean;
  modRevision: number;
}

/** What the driver needs from etcd; EtcdNetworkStore below, an in-memory fake in the unit tests. */
export interface NetworkStore {
  list(): Promise<{ records: NetworkRecord[]; revision: number }>;
  get(key: string): Promise<NetworkRecord | undefined>;
  /**
   * The record of `spec.network`: the existing one (whatever its spec), or a new one with a VNI
   * claimed in the same transaction, never one of `reservedVnis` (the daemon's own flannel VNI).
   */
  ensure(spec: NetworkSpec, reservedVnis: readonly number[]): Promise<{ record: NetworkRecord; created: boolean }>;
  /** Claims `name` for `key` and writes it into the record; the key holding the name if another does. */
  bindName(key: string, name: string): Promise<{ ok: true; record: NetworkRecord } | { ok: false; holder: string }>;
  /** Sets or clears the tombstone; undefined when the record is gone. */
  setDeleted(key: string, deleted: boolean): Promise<NetworkRecord | undefined>;
  /** Deletes record, VNI and name claim in one transaction if no lease is left; true if it did. */
  removeIfUnused(key: string): Promise<boolean>;
  /** Keys of the leases held in a network now. */
  leaseCount(key: string): Promise<number>;
  /** The leases of one network, as the lease manager reads them. */
  leaseRegistry(key: string): LeaseRegistry;
  /** Calls `onChange` after any change under networks/ (records and leases), from `fromRevision`. */
  watch(fromRevision: number, onChange: () => void): LeaseWatch;
}

export const networkKey = (network: Cidr): string => subnetToKey(network);

/** The record JSON as stored (a flannel net-conf.json with vxnet's extra fields). */
export function encodeRecord(r: Omit<NetworkRecord, 'key' | 'modRevision'>): string {
  return JSON.stringify({
    Network: formatCidr(r.network),
    SubnetLen: r.subnetLen,
    Backend: { Type: 'vxlan', VNI: r.vni },
    Name: r.name,
    Options: r.options,
    Deleted: r.deleted,
  });
}

/** Parses a stored record; undefined when it is not one (a hand-written key, another version). */
export function decodeRecord(key: string, text: string, modRevision: number): NetworkRecord | undefined {
  try {
    const d = JSON.parse(text) as Record<string, unknown>;
    const network = parseCidr(String(d.Network), true);
    const backend = d.Backend as { VNI?: unknown } | undefined;
    const vni = Number(backend?.VNI);
    const subnetLen = Number(d.SubnetLen);
    if (!Number.isInteger(vni) || vni < 1 || vni > VNI_MAX || !Number.isInteger(subnetLen) || subnetLen <= network.prefixLen || subnetLen > 30) return undefined;
    if (networkKey(network) !== key) return undefined;
    const options: Record<string, string> = {};
    if (d.Options && typeof d.Options === 'object') for (const [k, v] of Object.entries(d.Options)) options[k] = String(v);
    return { key, network, subnetLen, vni, name: typeof d.Name === 'string' ? d.Name : '', options, deleted: d.Deleted === true, modRevision };
  } catch {
    return undefined;
  }
}

/** The lowest VNI from VNI_MIN that is neither taken nor reserved. */
export function pickVni(taken: ReadonlySet<number>, reserved: readonly number[]): number {
  for (let v = VNI_MIN; v <= VNI_MAX; v++) if (!taken.has(v) && !reserved.includes(v)) return v;
  throw new Error(`no VNI left in ${VNI_MIN}..${VNI_MAX}`);
}

/**
 * A free range of `prefixLen` inside `space` for a network created without `--subnet`: the first
 * that overlaps none of `taken` (every vxnet network, and the daemon's flannel network).
 */
export function pickRange(space: Cidr, prefixLen: number, taken: readonly Cidr[]): Cidr | undefined {
  if (prefixLen < space.prefixLen) return undefined;
  const step = 2 ** (32 - prefixLen);
  const count = 2 ** (prefixLen - space.prefixLen);
  for (let i = 0; i < count; i++) {
    const c = { ip: (space.ip + i * step) >>> 0, prefixLen };
    if (!taken.some((t) => cidrOverlaps(t, c))) return c;
  }
  return undefined;
}

const MAX_TXN_RETRIES = 20;

/** End of the key range of every key starting with `prefix`. */
function prefixEnd(prefix: string): Buffer {
  return Range.prefix(prefix).end;
}

export class EtcdNetworkStore implements NetworkStore {
  readonly root: string;
  private readonly client: Etcd3;

  constructor(private readonly registry: EtcdRegistry) {
    this.root = `${registry.prefix}/docker`;
    this.client = registry.etcd;
  }

  private configKey(key: string): string {
    return `${this.root}/networks/${key}/config`;
  }

  private subnetsPrefix(key: string): string {
    return `${this.root}/networks/${key}/subnets/`;
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new Error(`etcd ${op} failed (${this.registry.endpointList.join(',')}): ${(err as Error).message}`);
    }
  }

  async list(): Promise<{ records: NetworkRecord[]; revision: number }> {
    const prefix = `${this.root}/networks/`;
    const res = await this.call('list docker networks', () => this.client.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix) }));
    const records: NetworkRecord[] = [];
    for (const kv of res.kvs) {
      const k = kv.key.toString();
      const m = /\/networks\/([^/]+)\/config$/.exec(k);
      if (!m) continue;
      const r = decodeRecord(m[1], kv.value.toString(), Number(kv.mod_revision));
      if (r) records.push(r);
    }
    return { records, revision: Number(res.header.revision) };
  }

  async get(key: string): Promise<NetworkRecord | undefined> {
    const res = await this.call('get docker network', () => this.client.kv.range({ key: Buffer.from(this.configKey(key)) }));
    const kv = res.kvs[0];
    return kv ? decodeRecord(key, kv.value.toString(), Number(kv.mod_revision)) : undefined;
  }

  async ensure(spec: NetworkSpec, reservedVnis: readonly number[]): Promise<{ record: NetworkRecord; created: boolean }> {
    const key = networkKey(spec.network);
    const cfgKey = Buffer.from(this.configKey(key));
    for (let attempt = 0; attempt < MAX_TXN_RETRIES; attempt++) {
      const existing = await this.get(key);
      if (existing) return { record: existing, created: false };
      const vniPrefix = `${this.root}/vnis/`;
      const vnis = await this.call('list VNIs', () => this.client.kv.range({ key: Buffer.from(vniPrefix), range_end: prefixEnd(vniPrefix), keys_only: true }));
      const taken = new Set(vnis.kvs.map((kv) => Number(kv.key.toString().slice(vniPrefix.length))));
      const vni = pickVni(taken, reservedVnis);
      const vniKey = Buffer.from(`${vniPrefix}${vni}`);
      const value = encodeRecord({ ...spec, name: '', vni, deleted: false });
      const res = await this.call('create docker network', () =>
        this.client.kv.txn({
          compare: [
            { key: cfgKey, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 },
            { key: vniKey, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 },
          ],
          success: [{ request_put: { key: cfgKey, value: Buffer.from(value) } }, { request_put: { key: vniKey, value: Buffer.from(key) } }],
        }),
      );
      if (res.succeeded) {
        return { record: { key, ...spec, name: '', vni, deleted: false, modRevision: Number(res.header.revision) }, created: true };
      }
      // Another host created this network or took the VNI meanwhile: look again.
    }
    throw new Error(`could not create the network record for ${formatCidr(spec.network)} after ${MAX_TXN_RETRIES} attempts (VNI races)`);
  }

  /** Compare-and-swap of the record; undefined if it is gone. */
  private async update(key: string, change: (r: NetworkRecord) => NetworkRecord, extra?: { compare: Parameters<Etcd3['kv']['txn']>[0]['compare']; success: Parameters<Etcd3['kv']['txn']>[0]['success'] }): Promise<NetworkRecord | 'conflict' | undefined> {
    const cur = await this.get(key);
    if (!cur) return undefined;
    const next = change(cur);
    const cfgKey = Buffer.from(this.configKey(key));
    const res = await this.call('update docker network', () =>
      this.client.kv.txn({
        compare: [{ key: cfgKey, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: cur.modRevision }, ...(extra?.compare ?? [])],
        success: [{ request_put: { key: cfgKey, value: Buffer.from(encodeRecord(next)) } }, ...(extra?.success ?? [])],
      }),
    );
    return res.succeeded ? { ...next, modRevision: Number(res.header.revision) } : 'conflict';
  }

  async bindName(key: string, name: string): Promise<{ ok: true; record: NetworkRecord } | { ok: false; holder: string }> {
    const nameKey = Buffer.from(`${this.root}/names/${encodeURIComponent(name)}`);
    for (let attempt = 0; attempt < MAX_TXN_RETRIES; attempt++) {
      const held = await this.call('get network name', () => this.client.kv.range({ key: nameKey }));
      const holder = held.kvs[0]?.value.toString();
      if (holder !== undefined && holder !== key) return { ok: false, holder };
      const cur = await this.get(key);
      if (!cur) throw new Error(`network ${key} is gone from etcd`);
      if (cur.name === name && holder === key) return { ok: true, record: cur };
      if (cur.name !== '' && cur.name !== name) return { ok: false, holder: `${key} (named ${cur.name})` };
      const nameCompare =
        holder === undefined
          ? { key: nameKey, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }
          : { key: nameKey, target: CompareTarget.Value, result: CompareResult.Equal, value: Buffer.from(key) };
      const r = await this.update(key, (rec) => ({ ...rec, name }), {
        compare: [nameCompare],
        success: [{ request_put: { key: nameKey, value: Buffer.from(key) } }],
      });
      if (r === undefined) throw new Error(`network ${key} is gone from etcd`);
      if (r !== 'conflict') return { ok: true, record: r };
    }
    throw new Error(`could not name network ${key} ${JSON.stringify(name)} after ${MAX_TXN_RETRIES} attempts`);
  }

  async setDeleted(key: string, deleted: boolean): Promise<NetworkRecord | undefined> {
    for (let attempt = 0; attempt < MAX_TXN_RETRIES; attempt++) {
      const r = await this.update(key, (rec) => ({ ...rec, deleted }));
      if (r !== 'conflict') return r;
    }
    throw new Error(`could not update network ${key} after ${MAX_TXN_RETRIES} attempts`);
  }

  async leaseCount(key: string): Promise<number> {
    const p = this.subnetsPrefix(key);
    const res = await this.call('count leases', () => this.client.kv.range({ key: Buffer.from(p), range_end: prefixEnd(p), count_only: true }));
    return Number(res.count);
  }

  async removeIfUnused(key: string): Promise<boolean> {
    const cur = await this.get(key);
    if (!cur) return false;
    const cfgKey = Buffer.from(this.configKey(key));
    const subnets = this.subnetsPrefix(key);
    const vniKey = Buffer.from(`${this.root}/vnis/${cur.vni}`);
    const ops: Parameters<Etcd3['kv']['txn']>[0]['success'] = [
      { request_delete_range: { key: cfgKey } },
      { request_delete_range: { key: vniKey } },
    ];
    if (cur.name !== '') ops.push({ request_delete_range: { key: Buffer.from(`${this.root}/names/${encodeURIComponent(cur.name)}`) } });
    // Atomic: the record is unchanged and no host holds a lease (a range compare with version 0 holds
    // only for an empty range). A host joining meanwhile makes it fail, and the network stays.
    const res = await this.call('remove docker network', () =>
      this.client.kv.txn({
        compare: [
          { key: cfgKey, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: cur.modRevision },
          { key: Buffer.from(subnets), range_end: prefixEnd(subnets), target: CompareTarget.Version, result: CompareResult.Equal, version: 0 },
        ],
        success: ops,
      }),
    );
    return res.succeeded;
  }

  leaseRegistry(key: string): LeaseRegistry {
    return this.registry.withPrefix(`${this.root}/networks/${key}`);
  }

  watch(fromRevision: number, onChange: () => void): LeaseWatch {
    let current: LeaseWatch | undefined;
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    const start = (rev: number) => {
      const handlers: LeaseWatchHandlers = {
        onEvents: () => onChange(),
        onConnected: () => onChange(),
        // That watch is over: list again (the caller re-reads everything anyway) and watch from there.
        onCompacted: () => {
          current?.cancel();
          const relist = () => {
            if (stopped) return;
            this.list().then(
              (l) => {
                if (stopped) return;
                onChange();
                start(l.revision + 1);
              },
              () => (timer = setTimeout(relist, 1000)),
            );
          };
          relist();
        },
      };
      current = this.registry.watchPrefix(`${this.root}/networks/`, rev, handlers);
    };
    start(fromRevision);
    return {
      cancel: () => {
        stopped = true;
        clearTimeout(timer);
        current?.cancel();
      },
    };
  }
}

/** The subnet of a lease key under networks/<key>/subnets/ (for tests and status). */
export { keyToSubnet };
