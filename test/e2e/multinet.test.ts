// Several VXLAN networks on one vxnet port: host h1 runs one datapath (UDP 8472) serving network A
// (VNI 4100, its default network, TUN in h1) and network B (VNI 4101, added at runtime, TUN in a
// namespace the test creates); host h2 has two kernel vxlan devices on port 8472 (one per VNI),
// programmed as flannel's vxlan backend programs its device, each with its own routes. Traffic per
// network both ways, isolation between them, networks added and removed under traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetBed, BedHost, ping, iperf3Tcp } from '../../src/testbed/netbed';
import { DpHost, DpHostError, settled, type DpNetworkConfig } from '../../src/testbed/dp-host';
import type { DatapathStats } from '../../src/datapath';

const MAC = (net: number, host: number) => `02:00:00:00:${net.toString(16).padStart(2, '0')}:${host.toString(16).padStart(2, '0')}`;

/** One overlay network of the test: A = 10.244/16 VNI 4100, B = 10.245/16 VNI 4101, ... */
interface Net {
  vni: number;
  /** Second octet of its range 10.<o>.0.0/16; host i leases 10.<o>.<i>.0/24. */
  octet: number;
}
const A: Net = { vni: 4100, octet: 244 };
const B: Net = { vni: 4101, octet: 245 };
const C: Net = { vni: 4102, octet: 246 };
const range = (n: Net) => `10.${n.octet}.0.0/16`;
const lease = (n: Net, host: number) => `10.${n.octet}.${host}.0/24`;
const leaseIp = (n: Net, host: number) => `10.${n.octet}.${host}.0`;

async function withBed(fn: (bed: NetBed) => Promise<void>): Promise<void> {
  const bed = await NetBed.create({ hosts: 2, tag: 'mnet' });
  try {
    await fn(bed);
  } finally {
    await bed.destroy();
  }
}

/**
 * Host `b`'s kernel side of network `n`, as flannel's vxlan backend programs flannel.1: a
 * nolearning vxlan device (VNI n.vni, port 8472) with the host's lease address as a /32, an onlink
 * route to the vxnet host's lease, a permanent neighbour and FDB entry. Returns the device's MAC.
 */
async function kernelVxlan(bed: NetBed, b: BedHost, n: Net, peer: BedHost): Promise<string> {
  const k = (argv: string[]) => bed.execOk(b.ns, argv);
  const dev = `vx${n.vni}`;
  const gw = leaseIp(n, peer.index);
  await k(['ip', 'link', 'add', dev, 'type', 'vxlan', 'id', String(n.vni), 'local', b.underlayIp, 'dev', 'eth0', 'dstport', '8472', 'nolearning']);
  await k(['ip', 'link', 'set', dev, 'mtu', '1450', 'up']);
  await k(['ip', 'addr', 'add', `${leaseIp(n, b.index)}/32`, 'dev', dev]);
  await k(['ip', 'route', 'add', lease(n, peer.index), 'via', gw, 'dev', dev, 'onlink']);
  await k(['ip', 'neigh', 'add', gw, 'lladdr', MAC(n.vni & 0xff, peer.index), 'dev', dev, 'nud', 'permanent']);
  await k(['bridge', 'fdb', 'add', MAC(n.vni & 0xff, peer.index), 'dev', dev, 'dst', peer.underlayIp]);
  return (JSON.parse(await k(['ip', '-j', 'link', 'show', dev])) as Array<{ address: string }>)[0].address;
}

function networkConfig(n: Net, host: BedHost, tunName: string, netns?: string): DpNetworkConfig {
  return { vni: n.vni, tunName, netns, mtu: 1450, network: range(n), localSubnet: lease(n, host.index), vtepMac: MAC(n.vni & 0xff, host.index) };
}

const peerOf = (n: Net, h: BedHost, mac: string) => [{ subnet: lease(n, h.index), publicIp: h.underlayIp, vtepMac: mac }];

function rxDrops(s: DatapathStats): Record<string, number> {
  return Object.fromEntries(Object.entries(s.drops).filter(([r, v]) => r.startsWith('rx_') && v !== 0));
}

