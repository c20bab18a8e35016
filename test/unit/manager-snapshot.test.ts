// LeaseManager started from a snapshot (etcd down), its reconciliation once etcd answers, and leases
// refused because their PublicIP lies inside the overlay network. A fake in-memory registry stands in for etcd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatCidr, parseCidr } from '../../src/net/ip';
import { parseNetworkConfig } from '../../src/subnet/config';
import { encodeLeaseValue } from '../../src/subnet/lease';
import { LeaseManager } from '../../src/subnet/manager';
import { FAKE_PREFIX, FakeRegistry } from '../helpers/fake-registry';
import type { Lease, LeaseAttrs } from '../../src/subnet/types';

const PREFIX = FAKE_PREFIX;
const CONFIG = parseNetworkConfig('{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}');
const attrs = (ip: string): LeaseAttrs => ({ publicIp: ip, backendType: 'udp' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
