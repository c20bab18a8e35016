// The subnet control plane against a real etcd on 127.0.0.1: flannel's key layout and JSON, racing
// hosts, restarts, hand-written flanneld leases, rejections, renewals, and etcd outages.
import { test, TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { Etcd3 } from 'etcd3';
import { startEtcd, EtcdServer } from '../../src/testbed/etcd';
import { EtcdRegistry, EtcdRegistryOptions, RegistryError } from '../../src/subnet/registry';
import { LeaseManager, LeaseManagerOptions } from '../../src/subnet/manager';
import { parseNetworkConfig } from '../../src/subnet/config';
import { encodeLeaseValue, leaseKey } from '../../src/subnet/lease';
import { Cidr, cidrCovers, cidrEquals, cidrOverlaps, formatCidr, parseCidr } from '../../src/net/ip';
import type { Lease, LeaseAttrs } from '../../src/subnet/types';

const PREFIX = '/coreos.com/network';
const CONFIG = parseNetworkConfig('{"Network":"10.50.0.0/16","Backend":{"Type":"vxlan","VNI":1}}');
// Verbatim shape of a flanneld vxlan lease.
const FLANNELD_VALUE = '{"PublicIP":"198.18.9.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';

function attrsFor(n: number): LeaseAttrs {
  const hex = n.toString(16).padStart(2, '0');
  return { publicIp: `198.18.0.${n}`, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: `02:00:00:00:00:${hex}` } };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  assert.fail(`timed out after ${timeoutMs} ms waiting for: ${what}`);
}

interface Bed {
  etcd: EtcdServer;
  /** Plain etcd3 client playing "another flanneld" / an operator with etcdctl. */
  raw: Etcd3;
  registry(opts?: Partial<EtcdRegistryOptions>): EtcdRegistry;
  manager(n: number, opts?: LeaseManagerOptions, reg?: EtcdRegistry): LeaseManager;
}

/** A fresh etcd plus helpers; everything is torn down by t.after, even when the test fails. */
async function bed(t: TestContext): Promise<Bed> {
  const etcd = await startEtcd({ host: '127.0.0.1' });
  const registries: EtcdRegistry[] = [];
  const managers: LeaseManager[] = [];
  const raw = new Etcd3({ hosts: etcd.endpoint });
  t.after(async () => {
    for (const m of managers) await m.stop();
    for (const r of registries) r.close();
    raw.close();
    await etcd.stop();
  });
  const registry = (opts: Partial<EtcdRegistryOptions> = {}) => {
    const r = new EtcdRegistry({ endpoints: [etcd.endpoint], dialTimeoutMs: 2000, ...opts });
    registries.push(r);
    return r;
  };
  const manager = (n: number, opts: LeaseManagerOptions = {}, reg?: EtcdRegistry) => {
    const m = new LeaseManager(reg ?? registry(), CONFIG, attrsFor(n), { retryMaxMs: 1000, ...opts });
    managers.push(m);
    return m;
  };
  return { etcd, raw, registry, manager };
}

/** Records every peer set handed to onPeers. */
function peerLog() {
  const calls: Lease[][] = [];
  return {
    calls,
    onPeers: (peers: Lease[]) => void calls.push(peers),
    last: () => calls[calls.length - 1] ?? [],
    has: (cidr: string) => (calls[calls.length - 1] ?? []).some((p) => formatCidr(p.subnet) === cidr),
  };
}

async function putWithLease(raw: Etcd3, key: string, value: string, ttl = 60): Promise<void> {
  const grant = await raw.leaseClient.leaseGrant({ TTL: ttl });
  await raw.kv.put({ key: Buffer.from(key), value: Buffer.from(value), lease: grant.ID });
}

test('acquire writes a flannel-format lease with an etcd TTL', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1, { ttlSeconds: 120 });
  const lease = await m.acquire();
  assert.equal(lease.subnet.prefixLen, 24);
  assert.ok(lease.subnet.ip >= CONFIG.subnetMin && lease.subnet.ip <= CONFIG.subnetMax, formatCidr(lease.subnet));
  const key = leaseKey(PREFIX, lease.subnet);
  assert.match(key, /^\/coreos\.com\/network\/subnets\/10\.50\.\d+\.0-24$/);
  const res = await b.raw.kv.range({ key: Buffer.from(key) });
  assert.equal(res.kvs.length, 1);
  assert.equal(
    res.kvs[0].value.toString(),
    '{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}',
  );
  const ttl = await b.raw.leaseClient.leaseTimeToLive({ ID: res.kvs[0].lease, keys: true });
  assert.equal(Number(ttl.grantedTTL), 120);
  assert.ok(Number(ttl.TTL) > 100);
  assert.deepEqual(ttl.keys.map(String), [key]);
  assert.equal(m.status().leaseState, 'held');
  assert.equal(m.status().etcd, 'connected');
});

