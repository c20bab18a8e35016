// The userspace datapath between namespaced hosts, routes set from TypeScript (no etcd): traffic for
// both encapsulations, interop with the kernel vxlan device, hostile input, and route churn.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NetBed, BedHost, ping, iperf3Tcp } from '../../src/testbed/netbed';
import { DpHost } from '../helpers/dp-host-client';
import { ipv4, vxlanFrame, vxlanHeader, ethernet } from '../helpers/packets';

const MAC = (i: number) => `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`;

async function withBed(hosts: number, fn: (bed: NetBed) => Promise<void>): Promise<void> {
  const bed = await NetBed.create({ hosts, tag: 'dp' });
  try {
    await fn(bed);
  } finally {
    await bed.destroy();
  }
}

/** Brings up vxnet on each host (containers readdressed) and a full mesh of static routes. */
async function mesh(bed: NetBed, encap: 'udp' | 'vxlan', hosts: BedHost[]): Promise<DpHost[]> {
  const mtu = encap === 'vxlan' ? 1450 : 1472;
  const dps: DpHost[] = [];
  for (const h of hosts) {
    await h.setContainerSubnet(`10.244.${h.index}.1/24`, mtu);
    dps.push(await DpHost.start(bed, h, { encap, localSubnet: `10.244.${h.index}.0/24`, vtepMac: MAC(h.index), mtu }));
  }
  for (const [i, h] of hosts.entries()) {
    await dps[i].setRoutes(
      hosts.filter((o) => o !== h).map((o) => ({ subnet: `10.244.${o.index}.0/24`, publicIp: o.underlayIp, vtepMac: MAC(o.index) })),
    );
  }
  return dps;
}

for (const encap of ['udp', 'vxlan'] as const) {
  test(`${encap}: containers on two hosts ping and move TCP through vxnet`, { timeout: 120000 }, async () => {
    await withBed(2, async (bed) => {
      const [h1, h2] = bed.hosts;
      const dps = await mesh(bed, encap, [h1, h2]);
      const p = await ping(bed, h1.containerNs, h2.containerIp!, { count: 5, intervalS: 0.2 });
      assert.equal(p.received, 5, 'every ping answered');
      const t = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 3 });
      assert.ok(t.bytes > 10 * 1024 * 1024, `TCP moved ${t.bytes} bytes`);
      const s1 = await dps[0].stats();
      const s2 = await dps[1].stats();
      assert.ok(s1.txPackets > 1000 && s2.rxPackets > 1000, 'the datapath carried the flow');
      assert.equal(s1.peers[0].txBytes, s1.txBytes, 'per-peer bytes add up');
      for (const s of [s1, s2]) {
        for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
      }
      // An address no peer owns: ICMP net unreachable comes back at once.
      const u = await bed.exec(h1.containerNs, ['ping', '-c', '1', '-W', '2', '10.244.99.1']);
      assert.match(u.stdout, /Destination Net Unreachable/);
      assert.ok((await dps[0].stats()).icmpUnreachableSent >= 1);
      for (const d of dps) await d.close();
      const gone = await bed.exec(h1.ns, ['ip', 'link', 'show', 'vxnet0']);
      assert.notEqual(gone.code, 0, 'the TUN disappears with a clean stop');
    });
  });
}

/** Reads the VXLAN datagrams of a pcap file (Ethernet link type): outer ports and VXLAN fields. */
function vxlanInPcap(file: string) {
  const b = readFileSync(file);
  const out: Array<{ src: string; dport: number; flags: number; vni: number; innerDst: string; innerSrc: string; innerType: number }> = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const incl = b.readUInt32LE(off + 8);
    const f = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (f.length < 14 + 20 + 8 + 22 || f.readUInt16BE(12) !== 0x0800) continue;
    const ihl = (f[14] & 15) * 4;
    const udp = 14 + ihl;
    const vx = udp + 8;
    const hex = (s: Buffer) => [...s].map((x) => x.toString(16).padStart(2, '0')).join(':');
    out.push({
      src: [...f.subarray(26, 30)].join('.'),
      dport: f.readUInt16BE(udp + 2),
      flags: f[vx],
      vni: f.readUIntBE(vx + 4, 3),
      innerDst: hex(f.subarray(vx + 8, vx + 14)),
      innerSrc: hex(f.subarray(vx + 14, vx + 20)),
      innerType: f.readUInt16BE(vx + 20),
    });
  }
  return out;
}

