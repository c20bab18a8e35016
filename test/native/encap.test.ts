// Byte vectors against the native encapsulation, decapsulation and route table (no fds needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DROP_REASONS, PeerRoute } from '../../src/datapath';
import { EncapEngine, benchChecksum, checksumVectorLoop } from '../../src/datapath/engine';
import { parseCidr, formatIPv4 } from '../../src/net/ip';
import { ipv4, ipChecksum, vxlanFrame, vxlanHeader, ethernet } from '../../src/testbed/packets';

const OUR_MAC = '02:aa:00:00:00:01';
const PEER_MAC = '02:bb:00:00:00:02';
const PEER: PeerRoute = { subnet: parseCidr('10.244.2.0/24'), publicIp: '198.18.0.2', vtepMac: PEER_MAC };

function engine(encap: 'udp' | 'vxlan', vni = 1): EncapEngine {
  const dp = EncapEngine.create({
    encap,
    tunName: 'unused0',
    mtu: 1450,
    network: parseCidr('10.244.0.0/16'),
    localSubnet: parseCidr('10.244.1.0/24'),
    vtepMac: encap === 'vxlan' ? OUR_MAC : undefined,
    vni,
  });
  dp.setRoutes([PEER]);
  return dp;
}

const toPeer = () => ipv4({ src: '10.244.1.2', dst: '10.244.2.7' });
const fromPeer = (over: Partial<Parameters<typeof ipv4>[0]> = {}) => ipv4({ src: '10.244.2.7', dst: '10.244.1.2', ...over });

function dropOf(r: object): string | undefined {
  return (r as { drop?: string }).drop;
}

test('udp encapsulation: the inner packet is the whole UDP payload, to the peer on 8285', () => {
  const dp = engine('udp');
  const pkt = toPeer();
  const r = dp.encap(pkt) as { frame: Buffer; peerIp: number; port: number };
  assert.deepEqual(r.frame, pkt);
  assert.equal(formatIPv4(r.peerIp), '198.18.0.2');
  assert.equal(r.port, 8285);
});

test('vxlan encapsulation: RFC 7348 header, VNI, inner Ethernet with the VTEP MACs', () => {
  const dp = engine('vxlan', 0x0a0b0c);
  const pkt = toPeer();
  const r = dp.encap(pkt) as { frame: Buffer; port: number };
  const expected = Buffer.concat([
    Buffer.from('08000000' + '0a0b0c00', 'hex'), // flags I, reserved, VNI, reserved
    Buffer.from('02bb00000002' + '02aa00000001' + '0800', 'hex'), // dst = peer VTEP, src = ours, IPv4
    pkt,
  ]);
  assert.deepEqual(r.frame, expected);
  assert.equal(r.port, 8472);
});

test('decapsulation accepts well-formed frames and trims to the IP total length', () => {
  const udp = engine('udp');
  const inner = fromPeer();
  const ru = udp.decap('198.18.0.2', Buffer.concat([inner, Buffer.alloc(6)])) as { inner: Buffer };
  assert.deepEqual(ru.inner, inner);
  const vx = engine('vxlan', 7);
  const rv = vx.decap('198.18.0.2', vxlanFrame(7, OUR_MAC, PEER_MAC, inner)) as { inner: Buffer };
  assert.deepEqual(rv.inner, inner);
  // Reserved bits are ignored on receipt (RFC 7348 section 5).
  const reserved = Buffer.concat([vxlanHeader(7, 0xff), ethernet(OUR_MAC, PEER_MAC), inner]);
  reserved[1] = 0xff;
  assert.deepEqual((vx.decap('198.18.0.2', reserved) as { inner: Buffer }).inner, inner);
});

test('every transmit drop reason is detected and counted', () => {
  const dp = engine('udp');
  const cases: Array<[string, Buffer]> = [
    ['tx_short', Buffer.alloc(10, 0x45)],
    ['tx_not_ipv4', Buffer.concat([Buffer.from([0x60]), Buffer.alloc(39)])],
    ['tx_bad_ip', (() => { const p = toPeer(); p.writeUInt16BE(p.length + 1, 2); return p; })()],
    ['tx_bad_ip', (() => { const p = toPeer(); p[0] = 0x44; return p; })()],
    ['tx_no_route', ipv4({ src: '10.244.1.2', dst: '10.244.9.9' })],
  ];
  for (const [reason, pkt] of cases) assert.equal(dropOf(dp.encap(pkt)), reason, reason);
  const drops = dp.stats().drops;
  assert.equal(drops.tx_short, 1);
  assert.equal(drops.tx_not_ipv4, 1);
  assert.equal(drops.tx_bad_ip, 2);
  assert.equal(drops.tx_no_route, 1);
});

