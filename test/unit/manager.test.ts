// The lease manager over an in-memory registry: the peer computation as a pure function, racing
// hosts, watch compaction, etcd outages, and renewal timing on a fake clock. The same behaviour is
// also tested against a real etcd in test/e2e/subnet.test.ts.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, parseCidr } from '../../src/net/ip';
import { parseNetworkConfig } from '../../src/subnet/config';
import { decodeLeaseValue, encodeLeaseValue, keyToSubnet } from '../../src/subnet/lease';
import { LeaseManager } from '../../src/subnet/manager';
import { computePeers } from '../../src/subnet/peers';
import type { LeaseRecord } from '../../src/subnet/registry';
import type { Lease, LeaseAttrs } from '../../src/subnet/types';
import { FAKE_PREFIX, FakeRegistry } from '../helpers/fake-registry';

const CONFIG = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}');
const attrs = (ip: string): LeaseAttrs => ({ publicIp: ip, backendType: 'udp' });
const value = (n: number) => encodeLeaseValue(attrs(`198.18.0.${n}`));
const subnets = (peers: Lease[]) => peers.map((p) => formatCidr(p.subnet)).sort();
const realSleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await realSleep(5);
  }
}

function record(key: string, value: string, createRevision: number, modRevision = createRevision): LeaseRecord {
  return { key: `${FAKE_PREFIX}/subnets/${key}`, subnet: keyToSubnet(`${FAKE_PREFIX}/subnets/${key}`), value, createRevision, modRevision, leaseId: '1' };
}

test('computePeers: each record judged once, in a fixed order of reasons; overlaps lose to the older lease', () => {
  const own = { key: `${FAKE_PREFIX}/subnets/10.244.1.0-24`, subnet: parseCidr('10.244.1.0/24') };
  const recs = [
    record('10.244.1.0-24', value(1), 5), // ours: skipped
    record('10.244.2.0-24', value(2), 20),
    record('10.244.2.0-23', value(3), 10), // older, covers 10.244.2.0/24: wins
    record('10.244.9.0-24', 'not json', 11),
    record('garbage', value(4), 12),
    record('10.245.0.0-24', value(5), 13),
    record('10.244.7.0-24', encodeLeaseValue(attrs('10.244.200.1')), 14),
    record('10.244.1.128-25', value(6), 15), // inside ours
    record('10.244.4.0-24', value(7), 16),
  ];
  const r = computePeers(recs, CONFIG, own, (rec) => decodeLeaseValue(rec.value));
  assert.deepEqual(subnets(r.peers), ['10.244.2.0/23', '10.244.4.0/24']);
  assert.deepEqual(r.peers.map((p) => p.revision), [10, 16], 'in address order, each with its modRevision');
  const why = Object.fromEntries([...r.rejected].map(([k, v]) => [k.slice(FAKE_PREFIX.length + 9), v.reason]));
  assert.deepEqual(why, { '10.244.2.0-24': 'overlap', '10.244.9.0-24': 'malformed', garbage: 'malformed', '10.245.0.0-24': 'outside', '10.244.1.128-25': 'overlap' });
  assert.match(r.rejected.get(`${FAKE_PREFIX}/subnets/10.244.2.0-24`)!.detail, /older lease 10\.244\.2\.0\/23/);
  assert.match(r.rejected.get(`${FAKE_PREFIX}/subnets/10.244.1.128-25`)!.detail, /our lease 10\.244\.1\.0\/24/);
  assert.deepEqual([...r.refused.values()].map((x) => [x.subnet, x.reason, x.mark]), [['10.244.7.0/24', 'public_ip_in_network', 'public_ip_in_network@14']]);

  // Same records in another order: same answer (every host computes the same peers).
  const again = computePeers([...recs].reverse(), CONFIG, own, (rec) => decodeLeaseValue(rec.value));
  assert.deepEqual(subnets(again.peers), subnets(r.peers));
  assert.deepEqual([...again.rejected.keys()].sort(), [...r.rejected.keys()].sort());
  // Without a lease of our own nothing is skipped as ours, and ties in createRevision go by key.
  const tie = computePeers([record('10.244.8.0-24', value(1), 30), record('10.244.8.0-23', value(2), 30)], CONFIG, undefined, (rec) => decodeLeaseValue(rec.value));
  assert.deepEqual(subnets(tie.peers), ['10.244.8.0/23']);
});

