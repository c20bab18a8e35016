// LeaseManager started from a snapshot (etcd down), its reconciliation once etcd answers, and leases
// refused because their PublicIP lies inside the overlay network. A fake in-memory registry stands in for etcd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, parseCidr, type Cidr } from '../../src/net/ip';
import { parseNetworkConfig } from '../../src/subnet/config';
import { encodeLeaseValue, keyToSubnet, leaseKey } from '../../src/subnet/lease';
import { LeaseManager } from '../../src/subnet/manager';
import type { LeaseListing, LeaseRecord, LeaseRegistry, LeaseWatch, LeaseWatchHandlers, WriteResult } from '../../src/subnet/registry';
import type { Lease, LeaseAttrs } from '../../src/subnet/types';

const PREFIX = '/coreos.com/network';
const CONFIG = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}');
const attrs = (ip: string): LeaseAttrs => ({ publicIp: ip, backendType: 'udp' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** etcd in memory: one revision counter, leases by key, watches that get every later change; `down` fails every call. */
class FakeRegistry implements LeaseRegistry {
  readonly prefix = PREFIX;
  down = false;
  revision = 100;
  compactedBelow = 0;
  readonly kv = new Map<string, LeaseRecord>();
  readonly watches: Array<{ from: number; h: LeaseWatchHandlers }> = [];
  readonly writes: string[] = [];

  private check(): void {
    if (this.down) throw new Error('14 UNAVAILABLE: connection refused');
  }
  put(subnet: string, value: string): void {
    const key = `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
    const rev = ++this.revision;
    const rec = { key, subnet: keyToSubnet(key), value, createRevision: this.kv.get(key)?.createRevision ?? rev, modRevision: rev, leaseId: '1' };
    this.kv.set(key, rec);
    if (!this.down) for (const w of this.watches) w.h.onEvents([{ type: 'put', record: rec }]);
  }
  del(subnet: string): void {
    const key = `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
    this.kv.delete(key);
    const rev = ++this.revision;
    if (!this.down) for (const w of this.watches) w.h.onEvents([{ type: 'delete', key, subnet: keyToSubnet(key), revision: rev }]);
  }
  async getNetworkConfig(): Promise<string | undefined> {
    this.check();
    return JSON.stringify({ Network: '10.244.0.0/16' });
  }
  async putNetworkConfigIfAbsent(): Promise<boolean> {
    this.check();
    return false;
  }
  async listLeases(): Promise<LeaseListing> {
    this.check();
    return { records: [...this.kv.values()], revision: this.revision };
  }
  async getLease(subnet: Cidr): Promise<LeaseRecord | undefined> {
    this.check();
    return this.kv.get(leaseKey(PREFIX, subnet));
  }
  async createLease(subnet: Cidr, a: LeaseAttrs, ttl: number): Promise<WriteResult> {
    return this.write(subnet, a, 0, ttl);
  }
  async updateLease(subnet: Cidr, a: LeaseAttrs, ttl: number, expected: number): Promise<WriteResult> {
    return this.write(subnet, a, expected, ttl);
  }
  private async write(subnet: Cidr, a: LeaseAttrs, expected: number, ttl: number): Promise<WriteResult> {
    this.check();
    const key = leaseKey(PREFIX, subnet);
    const cur = this.kv.get(key);
    if ((expected === 0 && cur) || (expected !== 0 && cur?.modRevision !== expected)) return { ok: false, current: cur };
    this.writes.push(`${expected === 0 ? 'create' : 'update'} ${formatCidr(subnet)}`);
    this.put(formatCidr(subnet), encodeLeaseValue(a));
    return { ok: true, grant: { modRevision: this.revision, leaseId: '1', ttlSeconds: ttl, expiration: new Date(Date.now() + ttl * 1000) } };
  }
  async deleteLease(): Promise<boolean> {
    this.check();
    return false;
  }
  watchLeases(fromRevision: number, h: LeaseWatchHandlers): LeaseWatch {
    const w = { from: fromRevision, h };
    this.watches.push(w);
    return { cancel: () => void this.watches.splice(this.watches.indexOf(w), 1) };
  }
  close(): void {}
}

const value = (n: number) => encodeLeaseValue(attrs(`198.18.0.${n}`));
const subnets = (peers: Lease[]) => peers.map((p) => formatCidr(p.subnet)).sort();

async function waitFor(what: string, pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await sleep(10);
  }
}

test('restored from a snapshot with etcd down: our lease and the peers at once; reconciled without re-adding unchanged peers', async () => {
  const reg = new FakeRegistry();
  reg.put('10.244.1.0/24', value(1)); // us
  reg.put('10.244.2.0/24', value(2));
  reg.put('10.244.3.0/24', value(3));
  const first = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { previousSubnet: parseCidr('10.244.1.0/24'), retryInitialMs: 20, retryMaxMs: 50 });
  await first.acquire();
  await first.run(() => undefined);
  const state = first.exportState();
  assert.ok(state);
  await first.stop();

  // etcd goes down; meanwhile 10.244.3.0/24 goes, 10.244.4.0/24 comes (watchers see nothing).
  reg.down = true;
  reg.writes.length = 0;
  reg.del('10.244.3.0/24');
  reg.put('10.244.4.0/24', value(4));

  const calls: string[][] = [];
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { retryInitialMs: 20, retryMaxMs: 50 });
  const lease = m.restore(state, new Date(1_700_000_000_000));
  assert.equal(formatCidr(lease.subnet), '10.244.1.0/24');
  const t0 = Date.now();
  await m.run((peers) => void calls.push(subnets(peers)));
  assert.ok(Date.now() - t0 < 200, 'run() does not wait for etcd');
  assert.deepEqual(calls, [['10.244.2.0/24', '10.244.3.0/24']], 'snapshot peers delivered before etcd answers');
  const st = m.status();
  assert.equal(st.leaseState, 'held');
  assert.equal(st.etcd, 'unreachable');
  assert.equal(st.servingSnapshotFrom?.getTime(), 1_700_000_000_000);
  assert.equal(reg.watches[0]?.from, state.revision + 1, 'watch resumes after the snapshot revision');

  reg.down = false;
  await waitFor('reconciled', () => calls.length >= 2 && m.status().servingSnapshotFrom === undefined);
  assert.deepEqual(calls.at(-1), ['10.244.2.0/24', '10.244.4.0/24'], 'added peer appears, deleted one goes, the unchanged one stays');
  assert.equal(calls.length, 2, 'one new peer set, no tear-down in between');
  await waitFor('own lease renewed on contact', () => m.status().renewals === 1);
  assert.deepEqual(reg.writes, ['update 10.244.1.0/24']);
  assert.equal(m.status().etcd, 'connected');
  await m.stop();
});

