// In-memory fakes for the Docker driver's unit tests: a key-value store with revisions and prefix
// watches, the NetworkStore and LeaseRegistry the driver uses over it (same key layout and
// transactions as src/docker/store.ts), a host that records namespaces and veths instead of making
// them, and a datapath that records networks and peers.
import { type Cidr, formatCidr } from '../../src/net/ip';
import { decodeRecord, encodeRecord, type NetworkRecord, type NetworkSpec, type NetworkStore, networkKey, pickVni } from '../../src/docker/store';
import type { DockerDatapath, DockerNetworkDatapath, DockerNetworkSpec } from '../../src/docker/datapath';
import type { NetworkHost } from '../../src/docker/netns';
import { vethNames } from '../../src/docker/netns';
import type { EngineApi, EngineNetwork } from '../../src/docker/engine';
import { encodeLeaseValue, keyToSubnet, leaseKey, subnetsPrefix, configKey } from '../../src/subnet/lease';
import type { LeaseListing, LeaseRecord, LeaseRegistry, LeaseWatch, LeaseWatchEvent, LeaseWatchHandlers, WriteResult } from '../../src/subnet/registry';
import type { LeaseAttrs } from '../../src/subnet/types';
import type { PeerRoute } from '../../src/datapath';

interface Kv {
  value: string;
  create: number;
  mod: number;
}

export class MemKv {
  revision = 1;
  readonly data = new Map<string, Kv>();
  private readonly watchers = new Set<{ prefix: string; fn: (ev: LeaseWatchEvent) => void }>();

  get(key: string): Kv | undefined {
    return this.data.get(key);
  }

  range(prefix: string): Array<[string, Kv]> {
    return [...this.data.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1));
  }

  put(key: string, value: string): number {
    const rev = ++this.revision;
    const old = this.data.get(key);
    this.data.set(key, { value, create: old?.create ?? rev, mod: rev });
    this.emit({ type: 'put', record: this.record(key) as LeaseRecord });
    return rev;
  }

  del(key: string): boolean {
    if (!this.data.has(key)) return false;
    this.data.delete(key);
    const rev = ++this.revision;
    this.emit({ type: 'delete', key, subnet: keyToSubnet(key), revision: rev });
    return true;
  }

  record(key: string): LeaseRecord | undefined {
    const kv = this.data.get(key);
    if (!kv) return undefined;
    return { key, subnet: keyToSubnet(key), value: kv.value, createRevision: kv.create, modRevision: kv.mod, leaseId: '0' };
  }

  watch(prefix: string, fn: (ev: LeaseWatchEvent) => void): () => void {
    const w = { prefix, fn };
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  private emit(ev: LeaseWatchEvent): void {
    const key = ev.type === 'put' ? ev.record.key : ev.key;
    for (const w of [...this.watchers]) if (key.startsWith(w.prefix)) queueMicrotask(() => w.fn(ev));
  }
}

export class MemLeaseRegistry implements LeaseRegistry {
  constructor(
    private readonly kv: MemKv,
    readonly prefix: string,
  ) {}

  async getNetworkConfig(): Promise<string | undefined> {
    return this.kv.get(configKey(this.prefix))?.value;
  }

  async putNetworkConfigIfAbsent(json: string): Promise<boolean> {
    if (this.kv.get(configKey(this.prefix))) return false;
    this.kv.put(configKey(this.prefix), json);
    return true;
  }

  async listLeases(): Promise<LeaseListing> {
    return { records: this.kv.range(subnetsPrefix(this.prefix)).map(([k]) => this.kv.record(k) as LeaseRecord), revision: this.kv.revision };
  }

  async getLease(subnet: Cidr): Promise<LeaseRecord | undefined> {
    return this.kv.record(leaseKey(this.prefix, subnet));
  }

  private write(subnet: Cidr, attrs: LeaseAttrs, ttl: number, expectedMod: number): WriteResult {
    const key = leaseKey(this.prefix, subnet);
    const cur = this.kv.get(key);
    if ((expectedMod === 0 && cur) || (expectedMod !== 0 && cur?.mod !== expectedMod)) return { ok: false, current: this.kv.record(key) };
    const rev = this.kv.put(key, encodeLeaseValue(attrs));
    return { ok: true, grant: { modRevision: rev, leaseId: '1', ttlSeconds: ttl, expiration: new Date(Date.now() + ttl * 1000) } };
  }