test('managers racing in pairs never share a subnet', { timeout: 120000 }, async (t) => {
  const b = await bed(t);
  // 15 leasable /28s, so later rounds must squeeze into the remaining holes.
  const small = parseNetworkConfig('{"Network":"10.60.0.0/24","SubnetLen":28,"Backend":{"Type":"udp"}}');
  const won = new Map<string, string>();
  for (let round = 0; round < 7; round++) {
    const ips = [2 * round + 10, 2 * round + 11];
    // Odd rounds use the same "random" stream in both so they provably pick the same subnet first.
    const seed = round % 2 === 1 ? () => 0.5 : undefined;
    const pair = ips.map((n) => {
      const m = new LeaseManager(b.registry(), small, attrsFor(n), seed ? { random: seed } : {});
      t.after(() => m.stop());
      return m;
    });
    const leases = await Promise.all(pair.map((m) => m.acquire()));
    assert.ok(!cidrEquals(leases[0].subnet, leases[1].subnet), `round ${round}: both got ${formatCidr(leases[0].subnet)}`);
    leases.forEach((l, i) => {
      const s = formatCidr(l.subnet);
      assert.ok(!won.has(s), `round ${round}: ${s} handed out twice`);
      won.set(s, `198.18.0.${ips[i]}`);
    });
  }
  const listing = await b.registry().listLeases();
  assert.equal(listing.records.length, 14);
  for (const rec of listing.records) {
    const owner = won.get(formatCidr(rec.subnet as Cidr));
    assert.ok(owner, `unexpected key ${rec.key}`);
    assert.equal(JSON.parse(rec.value).PublicIP, owner, `${rec.key} is held by its winner`);
  }
  // One subnet is left; a fifteenth and a sixteenth host race for it: exactly one must fail.
  const last = [40, 41].map((n) => new LeaseManager(b.registry(), small, attrsFor(n), {}));
  t.after(() => Promise.all(last.map((m) => m.stop())));
  const outcomes = await Promise.allSettled(last.map((m) => m.acquire()));
  assert.deepEqual(outcomes.map((o) => o.status).sort(), ['fulfilled', 'rejected']);
  const rejected = outcomes.find((o) => o.status === 'rejected') as PromiseRejectedResult;
  assert.match(String(rejected.reason), /no free subnet/);
});

test('a restart reuses the previous subnet; stop() keeps the lease', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const first = b.manager(1);
  const lease = await first.acquire();
  await first.run(() => undefined);
  await first.stop();
  const stillThere = await b.raw.kv.range({ key: Buffer.from(leaseKey(PREFIX, lease.subnet)) });
  assert.equal(stillThere.kvs.length, 1, 'stop() must not delete the lease');

  const again = b.manager(1, { previousSubnet: lease.subnet });
  assert.equal(formatCidr((await again.acquire()).subnet), formatCidr(lease.subnet));
  // Without a subnet file the lease is found by our PublicIP.
  const byIp = b.manager(1);
  assert.equal(formatCidr((await byIp.acquire()).subnet), formatCidr(lease.subnet));
  // A previous subnet now held by another host is not taken over.
  const other = b.manager(2, { previousSubnet: lease.subnet });
  const otherLease = await other.acquire();
  assert.ok(!cidrEquals(otherLease.subnet, lease.subnet));
  // A free previous subnet is reused even by a host without an existing lease (one that neither
  // lease above took: they are picked at random, so in about one run in a hundred one of them
  // already held 10.50.200.0/24).
  const wanted = ['10.50.200.0/24', '10.50.201.0/24', '10.50.202.0/24'].map((c) => parseCidr(c)).find((c) => !cidrEquals(c, lease.subnet) && !cidrEquals(c, otherLease.subnet))!;
  const fresh = b.manager(3, { previousSubnet: wanted });
  assert.equal(formatCidr((await fresh.acquire()).subnet), formatCidr(wanted));
});