test('restored, then our key vanished and etcd is older than the snapshot: re-created with the same subnet, listing trusted', async () => {
  const reg = new FakeRegistry();
  reg.put('10.244.1.0/24', value(1));
  reg.put('10.244.2.0/24', value(2));
  const state = { own: { subnet: parseCidr('10.244.1.0/24'), modRevision: 101, expiration: Date.now() + 60_000 }, records: [...reg.kv.values()], revision: 500 };
  reg.kv.clear();
  reg.put('10.244.5.0/24', value(5)); // a fresh etcd: revision 103 < 500
  let last: string[] = [];
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { retryInitialMs: 20, retryMaxMs: 50 });
  m.restore(state, new Date());
  await m.run((peers) => void (last = subnets(peers)));
  await waitFor('listing trusted', () => last.join() === '10.244.5.0/24');
  await waitFor('own key re-created', () => reg.kv.has(`${PREFIX}/subnets/10.244.1.0-24`));
  assert.ok(reg.watches.every((w) => w.from < 500), 'no watch left waiting for revision 501');
  assert.equal(m.status().leaseState, 'held');
  await m.stop();
});

test('a lease whose PublicIP lies inside the overlay network is refused: not a peer, counted once per version, listed', async () => {
  const reg = new FakeRegistry();
  reg.put('10.244.2.0/24', value(2));
  reg.put('10.244.7.0/24', encodeLeaseValue(attrs('10.244.9.9')));
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { retryInitialMs: 20 });
  await m.acquire();
  let last: string[] = [];
  await m.run((peers) => void (last = subnets(peers)));
  await waitFor('peers', () => last.length === 1);
  assert.deepEqual(last, ['10.244.2.0/24']);
  let st = m.status();
  assert.deepEqual(st.refusedTotal, { public_ip_in_network: 1 });
  assert.equal(st.refused.length, 1);
  assert.equal(st.refused[0].subnet, '10.244.7.0/24');
  assert.equal(st.refused[0].publicIp, '10.244.9.9');
  assert.match(st.refused[0].detail, /inside the overlay network 10\.244\.0\.0\/16/);
  assert.deepEqual(st.rejected, { malformed: 0, overlap: 0, outside: 0 }, 'not a rejection');

  // Another unrelated change does not count it again; a new version does; a fix makes it a peer.
  reg.put('10.244.3.0/24', value(3));
  await waitFor('peer 3', () => last.includes('10.244.3.0/24'));
  assert.deepEqual(m.status().refusedTotal, { public_ip_in_network: 1 });
  reg.put('10.244.7.0/24', encodeLeaseValue(attrs('10.244.9.10')));
  await waitFor('counted again', () => m.status().refusedTotal.public_ip_in_network === 2);
  reg.put('10.244.7.0/24', value(7));
  await waitFor('fixed lease installed', () => last.includes('10.244.7.0/24'));
  st = m.status();
  assert.deepEqual(st.refused, []);
  await m.stop();
});