  async createLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number): Promise<WriteResult> {
    return this.write(subnet, attrs, ttlSeconds, 0);
  }

  async updateLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number, expectedModRevision: number): Promise<WriteResult> {
    return this.write(subnet, attrs, ttlSeconds, expectedModRevision);
  }

  async deleteLease(subnet: Cidr): Promise<boolean> {
    return this.kv.del(leaseKey(this.prefix, subnet));
  }

  watchLeases(_fromRevision: number, handlers: LeaseWatchHandlers): LeaseWatch {
    const stop = this.kv.watch(subnetsPrefix(this.prefix), (ev) => handlers.onEvents([ev]));
    queueMicrotask(() => handlers.onConnected?.());
    return { cancel: stop };
  }

  close(): void {}
}

/** NetworkStore over MemKv with src/docker/store.ts's layout; every method is atomic (one JS turn). */
export class MemNetworkStore implements NetworkStore {
  constructor(
    readonly kv: MemKv,
    readonly root = '/coreos.com/network/docker',
  ) {}

  private cfg(key: string): string {
    return `${this.root}/networks/${key}/config`;
  }

  async list(): Promise<{ records: NetworkRecord[]; revision: number }> {
    const records = this.kv
      .range(`${this.root}/networks/`)
      .map(([k, v]) => {
        const m = /\/networks\/([^/]+)\/config$/.exec(k);
        return m ? decodeRecord(m[1], v.value, v.mod) : undefined;
      })
      .filter((r): r is NetworkRecord => r !== undefined);
    return { records, revision: this.kv.revision };
  }

  async get(key: string): Promise<NetworkRecord | undefined> {
    const kv = this.kv.get(this.cfg(key));
    return kv ? decodeRecord(key, kv.value, kv.mod) : undefined;
  }

  async ensure(spec: NetworkSpec, reservedVnis: readonly number[]): Promise<{ record: NetworkRecord; created: boolean }> {
    const key = networkKey(spec.network);
    const existing = await this.get(key);
    if (existing) return { record: existing, created: false };
    const taken = new Set(this.kv.range(`${this.root}/vnis/`).map(([k]) => Number(k.slice(`${this.root}/vnis/`.length))));
    const vni = pickVni(taken, reservedVnis);
    const rev = this.kv.put(this.cfg(key), encodeRecord({ ...spec, name: '', vni, deleted: false }));
    this.kv.put(`${this.root}/vnis/${vni}`, key);
    return { record: { key, ...spec, name: '', vni, deleted: false, modRevision: rev }, created: true };
  }

  async bindName(key: string, name: string): Promise<{ ok: true; record: NetworkRecord } | { ok: false; holder: string }> {
    const nameKey = `${this.root}/names/${encodeURIComponent(name)}`;
    const holder = this.kv.get(nameKey)?.value;
    if (holder !== undefined && holder !== key) return { ok: false, holder };
    const cur = await this.get(key);
    if (!cur) throw new Error(`network ${key} is gone`);
    if (cur.name !== '' && cur.name !== name) return { ok: false, holder: `${key} (named ${cur.name})` };
    this.kv.put(nameKey, key);
    const rev = this.kv.put(this.cfg(key), encodeRecord({ ...cur, name }));
    return { ok: true, record: { ...cur, name, modRevision: rev } };
  }

  async setDeleted(key: string, deleted: boolean): Promise<NetworkRecord | undefined> {
    const cur = await this.get(key);
    if (!cur) return undefined;
    const rev = this.kv.put(this.cfg(key), encodeRecord({ ...cur, deleted }));
    return { ...cur, deleted, modRevision: rev };
  }

  async leaseCount(key: string): Promise<number> {
    return this.kv.range(`${this.root}/networks/${key}/subnets/`).length;
  }