test('hand-written flanneld leases appear in onPeers and deletions remove them', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1);
  const own = await m.acquire();
  const log = peerLog();
  await m.run(log.onPeers);
  await waitFor('initial (empty) peer set', () => log.calls.length === 1);
  assert.deepEqual(log.last(), []);

  const peerKey = `${PREFIX}/subnets/10.50.77.0-24`;
  await putWithLease(b.raw, peerKey, FLANNELD_VALUE);
  await waitFor('flanneld lease in peers', () => log.has('10.50.77.0/24'));
  const peer = log.last().find((p) => formatCidr(p.subnet) === '10.50.77.0/24') as Lease;
  assert.deepEqual(peer.attrs, { publicIp: '198.18.9.9', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } });
  assert.ok(!log.last().some((p) => cidrEquals(p.subnet, own.subnet)), 'our own lease is never a peer');

  // A second vxnet host shows up too.
  const other = b.manager(2);
  const otherLease = await other.acquire();
  await waitFor('second host in peers', () => log.has(formatCidr(otherLease.subnet)));
  assert.equal(m.status().peers, 2);

  await b.raw.kv.deleteRange({ key: Buffer.from(peerKey) });
  await waitFor('deleted lease gone from peers', () => !log.has('10.50.77.0/24'));
  assert.equal(log.last().length, 1);
  assert.equal(m.status().peers, 1);
});

test('malformed, overlapping and outside leases are rejected and counted', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1, { previousSubnet: parseCidr('10.50.10.0/24') });
  await m.acquire();
  const log = peerLog();
  await m.run(log.onPeers);
  const put = (k: string, v: string) => putWithLease(b.raw, `${PREFIX}/subnets/${k}`, v);
  await put('10.50.77.0-24', FLANNELD_VALUE);
  await put('10.50.78.0-24', '{"PublicIP":"198.18.9.10","BackendType":"vxlan"}'); // vxlan without VtepMAC
  await put('10.50.79.0-24', 'garbage');
  await put('not-a-subnet', FLANNELD_VALUE);
  await put('10.99.0.0-24', encodeLeaseValue(attrsFor(20))); // outside 10.50.0.0/16
  await put('10.50.77.128-25', encodeLeaseValue(attrsFor(21))); // overlaps the older 10.50.77.0/24
  await put('10.50.10.0-25', encodeLeaseValue(attrsFor(22))); // overlaps our own lease
  await put('10.50.90.0-24', encodeLeaseValue(attrsFor(23))); // fine
  await waitFor('rejections counted', () => {
    const r = m.status().rejected;
    return r.malformed === 3 && r.outside === 1 && r.overlap === 2;
  });
  await waitFor('valid peers only', () => log.has('10.50.90.0/24'));
  assert.deepEqual(log.last().map((p) => formatCidr(p.subnet)), ['10.50.77.0/24', '10.50.90.0/24']);

  // A later re-list must not count the same bad versions again.
  await b.raw.kv.deleteRange({ key: Buffer.from(`${PREFIX}/subnets/10.50.90.0-24`) });
  await waitFor('peer removed', () => !log.has('10.50.90.0/24'));
  assert.deepEqual(m.status().rejected, { malformed: 3, overlap: 2, outside: 1 });
  // Once the older lease goes, the overlapping /25 is no longer in conflict.
  await b.raw.kv.deleteRange({ key: Buffer.from(`${PREFIX}/subnets/10.50.77.0-24`) });
  await waitFor('former overlap accepted', () => log.has('10.50.77.128/25'));
});

test('a short TTL is renewed before it expires', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1, { ttlSeconds: 4 });
  const lease = await m.acquire();
  await m.run(() => undefined);
  const key = Buffer.from(leaseKey(PREFIX, lease.subnet));
  const before = (await b.raw.kv.range({ key })).kvs[0];
  await sleep(10000); // 2.5 TTLs
  const after = (await b.raw.kv.range({ key })).kvs;
  assert.equal(after.length, 1, 'lease expired instead of being renewed');
  assert.equal(after[0].value.toString(), before.value.toString());
  assert.notEqual(after[0].lease, before.lease, 'renewal re-attaches to a fresh etcd lease');
  assert.ok(m.status().renewals >= 3, `renewals: ${m.status().renewals}`);
  const ttl = await b.raw.leaseClient.leaseTimeToLive({ ID: after[0].lease });
  assert.ok(Number(ttl.TTL) > 0);
});