test('no route: ICMP net unreachable quoting the offender, from the unreachable address, valid checksums', () => {
  const dp = engine('udp');
  const offender = ipv4({ src: '10.244.1.2', dst: '10.244.9.9', payload: Buffer.from('0800f7ff0000000041424344', 'hex') });
  const r = dp.encap(offender) as { drop: string; icmp?: Buffer };
  assert.ok(r.icmp, 'an ICMP reply is built');
  const icmp = r.icmp!;
  assert.equal(icmp[9], 1);
  assert.equal(formatIPv4(icmp.readUInt32BE(12)), '10.244.9.9');
  assert.equal(formatIPv4(icmp.readUInt32BE(16)), '10.244.1.2');
  assert.equal(ipChecksum(icmp.subarray(0, 20)), 0);
  assert.equal(icmp[20], 3);
  assert.equal(icmp[21], 0);
  assert.equal(ipChecksum(icmp.subarray(20)), 0);
  assert.deepEqual(icmp.subarray(28), offender.subarray(0, 28)); // header + 8 bytes
  // Never an ICMP error about an ICMP error (RFC 1122 3.2.2).
  const err = ipv4({ src: '10.244.1.2', dst: '10.244.9.9', payload: Buffer.from('0300fcff00000000', 'hex') });
  assert.equal((dp.encap(err) as { icmp?: Buffer }).icmp, undefined);
});

test('no ICMP unreachable about multicast/broadcast destinations or towards non-host sources (RFC 1122 3.2.2)', () => {
  const dp = engine('udp');
  const icmpFor = (src: string, dst: string) => (dp.encap(ipv4({ src, dst })) as { icmp?: Buffer }).icmp;
  assert.ok(icmpFor('10.244.1.2', '10.244.9.9'), 'the unicast case gets a reply');
  for (const dst of ['224.0.0.251', '239.255.255.250', '255.255.255.255', '0.0.0.0', '0.1.2.3', '240.0.0.1', '127.0.0.1']) {
    assert.equal(icmpFor('10.244.1.2', dst), undefined, `no reply about a packet to ${dst}`);
  }
  for (const src of ['0.0.0.0', '0.1.2.3', '127.0.0.1', '224.0.0.1', '240.0.0.1', '255.255.255.255']) {
    assert.equal(icmpFor(src, '10.244.9.9'), undefined, `no reply towards ${src}`);
  }
});

test('every receive drop reason is detected and counted', () => {
  const vx = engine('vxlan', 5);
  const good = fromPeer();
  const frame = (o: { vni?: number; dst?: string; type?: number; inner?: Buffer } = {}) =>
    vxlanFrame(o.vni ?? 5, o.dst ?? OUR_MAC, PEER_MAC, o.inner ?? good, o.type ?? 0x0800);
  const badSum = fromPeer();
  badSum[10] ^= 0xff;
  const badLen = fromPeer();
  badLen.writeUInt16BE(200, 2);
  badLen.writeUInt16BE(0, 10);
  badLen.writeUInt16BE(ipChecksum(badLen.subarray(0, 20)), 10);
  const cases: Array<[string, string, Buffer]> = [
    ['rx_short', '198.18.0.2', frame().subarray(0, 30)],
    ['rx_unknown_peer', '198.18.0.66', frame()],
    ['rx_vxlan_flags', '198.18.0.2', Buffer.concat([vxlanHeader(5, 0x00), ethernet(OUR_MAC, PEER_MAC), good])],
    ['rx_bad_vni', '198.18.0.2', frame({ vni: 6 })],
    ['rx_dst_mac', '198.18.0.2', frame({ dst: 'ff:ff:ff:ff:ff:ff' })],
    ['rx_ethertype', '198.18.0.2', frame({ type: 0x86dd })],
    ['rx_bad_ip', '198.18.0.2', frame({ inner: badSum })],
    ['rx_bad_ip', '198.18.0.2', frame({ inner: badLen })],
    ['rx_spoofed_src', '198.18.0.2', frame({ inner: fromPeer({ src: '10.244.3.3' }) })],
    ['rx_wrong_dst', '198.18.0.2', frame({ inner: fromPeer({ dst: '10.244.3.3' }) })],
  ];
  for (const [reason, src, dgram] of cases) assert.equal(dropOf(vx.decap(src, dgram)), reason, reason);
  const s = vx.stats();
  for (const [reason] of cases) assert.ok(s.drops[reason] >= 1, `${reason} counted`);
  assert.equal(s.drops.rx_bad_ip, 2);
  assert.equal(s.rxPackets, 0, 'nothing was accepted');
  const udp = engine('udp');
  assert.equal(dropOf(udp.decap('198.18.0.2', Buffer.alloc(19))), 'rx_short');
  assert.equal(dropOf(udp.decap('198.18.0.9', good)), 'rx_unknown_peer');
  assert.equal(dropOf(udp.decap('198.18.0.2', fromPeer({ src: '10.244.7.1' }))), 'rx_spoofed_src');
});