  async removeIfUnused(key: string): Promise<boolean> {
    const cur = await this.get(key);
    if (!cur || (await this.leaseCount(key)) > 0) return false;
    this.kv.del(this.cfg(key));
    this.kv.del(`${this.root}/vnis/${cur.vni}`);
    if (cur.name) this.kv.del(`${this.root}/names/${encodeURIComponent(cur.name)}`);
    return true;
  }

  leaseRegistry(key: string): LeaseRegistry {
    return new MemLeaseRegistry(this.kv, `${this.root}/networks/${key}`);
  }

  watch(_fromRevision: number, onChange: () => void): LeaseWatch {
    return { cancel: this.kv.watch(`${this.root}/networks/`, () => onChange()) };
  }
}

/** Records what the driver would do to the host. */
export class FakeHost implements NetworkHost {
  readonly namespaces = new Map<string, { gateway: string; mtu: number }>();
  readonly veths = new Map<string, { key: string; mtu: number }>();

  nsPath(key: string): string {
    return `/fake/netns/${key}`;
  }

  nsExists(key: string): boolean {
    return this.namespaces.has(key);
  }

  async createNetwork(key: string, gatewayCidr: string, mtu: number): Promise<void> {
    this.namespaces.set(key, { gateway: gatewayCidr, mtu });
  }

  async removeNetwork(key: string): Promise<void> {
    this.namespaces.delete(key);
    for (const [n, v] of this.veths) if (v.key === key) this.veths.delete(n);
  }

  async createEndpoint(key: string, endpointId: string, mtu: number): Promise<{ container: string; host: string }> {
    if (!this.namespaces.has(key)) throw new Error(`no namespace ${key}`);
    const names = vethNames(endpointId);
    this.veths.set(names.host, { key, mtu });
    return names;
  }

  async deleteEndpoint(_key: string, endpointId: string): Promise<void> {
    this.veths.delete(vethNames(endpointId).host);
  }

  async listEndpoints(key: string): Promise<string[]> {
    return [...this.veths.entries()].filter(([, v]) => v.key === key).map(([n]) => n);
  }

  listNetworks(): string[] {
    return [...this.namespaces.keys()];
  }
}

export class FakeNetworkDatapath implements DockerNetworkDatapath {
  peers: PeerRoute[] = [];
  closed = false;
  readonly tunName = 'vxtun0';
  constructor(readonly spec: DockerNetworkSpec) {}
  setPeers(routes: PeerRoute[]): void {
    if (this.closed) throw new Error('setPeers after close');
    this.peers = routes;
  }
  stats() {
    return { counters: { txPackets: 0, rxPackets: 0 }, drops: { rx_unknown_vni: 0 }, peers: [] };
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

export class FakeDatapath implements DockerDatapath {
  readonly mtu = 1450;
  readonly port = 8472;
  readonly networks: FakeNetworkDatapath[] = [];
  async addNetwork(spec: DockerNetworkSpec): Promise<DockerNetworkDatapath> {
    if (this.networks.some((n) => !n.closed && n.spec.vni === spec.vni)) throw new Error(`vni ${spec.vni} already served`);
    const n = new FakeNetworkDatapath(spec);
    this.networks.push(n);
    return n;
  }
  open(): FakeNetworkDatapath[] {
    return this.networks.filter((n) => !n.closed);
  }
}

/** dockerd's side of the names: networks by id, as the Engine API answers them. */
export class FakeEngine implements EngineApi {
  readonly networks = new Map<string, EngineNetwork>();
  async getNetwork(id: string): Promise<EngineNetwork | undefined> {
    return this.networks.get(id);
  }
  async listNetworks(driver: string): Promise<EngineNetwork[]> {
    return [...this.networks.values()].filter((n) => n.Driver === driver);
  }
  async createNetwork(spec: { name: string; driver: string; subnet: string }): Promise<string> {
    throw new Error(`FakeEngine cannot create ${spec.name} (${spec.subnet})`);
  }
  async deleteNetwork(id: string): Promise<void> {
    this.networks.delete(id);
  }
  add(id: string, name: string, range: Cidr): void {
    this.networks.set(id, { Id: id, Name: name, Driver: 'vxnet', IPAM: { Driver: 'vxnet', Config: [{ Subnet: formatCidr(range) }] } });
  }
}
