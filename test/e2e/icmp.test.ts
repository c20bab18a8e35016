// Unknown overlay destinations: the daemon's datapath answers a container's UDP datagram with an
// ICMP net-unreachable whose bytes the test reads from a raw ICMP socket in the container.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Cluster } from '../../src/testbed/cluster';

const PROBE = path.resolve(__dirname, '..', 'fixtures', 'icmp-probe.js');

let c: Cluster;

before(async () => {
  c = await Cluster.create({ hosts: 2, tag: 'icmp', netConf: { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } } });
  for (const h of c.bed.hosts) await c.startDaemon(h);
  await c.waitForMesh();
});

after(async () => {
  await c?.destroy();
});

async function probe(target: string): Promise<Record<string, unknown>> {
  const out = await c.bed.execOk(c.host(1).containerNs, [process.execPath, PROBE, JSON.stringify({ target, port: 33434, timeoutMs: 2000 })]);
  return JSON.parse(out) as Record<string, unknown>;
}

test('a datagram to a subnet nobody leases gets a well-formed ICMP net unreachable', async () => {
  const leased = new Set((await c.status(c.host(1))).peers.map((p) => p.subnet).concat((await c.status(c.host(1))).lease.subnet));
  let third = 250;
  while (leased.has(`10.244.${third}.0/24`)) third--;
  const target = `10.244.${third}.9`;
  const before = (await c.status(c.host(1))).counters.icmpUnreachableSent ?? 0;
  const r = await probe(target);
  assert.equal(r.received, true, `no ICMP error came back: ${JSON.stringify(r)}`);
  assert.equal(r.type, 3, 'destination unreachable');
  assert.equal(r.code, 0, 'net unreachable');
  assert.equal(r.checksumOk, true, 'ICMP checksum');
  assert.equal(r.quotedDst, target, 'quotes the offending datagram');
  assert.equal(r.quotedSrc, c.host(1).containerIp);
  assert.equal(r.quotedProto, 17);
  assert.equal(r.quotedDstPort, 33434);
  const st = await c.status(c.host(1));
  assert.ok((st.counters.icmpUnreachableSent ?? 0) > before, 'counted in status');
});

test('a datagram to a leased peer crosses the overlay: the peer container itself answers port unreachable', async () => {
  const peer = c.host(2).containerIp as string;
  const r = await probe(peer);
  assert.equal(r.received, true, `no answer: ${JSON.stringify(r)}`);
  assert.equal(r.from, peer, 'from the peer container, not the datapath');
  assert.equal(r.type, 3);
  assert.equal(r.code, 3, 'port unreachable (nothing listens), never net unreachable');
  assert.equal(r.checksumOk, true);
});