test('drop reasons exported from the addon are exactly the documented set', () => {
  assert.deepEqual([...DROP_REASONS].sort(), [
    'rx_bad_ip', 'rx_bad_vni', 'rx_dst_mac', 'rx_ethertype', 'rx_short', 'rx_spoofed_src', 'rx_tun_write_error',
    'rx_unknown_peer', 'rx_vxlan_flags', 'rx_wrong_dst', 'tx_bad_ip', 'tx_loop', 'tx_no_route', 'tx_not_ipv4', 'tx_send_error', 'tx_short',
    'tx_truncated', 'tx_tun_queue_full',
  ]);
});

test('per-peer counters follow the peer, not the slot', () => {
  const dp = engine('udp');
  dp.encap(toPeer());
  dp.decap('198.18.0.2', fromPeer());
  let p = dp.stats().peers[0];
  assert.equal(p.txPackets, 1);
  assert.equal(p.rxPackets, 1);
  assert.equal(p.rxBytes, fromPeer().length);
  dp.setRoutes([]);
  dp.setRoutes([{ subnet: parseCidr('10.244.5.0/24'), publicIp: '198.18.0.5' }]);
  p = dp.stats().peers[0];
  assert.equal(p.subnet, '10.244.5.0/24');
  assert.equal(p.txPackets, 0, 'a new peer starts from zero');
});

test('route table: longest prefix wins, replace and remove take effect, bad input is refused', () => {
  const dp = engine('udp');
  dp.setRoutes([
    { subnet: parseCidr('10.244.0.0/16'), publicIp: '198.18.0.9' },
    { subnet: parseCidr('10.244.2.0/24'), publicIp: '198.18.0.2' },
  ]);
  const peerOf = (dst: string) => formatIPv4((dp.encap(ipv4({ src: '10.244.1.2', dst })) as { peerIp: number }).peerIp);
  assert.equal(peerOf('10.244.2.9'), '198.18.0.2');
  assert.equal(peerOf('10.244.77.1'), '198.18.0.9');
  dp.setRoutes([{ subnet: parseCidr('10.244.2.0/24'), publicIp: '198.18.0.3' }]);
  assert.equal(peerOf('10.244.2.9'), '198.18.0.3');
  assert.equal(dropOf(dp.encap(ipv4({ src: '10.244.1.2', dst: '10.244.77.1' }))), 'tx_no_route');
  assert.throws(() => dp.setRoutes([PEER, PEER]), /duplicate/);
  assert.throws(() => dp.setRoutes([{ subnet: { ip: 0x0af40201, prefixLen: 24 }, publicIp: '198.18.0.2' }]), /host bits/);
  assert.equal(dp.routeCount, 1, 'a refused snapshot leaves the previous one in place');
});

test('10,000 peers: every subnet resolves to its own peer, and anti-spoofing holds per peer', () => {
  const dp = engine('udp');
  const routes: PeerRoute[] = [];
  for (let i = 0; i < 10000; i++) {
    routes.push({ subnet: { ip: (0x0a000000 + ((i + 1) << 8)) >>> 0, prefixLen: 24 }, publicIp: formatIPv4((0xc6120000 + i + 1) >>> 0) });
  }
  dp.setRoutes(routes);
  assert.equal(dp.routeCount, 10000);
  for (const i of [0, 1, 4999, 9999]) {
    const dst = formatIPv4((routes[i].subnet.ip + 9) >>> 0);
    const r = dp.encap(ipv4({ src: '10.244.1.2', dst })) as { peerIp: number };
    assert.equal(formatIPv4(r.peerIp), routes[i].publicIp);
  }
  // Datagrams from peer 42 may only carry sources from peer 42's subnet.
  const mk = (src: string) => ipv4({ src, dst: '10.244.1.2' });
  assert.equal(dropOf(dp.decap(routes[42].publicIp, mk(formatIPv4(routes[42].subnet.ip + 5)))), undefined);
  assert.equal(dropOf(dp.decap(routes[42].publicIp, mk(formatIPv4(routes[43].subnet.ip + 5)))), 'rx_spoofed_src');
});