test('racing hosts that all pick the same subnet end up with distinct ones (compare-and-swap), none lost', async () => {
  const reg = new FakeRegistry();
  const hosts = Array.from({ length: 6 }, (_, i) => new LeaseManager(reg, CONFIG, attrs(`198.18.0.${i + 1}`), { random: () => 0, retryInitialMs: 5 }));
  const leases = await Promise.all(hosts.map((m) => m.acquire()));
  const got = leases.map((l) => formatCidr(l.subnet));
  assert.equal(new Set(got).size, hosts.length, `distinct subnets: ${got.join(' ')}`);
  assert.equal(reg.kv.size, hosts.length, 'one key per host, no orphan written');
  for (const [i, l] of leases.entries()) {
    const rec = reg.kv.get(`${FAKE_PREFIX}/subnets/${formatCidr(l.subnet).replace('/', '-')}`);
    assert.equal(decodeLeaseValue(rec!.value).ok && (decodeLeaseValue(rec!.value) as { attrs: LeaseAttrs }).attrs.publicIp, `198.18.0.${i + 1}`);
  }
  // A restart with the same PublicIP adopts its existing lease instead of taking another.
  const again = new LeaseManager(reg, CONFIG, attrs('198.18.0.3'), { random: () => 0.5 });
  assert.equal(formatCidr((await again.acquire()).subnet), got[2]);
  assert.equal(reg.kv.size, hosts.length);
  await Promise.all([...hosts, again].map((m) => m.stop()));
});

test('a watch that falls behind a compaction re-lists: changes it missed appear, and the watch resumes after the listing', async () => {
  const reg = new FakeRegistry();
  reg.put('10.244.2.0/24', value(2));
  reg.put('10.244.3.0/24', value(3));
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { retryInitialMs: 5, random: () => 0.9 });
  await m.acquire();
  let last: string[] = [];
  let sets = 0;
  await m.run((p) => void ((last = subnets(p)), sets++));
  assert.deepEqual(last, ['10.244.2.0/24', '10.244.3.0/24']);
  const lists = () => reg.calls.filter((c) => c.startsWith('list@')).length;
  const listsBefore = lists();

  // Missed by the watch: 3 goes, 5 comes. Then history is compacted away.
  reg.delSilently('10.244.3.0/24');
  reg.putSilently('10.244.5.0/24', value(5));
  reg.compact();
  await waitFor('re-listed after compaction', () => last.join() === '10.244.2.0/24,10.244.5.0/24');
  assert.ok(lists() > listsBefore, 'a new listing was taken');
  assert.equal(reg.watches.length, 1, 'exactly one watch again');
  assert.ok(reg.watches[0].from > reg.compactedBelow, 'the new watch starts after the compacted revision');
  // And it works: a change after the compaction arrives through it.
  reg.put('10.244.6.0/24', value(6));
  await waitFor('event through the new watch', () => last.includes('10.244.6.0/24'));
  assert.equal(m.status().etcd, 'connected');
  await m.stop();
});