test('vxlan interop: vxnet and a kernel vxlan device set up as flannel does, ping both ways, wire format', { timeout: 150000 }, async () => {
  await withBed(2, async (bed) => {
    const [a, b] = bed.hosts;
    await a.setContainerSubnet('10.244.1.1/24', 1450);
    await b.setContainerSubnet('10.244.2.1/24', 1450);
    const vx = await DpHost.start(bed, a, { encap: 'vxlan', localSubnet: '10.244.1.0/24', vtepMac: MAC(1) });
    // Host B: flannel's vxlan backend, by hand: nolearning device, /32 address, onlink route,
    // permanent neighbour and FDB entry per peer VTEP.
    const k = (argv: string[]) => bed.execOk(b.ns, argv);
    await k(['ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'local', b.underlayIp, 'dev', 'eth0', 'dstport', '8472', 'nolearning']);
    await k(['ip', 'link', 'set', 'flannel.1', 'mtu', '1450', 'up']);
    await k(['ip', 'addr', 'add', '10.244.2.0/32', 'dev', 'flannel.1']);
    await k(['ip', 'route', 'add', '10.244.1.0/24', 'via', '10.244.1.0', 'dev', 'flannel.1', 'onlink']);
    await k(['ip', 'neigh', 'add', '10.244.1.0', 'lladdr', MAC(1), 'dev', 'flannel.1', 'nud', 'permanent']);
    await k(['bridge', 'fdb', 'add', MAC(1), 'dev', 'flannel.1', 'dst', a.underlayIp]);
    const kmac = (JSON.parse(await k(['ip', '-j', 'link', 'show', 'flannel.1'])) as Array<{ address: string }>)[0].address;
    await vx.setRoutes([{ subnet: '10.244.2.0/24', publicIp: b.underlayIp, vtepMac: kmac }]);

    const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-pcap-'));
    try {
      const pcap = path.join(dir, 'underlay.pcap');
      const dump = bed.spawn(b.ns, ['tcpdump', '-i', 'eth0', '-nn', '-U', '-s', '128', '-w', pcap, 'udp port 8472'], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await ping(bed, a.containerNs, b.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'vxnet -> kernel');
      assert.equal((await ping(bed, b.containerNs, a.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'kernel -> vxnet');
      await new Promise((r) => setTimeout(r, 300));
      dump.kill('SIGINT');
      await new Promise((r) => dump.once('exit', r));
      const pkts = vxlanInPcap(pcap);
      const fromVxnet = pkts.filter((p) => p.src === a.underlayIp);
      const fromKernel = pkts.filter((p) => p.src === b.underlayIp);
      assert.ok(fromVxnet.length >= 4 && fromKernel.length >= 4, `captured ${fromVxnet.length} + ${fromKernel.length} datagrams`);
      for (const p of fromVxnet) {
        assert.deepEqual([p.dport, p.flags, p.vni, p.innerDst, p.innerSrc, p.innerType], [8472, 0x08, 1, kmac, MAC(1), 0x0800]);
      }
      for (const p of fromKernel) assert.deepEqual([p.dport, p.vni, p.innerDst, p.innerSrc], [8472, 1, MAC(1), kmac]);
      const s = await vx.stats();
      for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await vx.close();
  });
});

test('hostile input during a flow: dropped by reason, nothing foreign reaches the container', { timeout: 150000 }, async () => {
  await withBed(3, async (bed) => {
    const [h1, h2, h3] = bed.hosts; // h3 is not a peer: it plays the attacker
    const dps = await mesh(bed, 'vxlan', [h1, h2]);
    const mac2 = MAC(2);
    const foreign = (src: string) => ipv4({ src, dst: h2.containerIp!, proto: 17, payload: Buffer.from('00090009000f0000464f524549474e', 'hex') });
    const malformed = [
      Buffer.alloc(0), Buffer.from('08'), vxlanHeader(1), // short
      Buffer.concat([vxlanHeader(1, 0), ethernet(mac2, MAC(1)), foreign('10.244.1.2')]), // no I flag
      vxlanFrame(77, mac2, MAC(1), foreign('10.244.1.2')), // wrong VNI
      vxlanFrame(1, 'ff:ff:ff:ff:ff:ff', MAC(1), foreign('10.244.1.2')), // not our MAC
      vxlanFrame(1, mac2, MAC(1), Buffer.alloc(28), 0x0806), // ARP
      vxlanFrame(1, mac2, MAC(1), Buffer.concat([Buffer.from([0x45, 0, 0xff, 0xff]), Buffer.alloc(30)])), // bad IP
    ].map((b) => b.toString('hex'));
    const spoofed = [vxlanFrame(1, mac2, MAC(1), foreign('10.244.3.9'))].map((b) => b.toString('hex'));
    const wellFormed = [vxlanFrame(1, mac2, MAC(3), foreign('10.244.3.9'))].map((b) => b.toString('hex'));
    const blaster = path.resolve(__dirname, '..', 'fixtures', 'udp-blaster.js');
    const blast = (host: BedHost, payloads: string[], rounds: number) =>
      bed.execOk(host.ns, [process.execPath, blaster, JSON.stringify({ target: h2.underlayIp, port: 8472, payloads, rounds })], { timeoutMs: 60000 });

    const sniff = await bed.exec(h2.containerNs, ['true']); // container namespace is up
    assert.equal(sniff.code, 0);
    const dump = bed.spawn(h2.containerNs, ['tcpdump', '-i', 'eth0', '-nn', '-U', '-l', 'udp port 9'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let captured = '';
    dump.stdout!.on('data', (d: Buffer) => (captured += d.toString()));
    await new Promise((r) => setTimeout(r, 800));
    const flow = iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 4 });
    await new Promise((r) => setTimeout(r, 500));
    await Promise.all([blast(h3, [...malformed, ...wellFormed], 400), blast(h1, [...malformed, ...spoofed], 400)]);
    const result = await flow;
    dump.kill('SIGINT');
    await new Promise((r) => dump.once('exit', r));
    assert.ok(result.bytes > 1e6, 'the flow completed');
    assert.equal(captured.trim(), '', 'no foreign packet reached the container');
    const s = await dps[1].stats(); // the process lives and answers
    // Datagrams too short to carry a header count as rx_short before the peer is even looked up.
    const shortOnes = 3;
    assert.ok(s.drops.rx_unknown_peer >= 400 * (malformed.length + wellFormed.length - shortOnes), `rx_unknown_peer ${s.drops.rx_unknown_peer}`);
    assert.ok(s.drops.rx_spoofed_src >= 400, `rx_spoofed_src ${s.drops.rx_spoofed_src}`);
    for (const r of ['rx_short', 'rx_vxlan_flags', 'rx_bad_vni', 'rx_dst_mac', 'rx_ethertype', 'rx_bad_ip']) {
      assert.ok(s.drops[r] >= 400, `${r} ${s.drops[r]}`);
    }
    assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 2, intervalS: 0.2 })).received, 2);
  });
});

test('route churn under traffic: replacing and removing peers never stalls the others', { timeout: 150000 }, async () => {
  await withBed(3, async (bed) => {
    const [h1, h2, h3] = bed.hosts;
    const dps = await mesh(bed, 'vxlan', [h1, h2, h3]);
    const stable = { subnet: '10.244.2.0/24', publicIp: h2.underlayIp, vtepMac: MAC(2) };
    const third = { subnet: '10.244.3.0/24', publicIp: h3.underlayIp, vtepMac: MAC(3) };
    const flow = iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 4 });
    let swaps = 0;
    const deadline = Date.now() + 3500;
    while (Date.now() < deadline) {
      // Alternate: h3 present, h3 on another address, h3 gone, plus a crowd of other peers.
      const crowd = Array.from({ length: 500 + (swaps % 3) * 250 }, (_, i) => ({
        subnet: `10.244.${100 + (i >> 8)}.${i & 255}/32`, publicIp: `198.19.${i >> 8}.${i & 255}`, vtepMac: MAC(9),
      }));
      const variant = swaps % 3 === 0 ? [third] : swaps % 3 === 1 ? [{ ...third, publicIp: '198.19.200.1' }] : [];
      await dps[0].setRoutes([stable, ...variant, ...crowd]);
      swaps++;
    }
    const r = await flow;
    assert.ok(swaps > 20, `${swaps} route snapshots published under traffic`);
    assert.ok(r.bytes > 1e6, 'the flow to the stable peer went on');
    await dps[0].setRoutes([stable, third]);
    assert.equal((await ping(bed, h1.containerNs, h3.containerIp!, { count: 3, intervalS: 0.2 })).received, 3, 'h3 reachable again');
  });
});