/** An IPv4 TCP (proto 6) or UDP (17) packet from the peer with a correct L4 checksum, and its pseudo-header sum. */
function l4FromPeer(proto: 6 | 17, payload: Buffer): { pkt: Buffer; field: number; pseudoSum: number } {
  const hdr = proto === 6 ? Buffer.alloc(20) : Buffer.alloc(8);
  hdr.writeUInt16BE(40000, 0);
  hdr.writeUInt16BE(5201, 2);
  if (proto === 6) {
    hdr.writeUInt32BE(1, 4);
    hdr.writeUInt32BE(1, 8);
    hdr[12] = 5 << 4;
    hdr[13] = 0x18; // PSH ACK
    hdr.writeUInt16BE(512, 14);
  } else {
    hdr.writeUInt16BE(8 + payload.length, 4);
  }
  const seg = Buffer.concat([hdr, payload]);
  const pkt = fromPeer({ proto, payload: seg });
  const pseudo = Buffer.alloc(12);
  pkt.copy(pseudo, 0, 12, 20);
  pseudo[9] = proto;
  pseudo.writeUInt16BE(seg.length, 10);
  const field = 20 + (proto === 6 ? 16 : 6);
  const sum = ipChecksum(Buffer.concat([pseudo, seg]));
  pkt.writeUInt16BE(proto === 17 && sum === 0 ? 0xffff : sum, field);
  return { pkt, field, pseudoSum: ~ipChecksum(pseudo) & 0xffff };
}

test('inner TCP/UDP checksums: an offloaded one (pseudo-header sum only) is completed, any other left for the stack', () => {
  const vx = engine('vxlan');
  const rx = (inner: Buffer) => (vx.decap('198.18.0.2', vxlanFrame(1, OUR_MAC, PEER_MAC, inner)) as { inner: Buffer }).inner;
  for (const proto of [6, 17] as const) {
    for (const size of [0, 1, 333, 1380]) {
      const { pkt, field, pseudoSum } = l4FromPeer(proto, Buffer.alloc(size, size & 0xff));
      assert.deepEqual(rx(pkt), pkt, `${proto}/${size}: a correct checksum passes unchanged`);
      const offloaded = Buffer.from(pkt);
      offloaded.writeUInt16BE(pseudoSum, field);
      assert.deepEqual(rx(offloaded), pkt, `${proto}/${size}: the offloaded form is completed to the correct checksum`);
      const wrong = Buffer.from(pkt);
      wrong.writeUInt16BE(pkt.readUInt16BE(field) ^ 0x0101, field);
      assert.deepEqual(rx(wrong), wrong, `${proto}/${size}: a wrong checksum passes unchanged (the stack rejects it)`);
    }
  }
  const s = vx.stats();
  assert.equal(s.rxCsumCompleted, 8, 'one completion per offloaded packet');
  assert.equal(s.rxPackets, 24);
});

test('worker options are validated: busyPollUs 0..10000, queues 1..16', () => {
  const base = { encap: 'udp' as const, tunName: 'unused0', mtu: 1450, network: parseCidr('10.244.0.0/16'), localSubnet: parseCidr('10.244.1.0/24') };
  for (const busyPollUs of [0, 50, 10000]) EncapEngine.create({ ...base, busyPollUs });
  for (const busyPollUs of [-1, 1.5, 10001]) assert.throws(() => EncapEngine.create({ ...base, busyPollUs }), /busyPollUs/);
  for (const queues of [1, 16]) EncapEngine.create({ ...base, queues });
  for (const queues of [0, 17, 2.5]) assert.throws(() => EncapEngine.create({ ...base, queues }), /queues/);
});

test('checksum microbenchmark kernel: both loops run, the CPU says which vector loop it has, bad sizes are refused', () => {
  const vector = checksumVectorLoop();
  assert.ok(vector === undefined || vector === 'avx2', `vector loop ${vector}`);
  for (const loop of ['scalar', 'vector'] as const) {
    const ns = benchChecksum(1448, 10, loop);
    assert.ok(Number.isFinite(ns) && ns >= 0, `${loop}: ${ns}`);
  }
  assert.throws(() => benchChecksum(65537, 1, 'vector'), /bytes <= 65536/);
});