test('our lease is re-created with the same subnet when someone deletes it', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1, { ttlSeconds: 4 });
  const lease = await m.acquire();
  await m.run(() => undefined);
  const key = Buffer.from(leaseKey(PREFIX, lease.subnet));
  await b.raw.kv.deleteRange({ key });
  await waitFor('lease re-created', async () => (await b.raw.kv.range({ key })).kvs.length === 1);
  const value = (await b.raw.kv.range({ key })).kvs[0].value.toString();
  assert.equal(value, encodeLeaseValue(attrsFor(1)));
  assert.equal(m.status().leaseState, 'held');

  // If another host overwrites it we report the loss and our renewals never overwrite it back.
  let lost = false;
  m.on('lost', () => (lost = true));
  await b.raw.kv.put({ key, value: Buffer.from(FLANNELD_VALUE) });
  await waitFor('loss reported', () => lost && m.status().leaseState === 'lost');
  await sleep(3000); // past the next renewal (TTL 4 s)
  assert.equal((await b.raw.kv.range({ key })).kvs[0].value.toString(), FLANNELD_VALUE, 'never overwrites another host');
  assert.equal(m.status().leaseState, 'lost');
});

test('putNetworkConfigIfAbsent never overwrites', { timeout: 30000 }, async (t) => {
  const b = await bed(t);
  const r = b.registry();
  assert.equal(await r.getNetworkConfig(), undefined);
  assert.equal(await r.putNetworkConfigIfAbsent('{"Network":"10.50.0.0/16"}'), true);
  assert.equal(await r.putNetworkConfigIfAbsent('{"Network":"10.99.0.0/16"}'), false);
  assert.equal(await r.getNetworkConfig(), '{"Network":"10.50.0.0/16"}');
  const rawValue = await b.raw.get(`${PREFIX}/config`).string();
  assert.equal(rawValue, '{"Network":"10.50.0.0/16"}');
  // A custom prefix is honoured and independent.
  const custom = b.registry({ prefix: '/vxnet/test/' });
  assert.equal(await custom.getNetworkConfig(), undefined);
  assert.equal(await custom.putNetworkConfigIfAbsent('{"Network":"10.7.0.0/16"}'), true);
  assert.equal(await b.raw.get('/vxnet/test/config').string(), '{"Network":"10.7.0.0/16"}');
});

test('a watch from a compacted revision reports compaction', { timeout: 30000 }, async (t) => {
  const b = await bed(t);
  const r = b.registry();
  const attrs = attrsFor(1);
  await r.createLease(parseCidr('10.50.1.0/24'), attrs, 60);
  const w = await r.createLease(parseCidr('10.50.2.0/24'), attrs, 60);
  assert.ok(w.ok);
  await b.raw.kv.compact({ revision: w.grant.modRevision, physical: true });
  let compacted = 0;
  const watch = r.watchLeases(2, { onEvents: () => assert.fail('no events expected'), onCompacted: (rev) => (compacted = rev) });
  t.after(() => watch.cancel());
  await waitFor('compaction reported', () => compacted > 0);
  assert.equal(compacted, w.grant.modRevision);
  // From the listing's revision the watch works and delivers new changes.
  const listing = await r.listLeases();
  const seen: string[] = [];
  const live = r.watchLeases(listing.revision + 1, { onEvents: (evs) => evs.forEach((e) => seen.push(e.type)), onCompacted: () => assert.fail('not compacted') });
  t.after(() => live.cancel());
  await r.deleteLease(parseCidr('10.50.1.0/24'));
  await waitFor('delete event', () => seen.includes('delete'));
});