/** ICMP echo requests that reached the IP stack of `ns` so far. */
async function inEchos(bed: NetBed, ns: string): Promise<number> {
  const rows = (await bed.execOk(ns, ['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Icmp: '));
  const names = rows[0].split(/\s+/);
  return Number(rows[1].split(/\s+/)[names.indexOf('InEchos')]);
}

/** Does `dev` exist in `ns`? */
async function linkExists(bed: NetBed, ns: string, dev: string): Promise<boolean> {
  return (await bed.exec(ns, ['ip', 'link', 'show', 'dev', dev])).code === 0;
}

test('two VXLAN networks on one port: VNI demux to each network\'s TUN (one in another namespace), ping and TCP both ways per network, no traffic crosses', { timeout: 240000 }, async () => {
  await withBed(async (bed) => {
    const [h1, h2] = bed.hosts;
    // Network A: h1's default network (TUN vxnet0 in h1), containers on docker0 of both hosts.
    await h1.setContainerSubnet(`10.244.1.1/24`, 1450);
    await h2.setContainerSubnet(`10.244.2.1/24`, 1450);
    const dp = await DpHost.start(bed, h1, { encap: 'vxlan', vni: A.vni, network: range(A), localSubnet: lease(A, 1), vtepMac: MAC(A.vni & 0xff, 1), queues: 2 });
    try {
      // Network B: its TUN in a namespace of its own (/run/netns/<name>, an nsfs bind mount).
      const nsB = await bed.addNamespace('b1');
      const b = await dp.addNetwork(networkConfig(B, h1, 'vxb0', `/run/netns/${nsB}`));
      assert.ok(await linkExists(bed, nsB, 'vxb0'), 'network B\'s TUN lives in its namespace');
      assert.ok(!(await linkExists(bed, h1.ns, 'vxb0')), '... and not in the datapath\'s');
      const tunB = JSON.parse(await bed.execOk(nsB, ['ip', '-j', '-d', 'link', 'show', 'vxb0']))[0];
      assert.equal(tunB.mtu, 1450);
      assert.match(JSON.stringify(tunB), /numqueues":2|"numqueues": ?2|multi_queue/, 'one queue per worker');
      const routeB = await bed.execOk(nsB, ['ip', 'route', 'show', range(B)]);
      assert.match(routeB, /dev vxb0/, 'network B\'s range is routed into its TUN, in its namespace');
      assert.match(await bed.execOk(nsB, ['ip', '-4', 'addr', 'show', 'dev', 'vxb0']), new RegExp(`inet ${leaseIp(B, 1).replace(/\./g, '\\.')}/16 `), 'its address: the lease\'s network address with the range\'s prefix length');
      assert.equal((await bed.execOk(nsB, ['cat', '/proc/sys/net/ipv6/conf/vxb0/disable_ipv6'])).trim(), '1', 'IPv6 off on it (set in its namespace)');
      const macA = await kernelVxlan(bed, h2, A, h1);
      const macB = await kernelVxlan(bed, h2, B, h1);
      await dp.setRoutes(peerOf(A, h2, macA));
      await dp.setNetworkPeers(b, peerOf(B, h2, macB));

      // Network A both ways: ping and TCP between the containers.
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'A: h1 -> h2');
      assert.equal((await ping(bed, h2.containerNs, h1.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'A: h2 -> h1');
      const b0 = await settled(() => dp.networkStats(b));
      const ta = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 2 });
      const tar = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 2, reverse: true });
      assert.ok(ta.bytes > 5e6 && tar.bytes > 5e6, `A: TCP moved ${ta.bytes} and ${tar.bytes} bytes`);
      const b1 = await dp.networkStats(b);
      assert.equal(b1.rxPackets - b0.rxPackets, 0, 'nothing of network A was written into B\'s TUN');
      assert.equal(b1.txPackets - b0.txPackets, 0, 'nothing of network A left through B');
      assert.equal(b1.tunReads - b0.tunReads, 0, 'B\'s TUN read nothing meanwhile');

      // Network B both ways: h1's side is its namespace (the TUN's address), h2's side its vxlan device.
      const a0 = await settled(() => dp.stats());
      assert.equal((await ping(bed, nsB, leaseIp(B, 2), { count: 4, intervalS: 0.2 })).received, 4, 'B: h1 -> h2');
      assert.equal((await ping(bed, h2.ns, leaseIp(B, 1), { count: 4, intervalS: 0.2 })).received, 4, 'B: h2 -> h1');
      const tb = await iperf3Tcp(bed, nsB, leaseIp(B, 1), h2.ns, { seconds: 2 });
      const tbr = await iperf3Tcp(bed, nsB, leaseIp(B, 1), h2.ns, { seconds: 2, reverse: true });
      assert.ok(tb.bytes > 5e6 && tbr.bytes > 5e6, `B: TCP moved ${tb.bytes} and ${tbr.bytes} bytes`);
      const a1 = await dp.stats();
      assert.equal(a1.rxPackets - a0.rxPackets, 0, 'nothing of network B was written into A\'s TUN');
      assert.equal(a1.txPackets - a0.txPackets, 0, 'nothing of network B left through A');

      // Per-network counters: each network counted its own traffic, its own peer.
      const sb = await settled(() => dp.networkStats(b));
      const sa = await settled(() => dp.stats());
      assert.ok(sb.rxPackets > 1000 && sb.txPackets > 1000, `B counted its flows: ${sb.rxPackets} rx, ${sb.txPackets} tx`);
      assert.equal(sb.peers.length, 1);
      assert.equal(sb.peers[0].subnet, lease(B, 2));
      assert.equal(sb.peers[0].rxPackets, sb.rxPackets, 'B\'s peer counters add up');
      assert.equal(sb.peers[0].txBytes, sb.txBytes);
      assert.equal(sa.peers[0].subnet, lease(A, 2));
      assert.equal(sa.peers[0].txBytes, sa.txBytes, 'A\'s peer counters add up, B\'s not among them');
      assert.equal(sb.workers.length, 2);
      assert.deepEqual(rxDrops(sa), {}, 'no receive drops on A');
      assert.deepEqual(rxDrops(sb), {}, 'no receive drops on B');

      // Crossing attempts from h2, sent with VNI 4101 (network B) towards network A's container on h1:
      // (1) from A's container on h2 (inner source in h2's lease of A, not of B): spoofed for B;
      // (2) from h2's lease of B: a destination outside h1's lease of B. Both dropped and counted
      // by B; A's TUN and container never see them.
      await bed.execOk(h2.ns, ['ip', 'route', 'add', `${h1.containerIp}/32`, 'via', leaseIp(B, 1), 'dev', `vx${B.vni}`, 'onlink']);
      const echo0 = await inEchos(bed, h1.containerNs);
      const a2 = await dp.stats();
      const b2 = await dp.networkStats(b);
      const cross1 = await ping(bed, h2.containerNs, h1.containerIp!, { count: 3, intervalS: 0.2, timeoutS: 1 });
      const cross2 = await bed.exec(h2.ns, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '-I', leaseIp(B, 2), h1.containerIp!]);
      assert.equal(cross1.received, 0, 'a container of A on h2 cannot reach A on h1 through network B');
      assert.doesNotMatch(cross2.stdout, / 0% packet loss/, 'nor can network B\'s address of h2');
      const a3 = await dp.stats();
      const b3 = await dp.networkStats(b);
      assert.equal(b3.drops.rx_spoofed_src - b2.drops.rx_spoofed_src, 3, 'B counted the foreign source as spoofed');
      assert.equal(b3.drops.rx_wrong_dst - b2.drops.rx_wrong_dst, 3, 'B counted the destination outside its lease');
      assert.equal(b3.rxPackets - b2.rxPackets, 0, 'B delivered none of them');
      assert.equal(a3.rxPackets - a2.rxPackets, 0, 'A received none of them');
      assert.equal(await inEchos(bed, h1.containerNs), echo0, 'A\'s container saw no echo request');
      await bed.execOk(h2.ns, ['ip', 'route', 'del', `${h1.containerIp}/32`]);

      // A VNI that is none of ours: dropped and counted by the datapath (rx_bad_vni), in no network.
      await kernelVxlan(bed, h2, C, h1);
      const d0 = await dp.stats();
      const unknown = await bed.exec(h2.ns, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', leaseIp(C, 1)]);
      assert.doesNotMatch(unknown.stdout, / 0% packet loss/);
      const d1 = await dp.stats();
      const b4 = await dp.networkStats(b);
      assert.equal(d1.drops.rx_bad_vni - d0.drops.rx_bad_vni, 3, 'VNI 4102 (not served): rx_bad_vni at the datapath');
      assert.equal(b4.drops.rx_bad_vni, 0, 'never counted by a network');

      // Removing B: its TUN goes, A keeps working.
      const final = await dp.removeNetwork(b);
      assert.ok(final.rxPackets >= sb.rxPackets, 'the final counters are kept');
      assert.ok(!(await linkExists(bed, nsB, 'vxb0')), 'B\'s TUN is gone');
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 2, intervalS: 0.2 })).received, 2, 'A still works');
    } finally {
      await dp.close();
    }
    assert.ok(!(await linkExists(bed, h1.ns, 'vxnet0')), 'the default network\'s TUN is gone with the datapath');
  });
});