test('etcd outage: peers kept, status says unreachable, retries back off to the cap, all healed when etcd returns', async () => {
  const reg = new FakeRegistry();
  reg.put('10.244.2.0/24', value(2));
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { retryInitialMs: 10, retryMaxMs: 80, random: () => 0.9, ttlSeconds: 3600 });
  await m.acquire();
  const sets: string[][] = [];
  const etcd: string[] = [];
  m.on('etcd', (s: string) => etcd.push(s));
  await m.run((p) => void sets.push(subnets(p)));
  assert.deepEqual(sets, [['10.244.2.0/24']]);

  // etcd goes away while a change is pending: the next sync fails and is retried with backoff.
  reg.down = true;
  reg.compact(); // the watch breaks; the manager re-lists, which fails
  await waitFor('unreachable', () => m.status().etcd === 'unreachable');
  await realSleep(400);
  const st = m.status();
  assert.match(st.lastError ?? '', /sync: 14 UNAVAILABLE/);
  assert.deepEqual(sets, [['10.244.2.0/24']], 'the peer set is kept as it was: no empty set published');
  assert.deepEqual(etcd, ['unreachable'], 'one transition, not one per failed retry');
  const times = reg.calls.filter((c) => c.startsWith('list@')).slice(1).map((c) => Number(c.split('@')[1]));
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.ok(gaps.length >= 3 && gaps.length <= 10, `retried with backoff, not in a tight loop: gaps ${gaps.join(',')} ms`);
  // Doubling from 10 ms up to the 80 ms cap: the later gaps are near the cap, never far above it.
  assert.ok(gaps.slice(-2).every((g) => g >= 60), `backoff reached the cap: ${gaps.join(',')}`);
  assert.ok(gaps.every((g) => g < 80 * 4), `never far beyond the cap: ${gaps.join(',')}`);

  // Meanwhile the world changed; when etcd returns, the re-list finds it.
  reg.down = false;
  reg.putSilently('10.244.4.0/24', value(4));
  await waitFor('healed', () => sets.at(-1)?.join() === '10.244.2.0/24,10.244.4.0/24');
  assert.equal(m.status().etcd, 'connected');
  assert.deepEqual(etcd, ['unreachable', 'connected']);
  assert.equal(m.status().leaseState, 'held');
  await m.stop();
});

test('renewal timing on a fake clock: at half the TTL (or --subnet-lease-renew-margin), retried with backoff, then on schedule again', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  // Promise callbacks need real turns of the loop: setImmediate is left real.
  const settle = async () => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  };
  const reg = new FakeRegistry();
  const m = new LeaseManager(reg, CONFIG, attrs('198.18.0.1'), { ttlSeconds: 100, retryInitialMs: 1000, retryMaxMs: 4000, random: () => 0.1 });
  await m.acquire();
  await m.run(() => undefined);
  await settle();
  const updates = () => reg.calls.filter((c) => c.startsWith('update@')).map((c) => Number(c.split('@')[1]) - 1_000_000);
  assert.deepEqual(updates(), []);
  t.mock.timers.tick(49_999);
  await settle();
  assert.deepEqual(updates(), [], 'not before half the TTL');
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(updates(), [50_000], 'renewed at half the TTL');
  assert.equal(m.status().renewals, 1);

  // The next renewal is due at 50 s + 50 s; etcd is down then: retries at +1 s, +2 s, +4 s, +4 s (cap).
  reg.down = true;
  t.mock.timers.tick(50_000);
  await settle();
  for (const step of [1000, 2000, 4000, 4000]) {
    t.mock.timers.tick(step);
    await settle();
  }
  assert.deepEqual(updates(), [50_000, 100_000, 101_000, 103_000, 107_000, 111_000]);
  assert.equal(m.status().etcd, 'unreachable');
  assert.equal(m.status().renewals, 1);
  reg.down = false;
  t.mock.timers.tick(4000);
  await settle();
  assert.deepEqual(updates().slice(-1), [115_000], 'renewed at the next retry');
  assert.equal(m.status().renewals, 2);
  assert.equal(m.status().etcd, 'connected');
  // Back on schedule: half a TTL after this successful write.
  t.mock.timers.tick(49_999);
  await settle();
  assert.equal(updates().length, 7);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(updates().slice(-1), [165_000]);
  await m.stop();

  // A renew margin (flanneld --subnet-lease-renew-margin) moves the first renewal: TTL 100 s, margin 10 s → at 90 s.
  const reg2 = new FakeRegistry();
  const m2 = new LeaseManager(reg2, CONFIG, attrs('198.18.0.2'), { ttlSeconds: 100, renewMarginSeconds: 10, random: () => 0.2 });
  const t0 = Date.now();
  await m2.acquire();
  await m2.run(() => undefined);
  await settle();
  t.mock.timers.tick(89_999);
  await settle();
  assert.equal(reg2.calls.filter((c) => c.startsWith('update@')).length, 0);
  t.mock.timers.tick(1);
  await settle();
  assert.deepEqual(reg2.calls.filter((c) => c.startsWith('update@')).map((c) => Number(c.split('@')[1]) - t0), [90_000]);
  await m2.stop();
  mock.timers.reset();
});
