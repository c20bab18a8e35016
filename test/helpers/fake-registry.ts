// etcd in memory for the lease manager's unit tests (LeaseRegistry, see src/subnet/registry.ts): one
// revision counter, leases by key, compare-and-swap writes, watches that get every later change.
// `down` fails every call as an unreachable etcd does; `compact()` makes watches fall behind.
import { formatCidr, type Cidr } from '../../src/net/ip';
import { encodeLeaseValue, keyToSubnet, leaseKey } from '../../src/subnet/lease';
import type { LeaseListing, LeaseRecord, LeaseRegistry, LeaseWatch, LeaseWatchHandlers, WriteResult } from '../../src/subnet/registry';
import type { LeaseAttrs } from '../../src/subnet/types';

export const FAKE_PREFIX = '/coreos.com/network';

export class FakeRegistry implements LeaseRegistry {
  readonly prefix = FAKE_PREFIX;
  down = false;
  revision = 100;
  compactedBelow = 0;
  readonly kv = new Map<string, LeaseRecord>();
  readonly watches: Array<{ from: number; h: LeaseWatchHandlers }> = [];
  /** Successful writes, as "create|update SUBNET". */
  readonly writes: string[] = [];
  /** Every call, as "op@Date.now()" (failed ones too): when did the manager call? */
  readonly calls: string[] = [];

  private check(op: string): void {
    this.calls.push(`${op}@${Date.now()}`);
    if (this.down) throw new Error('14 UNAVAILABLE: connection refused');
  }
  put(subnet: string, value: string): void {
    const key = `${FAKE_PREFIX}/subnets/${subnet.replace('/', '-')}`;
    const rev = ++this.revision;
    const rec = { key, subnet: keyToSubnet(key), value, createRevision: this.kv.get(key)?.createRevision ?? rev, modRevision: rev, leaseId: '1' };
    this.kv.set(key, rec);
    if (!this.down) for (const w of [...this.watches]) w.h.onEvents([{ type: 'put', record: rec }]);
  }
  /** A write no watcher sees (it happened while their stream was broken, or before a compaction). */
  putSilently(subnet: string, value: string): void {
    const saved = this.watches.splice(0);
    this.put(subnet, value);
    this.watches.push(...saved);
  }
  del(subnet: string): void {
    const key = `${FAKE_PREFIX}/subnets/${subnet.replace('/', '-')}`;
    this.kv.delete(key);
    const rev = ++this.revision;
    if (!this.down) for (const w of [...this.watches]) w.h.onEvents([{ type: 'delete', key, subnet: keyToSubnet(key), revision: rev }]);
  }
  delSilently(subnet: string): void {
    const saved = this.watches.splice(0);
    this.del(subnet);
    this.watches.push(...saved);
  }
  /** Compacts history up to the current revision: every open watch is told it fell behind, as etcd does. */
  compact(): void {
    this.compactedBelow = this.revision;
    for (const w of this.watches.splice(0)) w.h.onCompacted(this.compactedBelow);
  }
  async getNetworkConfig(): Promise<string | undefined> {
    this.check('getNetworkConfig');
    return JSON.stringify({ Network: '10.244.0.0/16' });
  }
  async putNetworkConfigIfAbsent(): Promise<boolean> {
    this.check('putNetworkConfigIfAbsent');
    return false;
  }
  async listLeases(): Promise<LeaseListing> {
    this.check('list');
    return { records: [...this.kv.values()], revision: this.revision };
  }
  async getLease(subnet: Cidr): Promise<LeaseRecord | undefined> {
    this.check('get');
    return this.kv.get(leaseKey(FAKE_PREFIX, subnet));
  }
  async createLease(subnet: Cidr, a: LeaseAttrs, ttl: number): Promise<WriteResult> {
    return this.write('create', subnet, a, 0, ttl);
  }
  async updateLease(subnet: Cidr, a: LeaseAttrs, ttl: number, expected: number): Promise<WriteResult> {
    return this.write('update', subnet, a, expected, ttl);
  }
  private async write(op: 'create' | 'update', subnet: Cidr, a: LeaseAttrs, expected: number, ttl: number): Promise<WriteResult> {
    this.check(op);
    const key = leaseKey(FAKE_PREFIX, subnet);
    const cur = this.kv.get(key);
    if ((expected === 0 && cur) || (expected !== 0 && cur?.modRevision !== expected)) return { ok: false, current: cur };
    this.writes.push(`${op} ${formatCidr(subnet)}`);
    this.put(formatCidr(subnet), encodeLeaseValue(a));
    return { ok: true, grant: { modRevision: this.revision, leaseId: '1', ttlSeconds: ttl, expiration: new Date(Date.now() + ttl * 1000) } };
  }
  async deleteLease(): Promise<boolean> {
    this.check('delete');
    return false;
  }
  watchLeases(fromRevision: number, h: LeaseWatchHandlers): LeaseWatch {
    const w = { from: fromRevision, h };
    if (fromRevision <= this.compactedBelow) {
      // etcd answers a watch from a compacted revision with the compaction, and no stream.
      queueMicrotask(() => h.onCompacted(this.compactedBelow));
      return { cancel: () => undefined };
    }
    this.watches.push(w);
    return { cancel: () => void (this.watches.includes(w) && this.watches.splice(this.watches.indexOf(w), 1)) };
  }
  close(): void {}
}