test('networks added and removed at runtime while another carries TCP: it keeps flowing, no device is left behind; bad network configs name their field', { timeout: 240000 }, async () => {
  await withBed(async (bed) => {
    const [h1, h2] = bed.hosts;
    await h1.setContainerSubnet(`10.244.1.1/24`, 1450);
    await h2.setContainerSubnet(`10.244.2.1/24`, 1450);
    // udp carries no VNI: a udp datapath serves its own network only.
    const udp = await DpHost.start(bed, h1, { encap: 'udp', localSubnet: lease(A, 1), network: range(A), queues: 1 });
    try {
      await assert.rejects(udp.addNetwork(networkConfig(B, h1, 'vxb0')), (e: unknown) => e instanceof DpHostError && e.field === 'encap');
    } finally {
      await udp.close();
    }
    // A datapath opened without a network of its own: A and C are both added networks.
    const dp = await DpHost.start(bed, h1, { encap: 'vxlan', portOnly: true, localSubnet: '0.0.0.0/0', queues: 2 });
    try {
      const macA = await kernelVxlan(bed, h2, A, h1);
      const macC = await kernelVxlan(bed, h2, C, h1);
      const a = await dp.addNetwork(networkConfig(A, h1, 'vxa0'));
      await dp.setNetworkPeers(a, peerOf(A, h2, macA));
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 3, intervalS: 0.2 })).received, 3, 'A works on a port-only datapath');

      // Network C's TUN in a namespace named by /proc/<pid>/ns/net of a process living there.
      const nsC = await bed.addNamespace('c1');
      const holder = bed.spawn(nsC, ['sleep', 'infinity'], { stdio: 'ignore' });
      const pathC = `/proc/${holder.pid}/ns/net`;

      // Refusals name the field, and leave nothing behind.
      const refused = async (cfg: DpNetworkConfig, field: string) => {
        await assert.rejects(dp.addNetwork(cfg), (e: unknown) => e instanceof DpHostError && e.field === field, `refused for ${field}`);
      };
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), vni: A.vni }, 'vni');
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), vni: 1 << 24 }, 'vni');
      await refused({ ...networkConfig(C, h1, 'vxa0') }, 'tunName');
      await refused({ ...networkConfig(C, h1, 'eth0') }, 'tunName');
      await refused({ ...networkConfig(C, h1, 'vxc0'), network: '10.244.0.0/15', localSubnet: '10.245.1.0/24' }, 'network');
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), localSubnet: '10.99.1.0/24' }, 'localSubnet');
      await refused({ ...networkConfig(C, h1, 'vxc0', '/run/netns/vx-no-such-namespace') }, 'netns');
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), vtepMac: 'nope' }, 'vtepMac');
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), tunAddress: '10.246.7.1' }, 'tunAddress');
      await refused({ ...networkConfig(C, h1, 'vxc0', pathC), mtu: 100 }, 'mtu');
      assert.ok(!(await linkExists(bed, nsC, 'vxc0')) && !(await linkExists(bed, h1.ns, 'vxc0')), 'no device left by a refusal');

      // While A carries TCP: add C, ping through it, remove it; again and again, faster.
      let flowing = true;
      const flow = iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 6 }).finally(() => (flowing = false));
      await new Promise((r) => setTimeout(r, 500));
      let cycles = 0;
      let pinged = 0;
      const left: string[] = [];
      while (flowing || cycles < 5) {
        const c = await dp.addNetwork(networkConfig(C, h1, 'vxc0', pathC));
        await dp.setNetworkPeers(c, peerOf(C, h2, macC));
        if (cycles < 5) {
          const p = await ping(bed, nsC, leaseIp(C, 2), { count: 1, timeoutS: 2 });
          pinged += p.received;
        }
        await dp.removeNetwork(c);
        if (await linkExists(bed, nsC, 'vxc0')) left.push(`cycle ${cycles}`);
        cycles++;
      }
      const r = await flow;
      assert.deepEqual(left, [], `every removed network's TUN was gone when its close resolved (${cycles} add/remove cycles)`);
      assert.equal(pinged, 5, 'C carried a ping in each of its first five lives');
      assert.ok(r.bytes > 1e6, `A's flow went on during ${cycles} add/remove cycles: ${r.bytes} bytes`);
      const sa = await dp.networkStats(a);
      assert.deepEqual(rxDrops(sa), {}, 'no receive drops on A');
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 2, intervalS: 0.2 })).received, 2, 'A still works');
      // Nothing of C is left in the datapath: a frame for VNI 4102 is now an unknown VNI.
      const d0 = await dp.stats();
      await bed.exec(h2.ns, ['ping', '-n', '-c', '2', '-i', '0.2', '-W', '1', leaseIp(C, 1)]);
      const d1 = await dp.stats();
      assert.equal(d1.drops.rx_bad_vni - d0.drops.rx_bad_vni, 2, 'VNI 4102 is no longer served');
      holder.kill('SIGKILL');
    } finally {
      await dp.close();
    }
    assert.ok(!(await linkExists(bed, h1.ns, 'vxa0')), 'closing the datapath removes its networks\' TUNs');
  });
});