test('the manager re-lists and re-watches when its watch start revision was compacted', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  // Stands in for a manager whose listing went stale: its first watch starts at a compacted revision.
  class StaleFirstWatch extends EtcdRegistry {
    starts: number[] = [];
    override watchLeases(fromRevision: number, handlers: Parameters<EtcdRegistry['watchLeases']>[1]) {
      this.starts.push(fromRevision);
      return super.watchLeases(this.starts.length === 1 ? 2 : fromRevision, handlers);
    }
  }
  const reg = new StaleFirstWatch({ endpoints: [b.etcd.endpoint], dialTimeoutMs: 2000 });
  t.after(() => reg.close());
  await putWithLease(b.raw, `${PREFIX}/subnets/10.50.77.0-24`, FLANNELD_VALUE);
  const put = await b.raw.kv.put({ key: Buffer.from(`${PREFIX}/subnets/10.50.78.0-24`), value: Buffer.from(encodeLeaseValue(attrsFor(9))) });
  await b.raw.kv.compact({ revision: put.header.revision, physical: true });
  const warnings: string[] = [];
  const m = b.manager(1, { log: { info() {}, warn: (msg) => void warnings.push(msg), error() {} } }, reg);
  await m.acquire();
  const log = peerLog();
  await m.run(log.onPeers);
  await waitFor('second watch after compaction', () => reg.starts.length === 2);
  assert.ok(warnings.some((w) => /compaction/.test(w)), warnings.join('; '));
  assert.ok(reg.starts[1] > Number(put.header.revision));
  await putWithLease(b.raw, `${PREFIX}/subnets/10.50.79.0-24`, encodeLeaseValue(attrsFor(10)));
  await waitFor('all peers seen through the new watch', () => ['10.50.77.0/24', '10.50.78.0/24', '10.50.79.0/24'].every((c) => log.has(c)));
});

test('etcd outage: status goes unreachable, peers are kept, and it reconnects after restart', { timeout: 90000 }, async (t) => {
  const b = await bed(t);
  const m = b.manager(1, { ttlSeconds: 30 });
  await m.acquire();
  const log = peerLog();
  await m.run(log.onPeers);
  await putWithLease(b.raw, `${PREFIX}/subnets/10.50.77.0-24`, FLANNELD_VALUE, 300);
  await waitFor('peer present', () => log.has('10.50.77.0/24'));
  const callsBefore = log.calls.length;

  b.etcd.kill9();
  await waitFor('status unreachable', () => m.status().etcd === 'unreachable');
  const st = m.status();
  assert.ok(st.lastError && st.lastError.length > 0);
  assert.ok(st.lastContact instanceof Date);
  await sleep(2000);
  assert.equal(log.calls.length, callsBefore, 'no peer set may be emitted while etcd is down');
  assert.equal(m.status().peers, 1);
  assert.ok(log.has('10.50.77.0/24'));

  await b.etcd.restart();
  await waitFor('status connected again', () => m.status().etcd === 'connected', 30000);
  // Changes made after the restart flow through again.
  await putWithLease(b.raw, `${PREFIX}/subnets/10.50.88.0-24`, encodeLeaseValue(attrsFor(30)));
  await waitFor('new peer after restart', () => log.has('10.50.88.0/24') && log.has('10.50.77.0/24'), 30000);
  assert.equal(m.status().leaseState, 'held');
});

test('an unreachable etcd fails calls within the deadline and acquire keeps retrying', { timeout: 60000 }, async (t) => {
  // A TCP listener that never speaks HTTP/2: the worst case, a connection that just hangs.
  const sockets = new Set<net.Socket>();
  const silent = net.createServer((s) => sockets.add(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.after(() => {
    sockets.forEach((s) => s.destroy());
    silent.close();
  });
  const port = (silent.address() as net.AddressInfo).port;
  const hanging = new EtcdRegistry({ endpoints: [`http://127.0.0.1:${port}`], dialTimeoutMs: 1000 });
  t.after(() => hanging.close());
  const t0 = Date.now();
  await assert.rejects(hanging.listLeases(), (err: unknown) => err instanceof RegistryError && /list leases/.test(err.message));
  assert.ok(Date.now() - t0 < 10000, 'call must not hang past its deadline');

  const m = new LeaseManager(hanging, CONFIG, attrsFor(1), { retryMaxMs: 500 });
  const acquiring = m.acquire();
  await waitFor('unreachable status', () => m.status().etcd === 'unreachable' && m.status().lastError !== undefined);
  await m.stop();
  await assert.rejects(acquiring, /stopped/);
  assert.equal(m.status().leaseState, 'none');
});

test('leases are disjoint and inside the network after a crowd acquires at once', { timeout: 60000 }, async (t) => {
  const b = await bed(t);
  const crowd = Array.from({ length: 8 }, (_, i) => b.manager(100 + i, { random: () => 0.25 }));
  const leases = await Promise.all(crowd.map((m) => m.acquire()));
  for (let i = 0; i < leases.length; i++) {
    assert.ok(cidrCovers(CONFIG.network, leases[i].subnet));
    for (let j = i + 1; j < leases.length; j++) assert.ok(!cidrOverlaps(leases[i].subnet, leases[j].subnet), `${i} and ${j} overlap`);
  }
});
