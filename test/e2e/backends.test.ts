// End-to-end checks of the backends on namespace hosts, no etcd: each host runs this same file as a
// child (HOST_ENV set) that drives one backend over IPC with fake leases; the parent pings between
// containers and inspects the kernel state the backends leave (or remove).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetBed, iperf3Tcp, ping, type BedHost } from '../../src/testbed/netbed';
import { listNamespaces } from '../../src/testbed/cleanup';
import type { BackendNetwork, ExternalInterface, Logger } from '../../src/backend/backend';
import type { LeaseAttrs } from '../../src/subnet/types';
import { parseCidr } from '../../src/net/ip';
import { supportsRandomFully } from '../../src/host/ipmasq';
import { fromWireLease, RpcChild, rpcLog, serveRpc, type WireLease } from '../../src/testbed/rpc';
import { parseNetworkConfig } from '../../src/subnet/config';

const HOST_ENV = 'VXNET_BACKENDS_TEST_HOST';
const NETWORK = '10.244.0.0/16';

interface HostArgs {
  backend: Record<string, unknown>;
  iface: ExternalInterface;
}
type Request =
  | { op: 'attrs' }
  | { op: 'start'; subnet: string }
  | { op: 'peers'; peers: WireLease[] }
  | { op: 'stats' }
  | { op: 'close' }
  | { op: 'masq'; network: string; subnet: string }
  | { op: 'unmasq' }
  | { op: 'batch'; tool: 'ip' | 'bridge'; lines: string[] };
interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}

// ---------------------------------------------------------------- child: one backend in one host

async function runHost(args: HostArgs): Promise<void> {
  const { createBackend } = await import('../../src/backend/registry');
  const { setupIpMasq, teardownIpMasq } = await import('../../src/host/ipmasq');
  const { runBatch } = await import('../../src/net/iproute');
  const log: Logger = {
    info: (msg, fields) => rpcLog('info', msg, fields),
    warn: (msg, fields) => rpcLog('warn', msg, fields),
    error: (msg, fields) => rpcLog('error', msg, fields),
  };
  const config = parseNetworkConfig(JSON.stringify({ Network: NETWORK, SubnetLen: 24, Backend: args.backend }));
  const backend = createBackend({ config, iface: args.iface, log });
  let net: BackendNetwork | undefined;
  const lease = fromWireLease;
  const handle = async (req: Request): Promise<unknown> => {
    switch (req.op) {
      case 'attrs':
        return backend.leaseAttrs();
      case 'start': {
        net = await backend.start({ subnet: parseCidr(req.subnet, true), attrs: await backend.leaseAttrs() });
        return { mtu: net.mtu };
      }
      case 'peers':
        return net!.setPeers(req.peers.map(lease));
      case 'stats':
        await net!.refreshStats?.();
        return net!.stats();
      case 'close':
        await net?.close();
        net = undefined;
        return null;
      case 'masq':
        return setupIpMasq(parseCidr(req.network), parseCidr(req.subnet, true));
      case 'unmasq':
        return teardownIpMasq();
      case 'batch':
        return [...(await runBatch(req.tool, req.lines)).failed];
    }
  };
  // The parent closing the channel (stop) ends us after the backend's own teardown.
  serveRpc(handle, {}, async () => {
    await net?.close();
  });
}

// ---------------------------------------------------------------- parent: drivers and probes

class HostBackend {
  private constructor(
    readonly host: BedHost,
    private readonly rpc: RpcChild<Request>,
    readonly logs: LogLine[],
  ) {}

  static async spawn(bed: NetBed, host: BedHost, backend: Record<string, unknown>, iface: Partial<ExternalInterface> = {}): Promise<HostBackend> {
    const args: HostArgs = {
      backend,
      iface: { name: host.underlayDev, address: host.underlayIp, publicIp: host.underlayIp, mtu: 1500, ...iface },
    };
    const logs: LogLine[] = [];
    const rpc = await RpcChild.start<Request>(bed, host.ns, [process.execPath, __filename], {
      name: `backend host ${host.name}`,
      // Without NODE_TEST_CONTEXT the child is a plain program, not a test-runner subprocess.
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, [HOST_ENV]: JSON.stringify(args) },
      onLog: (l) => logs.push(l),
    });
    return new HostBackend(host, rpc, logs);
  }

  call<T>(req: Request): Promise<T> {
    return this.rpc.call<T>(req);
  }

  attrs(): Promise<LeaseAttrs> {
    return this.call({ op: 'attrs' });
  }

  async lease(): Promise<WireLease> {
    return { subnet: subnetOf(this.host), attrs: await this.attrs() };
  }

  start(): Promise<{ mtu: number }> {
    return this.call({ op: 'start', subnet: subnetOf(this.host) });
  }

  setPeers(peers: WireLease[]): Promise<void> {
    return this.call({ op: 'peers', peers });
  }

  stats(): Promise<Record<string, unknown>> {
    return this.call({ op: 'stats' });
  }

  /** Closes the backend network and ends the child. */
  async stop(): Promise<void> {
    if (!this.rpc.running) return;
    await this.call({ op: 'close' });
    await this.rpc.stop();
  }
}

/** Host h<N> leases 10.244.<N>.0/24. */
const subnetOf = (h: BedHost): string => `10.244.${h.index}.0/24`;
const gatewayOf = (h: BedHost): string => `10.244.${h.index}.1/24`;

async function json<T>(bed: NetBed, ns: string, argv: string[]): Promise<T> {
  return JSON.parse(await bed.execOk(ns, argv)) as T;
}

interface LinkDetail {
  mtu: number;
  address: string;
  flags: string[];
  linkinfo?: { info_kind: string; info_data: { id: number; local: string; link: string; port: number; learning: boolean } };
}

async function link(bed: NetBed, ns: string, dev: string): Promise<LinkDetail | undefined> {
  const r = await bed.exec(ns, ['ip', '-d', '-j', 'link', 'show', 'dev', dev]);
  return r.code === 0 ? (JSON.parse(r.stdout) as LinkDetail[])[0] : undefined;
}

async function overlayRoutes(bed: NetBed, ns: string): Promise<string[]> {
  const routes = await json<Array<{ dst: string; gateway?: string; dev: string; flags: string[] }>>(bed, ns, ['ip', '-j', '-4', 'route', 'show']);
  return routes
    .filter((r) => r.dst.startsWith('10.244.') && r.dev !== 'docker0')
    .map((r) => `${r.dst} via ${r.gateway ?? '-'} dev ${r.dev}${r.flags.includes('onlink') ? ' onlink' : ''}`)
    .sort();
}

async function assertPings(bed: NetBed, from: BedHost, to: BedHost, what: string): Promise<void> {
  const r = await ping(bed, from.containerNs, to.containerIp!, { count: 3, intervalS: 0.1, timeoutS: 2 });
  assert.equal(r.received, r.transmitted, `${what}: ${from.name} container -> ${to.name} container (${to.containerIp}) lost ${r.transmitted - r.received}/${r.transmitted}`);
}

async function assertNoPing(bed: NetBed, from: BedHost, to: BedHost, what: string): Promise<void> {
  const r = await ping(bed, from.containerNs, to.containerIp!, { count: 2, intervalS: 0.1, timeoutS: 1 }).catch(() => ({ received: 0 }));
  assert.equal(r.received, 0, `${what}: ${from.name} -> ${to.name} should not get through`);
}

/** Starts the backend on each host, points every host at the others and sizes the containers. */
async function startMesh(bed: NetBed, hosts: Array<[BedHost, Record<string, unknown>]>): Promise<HostBackend[]> {
  const backends: HostBackend[] = [];
  try {
    for (const [h, cfg] of hosts) backends.push(await HostBackend.spawn(bed, h, cfg));
    const leases = await Promise.all(backends.map((b) => b.lease()));
    for (const b of backends) {
      const { mtu } = await b.start();
      await b.host.setContainerSubnet(gatewayOf(b.host), mtu);
    }
    await Promise.all(backends.map((b, i) => b.setPeers(leases.filter((_, j) => j !== i))));
    return backends;
  } catch (e) {
    await Promise.all(backends.map((b) => b.stop().catch(() => undefined)));
    throw e;
  }
}

function defineTests(): void {
  describe('backends on namespace hosts', { timeout: 240_000 }, () => {
    let bed: NetBed;
    let h1: BedHost, h2: BedHost, h3: BedHost;
    const running: HostBackend[] = [];
    const track = (bs: HostBackend[]) => (running.push(...bs), bs);

    before(async () => {
      bed = await NetBed.create({ hosts: 3, tag: 'bk' });
      [h1, h2, h3] = bed.hosts;
    });

    after(async () => {
      await Promise.all(running.map((b) => b.stop().catch(() => undefined)));
      const prefix = bed?.prefix;
      await bed?.destroy();
      if (prefix) assert.deepEqual(listNamespaces().filter((n) => n.startsWith(prefix)), []);
    });

    it("the backends' flannel constants are the datapath's (one owner, net/wire.ts), with flannel's values", async () => {
      const dp = await import('../../src/datapath');
      const common = await import('../../src/backend/common');
      assert.equal(common.FLANNEL_DEFAULT_PORT, dp.DEFAULT_PORT);
      assert.equal(common.FLANNEL_ENCAP_OVERHEAD, dp.ENCAP_OVERHEAD);
      assert.deepEqual({ ...dp.DEFAULT_PORT }, { udp: 8285, vxlan: 8472 });
      assert.deepEqual({ ...dp.ENCAP_OVERHEAD }, { udp: 28, vxlan: 50 });
    });

    it('kernel vxlan: device, per-peer entries and container connectivity as flanneld programs them', async () => {
      const cfg = { Type: 'vxlan', Datapath: 'kernel' };
      const [b1, b2] = track(await startMesh(bed, [[h1, cfg], [h2, cfg]]));
      const [a1, a2] = [await b1.attrs(), await b2.attrs()];
      const mac1 = (a1.backendData as { VtepMAC: string }).VtepMAC;
      const mac2 = (a2.backendData as { VtepMAC: string }).VtepMAC;
      assert.deepEqual(a1.backendData, { VNI: 1, VtepMAC: mac1 });

      const dev = await link(bed, h1.ns, 'flannel.1');
      assert.ok(dev, 'flannel.1 exists');
      assert.equal(dev.linkinfo?.info_kind, 'vxlan');
      const d = dev.linkinfo!.info_data;
      assert.deepEqual([d.id, d.local, d.link, d.port, d.learning], [1, h1.underlayIp, 'eth0', 8472, false]);
      assert.equal(dev.mtu, 1450);
      assert.equal(dev.address, mac1, 'the device carries the published VtepMAC');
      assert.ok(dev.flags.includes('UP'));
      const addrs = await json<Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>>(bed, h1.ns, ['ip', '-j', '-4', 'addr', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(addrs[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.0/32']);

      assert.deepEqual(await overlayRoutes(bed, h1.ns), ['10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink']);
      const neigh = await json<Array<{ dst: string; lladdr: string; state: string[] }>>(bed, h1.ns, ['ip', '-j', 'neigh', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(neigh.map((n) => [n.dst, n.lladdr, n.state]), [['10.244.2.0', mac2, ['PERMANENT']]]);
      const fdb = await json<Array<{ mac: string; dst?: string; state?: string }>>(bed, h1.ns, ['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(fdb.filter((f) => f.dst).map((f) => [f.mac, f.dst, f.state]), [[mac2, h2.underlayIp, 'permanent']]);

      await assertPings(bed, h1, h2, 'kernel vxlan');
      await assertPings(bed, h2, h1, 'kernel vxlan');
      const stats = await b1.stats();
      assert.equal(stats.peerCount, 1);
      assert.ok(((stats.counters as Record<string, number>).txPackets ?? 0) >= 3, `device counters: ${JSON.stringify(stats)}`);

      // Idempotent: the same peer set again changes nothing and keeps traffic flowing.
      await b1.setPeers([await b2.lease()]);
      assert.deepEqual(await overlayRoutes(bed, h1.ns), ['10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink']);

      // A peer the kernel refuses (a multicast VtepMAC: no FDB entry) fails alone, and the neighbour
      // it got before its FDB entry failed is removed again; it is retried until withdrawn.
      const bad: WireLease = { subnet: '10.244.9.0/24', attrs: { publicIp: h3.underlayIp, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '01:00:5e:00:00:09' } } };
      await b1.setPeers([bad, await b2.lease()]);
      assert.deepEqual((await b1.stats()).failedPeers, ['10.244.9.0/24']);
      assert.ok(b1.logs.some((l) => l.level === 'error' && l.fields?.subnet === '10.244.9.0/24' && /^bridge fdb replace .*Operation not supported/.test(String(l.fields?.error))), 'failure logged with its command');
      assert.deepEqual(await overlayRoutes(bed, h1.ns), ['10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink']);
      const neighBad = await json<Array<{ dst: string }>>(bed, h1.ns, ['ip', '-j', 'neigh', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(neighBad.map((n) => n.dst), ['10.244.2.0']);
      await assertPings(bed, h1, h2, 'next to a failed peer');
      await b1.setPeers([await b2.lease()]);
      assert.deepEqual((await b1.stats()).failedPeers, []);

      // A peer whose VtepMAC changed gets its neighbour and FDB entry rewritten, the old MAC dropped.
      const moved = '02:00:5e:00:00:99';
      await b1.setPeers([{ ...(await b2.lease()), attrs: { ...a2, backendData: { VNI: 1, VtepMAC: moved } } }]);
      const neighMoved = await json<Array<{ lladdr: string }>>(bed, h1.ns, ['ip', '-j', 'neigh', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(neighMoved.map((n) => n.lladdr), [moved]);
      const fdbMoved = await json<Array<{ mac: string; dst?: string }>>(bed, h1.ns, ['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(fdbMoved.filter((f) => f.dst).map((f) => f.mac), [moved]);
      await b1.setPeers([await b2.lease()]);
      await assertPings(bed, h1, h2, 'after MAC change back');

      // Removing the peer removes its route, neighbour and FDB entry.
      await b1.setPeers([]);
      assert.deepEqual(await overlayRoutes(bed, h1.ns), []);
      assert.deepEqual(await json(bed, h1.ns, ['ip', '-j', 'neigh', 'show', 'dev', 'flannel.1']), []);
      const fdbAfter = await json<Array<{ dst?: string }>>(bed, h1.ns, ['bridge', '-j', 'fdb', 'show', 'dev', 'flannel.1']);
      assert.deepEqual(fdbAfter.filter((f) => f.dst), []);
      await assertNoPing(bed, h1, h2, 'peer removed');

      // A restart of h1 publishes the same MAC, so h2's entries (untouched) still work.
      await b1.stop();
      assert.equal(await link(bed, h1.ns, 'flannel.1'), undefined, 'close() deletes the device');
      assert.deepEqual(await overlayRoutes(bed, h1.ns), []);
      const [b1again] = track(await startMesh(bed, [[h1, cfg]]));
      assert.deepEqual(await b1again.attrs(), a1);
      await b1again.setPeers([await b2.lease()]);
      await assertPings(bed, h1, h2, 'after restart');

      await b1again.stop();
      await b2.stop();
      for (const h of [h1, h2]) {
        assert.equal(await link(bed, h.ns, 'flannel.1'), undefined);
        assert.deepEqual(await overlayRoutes(bed, h.ns), []);
      }
    });

    it('kernel vxlan: an incompatible existing device is recreated; a failed start leaves nothing', async () => {
      await bed.execOk(h3.ns, ['ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '9', 'dstport', '4789', 'local', h3.underlayIp]);
      const [b3] = track(await startMesh(bed, [[h3, { Type: 'vxlan', Datapath: 'kernel' }]]));
      const d = (await link(bed, h3.ns, 'flannel.1'))!.linkinfo!.info_data;
      assert.deepEqual([d.id, d.port, d.link], [1, 8472, 'eth0']);
      assert.ok(b3.logs.some((l) => l.level === 'warn' && /incompatible/.test(l.msg)), 'recreation is logged');
      await b3.stop();

      const bad = track([await HostBackend.spawn(bed, h3, { Type: 'vxlan', Datapath: 'kernel', VNI: 5 }, { name: 'nope0' })])[0];
      await assert.rejects(bad.start(), /nope0/);
      assert.equal(await link(bed, h3.ns, 'flannel.5'), undefined);
      await bad.stop();
    });

    it('ip -batch: failed lines are charged to their own line, also when a line ends the batch early', async () => {
      // Any backend: the child is only a process in h3's namespace to run the batch.
      const [b] = track([await HostBackend.spawn(bed, h3, { Type: 'host-gw' })]);
      const lines = [
        'neigh replace 10.244.77.1 lladdr 02:00:00:00:77:01 dev eth0 nud permanent',
        'route replace 10.244.77.0/24 via 198.19.7.7 dev eth0',
        // iproute2 6.1's `ip neigh` exits on a kernel error: the rest of the batch never runs.
        'neigh del 10.244.77.99 dev eth0',
        'route replace 10.244.78.0/24 via 10.244.77.1 dev eth0 onlink',
        'neigh del 10.244.77.1 dev eth0',
      ];
      const failed = new Map(await b.call<Array<[number, string]>>({ op: 'batch', tool: 'ip', lines }));
      assert.deepEqual([...failed.keys()], [1, 2]);
      assert.match(failed.get(1)!, /Nexthop has invalid gateway/);
      assert.match(failed.get(2)!, /No such file or directory/);
      // The lines after the one that ended the batch ran (again): the route is there, the neighbour gone.
      assert.deepEqual(await overlayRoutes(bed, h3.ns), ['10.244.78.0/24 via 10.244.77.1 dev eth0 onlink']);
      assert.deepEqual(await json(bed, h3.ns, ['ip', '-j', 'neigh', 'show', '10.244.77.1', 'dev', 'eth0']), []);
      await bed.execOk(h3.ns, ['ip', 'route', 'del', '10.244.78.0/24']);
      await b.stop();
    });

    it('userspace vxlan interoperates with the kernel vxlan device', async () => {
      const [u1, k2] = track(
        await startMesh(bed, [
          [h1, { Type: 'vxlan' }],
          [h2, { Type: 'vxlan', Datapath: 'kernel' }],
        ]),
      );
      await assertPings(bed, h1, h2, 'userspace -> kernel vxlan');
      await assertPings(bed, h2, h1, 'kernel -> userspace vxlan');
      // TCP both ways (the kernel peer leaves inner checksums to offload; the datapath completes them).
      const out = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 2 });
      const back = await iperf3Tcp(bed, h1.containerNs, h1.containerIp!, h2.containerNs, { seconds: 2 });
      assert.ok(out.bytes > 10 * 1024 * 1024, `userspace -> kernel vxlan: TCP moved ${out.bytes} bytes`);
      assert.ok(back.bytes > 10 * 1024 * 1024, `kernel -> userspace vxlan: TCP moved ${back.bytes} bytes`);
      const s = await u1.stats();
      assert.equal(s.datapath, 'userspace');
      assert.equal(s.mtu, 1450);
      const peers = s.peers as Array<{ subnet: string; txPackets: number; rxPackets: number }>;
      assert.equal(peers.length, 1);
      assert.equal(peers[0].subnet, subnetOf(h2));
      assert.ok(peers[0].txPackets >= 6 && peers[0].rxPackets >= 6, JSON.stringify(peers[0]));
      // A non-vxlan peer is skipped with one warning, not fatal.
      await u1.setPeers([await k2.lease(), { subnet: subnetOf(h3), attrs: { publicIp: h3.underlayIp, backendType: 'host-gw' } }]);
      await u1.setPeers([await k2.lease(), { subnet: subnetOf(h3), attrs: { publicIp: h3.underlayIp, backendType: 'host-gw' } }]);
      assert.equal(u1.logs.filter((l) => l.level === 'warn' && l.fields?.subnet === subnetOf(h3)).length, 1);
      assert.deepEqual((await u1.stats()).skippedPeers, [subnetOf(h3)]);
      await assertPings(bed, h1, h2, 'after skipped peer');
      await u1.stop();
      await k2.stop();
      assert.equal(await link(bed, h1.ns, 'vxnet0'), undefined, 'TUN removed');
    });

    it('udp: containers reach each other through the userspace datapath', async () => {
      const [b1, b2] = track(await startMesh(bed, [[h1, { Type: 'udp' }], [h2, { Type: 'udp' }]]));
      assert.equal((await b1.stats()).mtu, 1472);
      await assertPings(bed, h1, h2, 'udp');
      await assertPings(bed, h2, h1, 'udp');
      await b1.stop();
      await b2.stop();
      assert.equal(await link(bed, h1.ns, 'vxnet0'), undefined);
    });

    it('host-gw: a route per peer via its underlay address, errors for off-L2 peers, cleanup on close', async () => {
      const cfg = { Type: 'host-gw' };
      const [b1, b2, b3] = track(await startMesh(bed, [[h1, cfg], [h2, cfg], [h3, cfg]]));
      assert.equal((await b1.stats()).mtu, 1500);
      assert.deepEqual(await overlayRoutes(bed, h1.ns), [
        `10.244.2.0/24 via ${h2.underlayIp} dev eth0`,
        `10.244.3.0/24 via ${h3.underlayIp} dev eth0`,
      ]);
      await assertPings(bed, h1, h2, 'host-gw');
      await assertPings(bed, h3, h1, 'host-gw');

      // An off-L2 peer is logged as an error; the others keep working, and h3 is withdrawn.
      const far: WireLease = { subnet: '10.244.9.0/24', attrs: { publicIp: '198.19.7.7', backendType: 'host-gw' } };
      await b1.setPeers([await b2.lease(), far]);
      assert.ok(b1.logs.some((l) => l.level === 'error' && l.fields?.subnet === '10.244.9.0/24'), 'off-L2 peer logged');
      assert.deepEqual((await b1.stats()).failedPeers, ['10.244.9.0/24']);
      assert.deepEqual(await overlayRoutes(bed, h1.ns), [`10.244.2.0/24 via ${h2.underlayIp} dev eth0`]);
      await assertPings(bed, h1, h2, 'host-gw after update');
      await assertNoPing(bed, h1, h3, 'withdrawn peer');

      for (const b of [b1, b2, b3]) await b.stop();
      for (const h of [h1, h2, h3]) assert.deepEqual(await overlayRoutes(bed, h.ns), [], `${h.name} routes removed`);
    });

    it('ip masquerade: flannel rule set in its own chain, effective, idempotent and removable', async () => {
      const [b1] = track(await startMesh(bed, [[h1, { Type: 'host-gw' }]]));
      const nat = async () => (await bed.execOk(h1.ns, ['iptables', '-w', '-t', 'nat', '-S'])).trim().split('\n');
      const before = await nat();
      // Without masquerading the switch has no route back to the container.
      const noMasq = await ping(bed, h1.containerNs, bed.switchIp, { count: 2, intervalS: 0.1, timeoutS: 1 });
      assert.equal(noMasq.received, 0);

      await b1.call({ op: 'masq', network: NETWORK, subnet: subnetOf(h1) });
      const rules = await nat();
      const c = '-m comment --comment "vxnet masq"';
      const ours = rules.filter((r) => r.includes('VXNET-POSTRTG'));
      const rf = (await supportsRandomFully()) ? ' --random-fully' : '';
      assert.deepEqual(ours, [
        '-N VXNET-POSTRTG',
        `-A POSTROUTING ${c} -j VXNET-POSTRTG`,
        `-A VXNET-POSTRTG -m mark --mark 0x4000/0x4000 ${c} -j RETURN`,
        `-A VXNET-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 ${c} -j RETURN`,
        `-A VXNET-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 ${c} -j RETURN`,
        `-A VXNET-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 ${c} -j RETURN`,
        `-A VXNET-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 ${c} -j MASQUERADE${rf}`,
        `-A VXNET-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 ${c} -j MASQUERADE${rf}`,
      ]);
      const masq = await ping(bed, h1.containerNs, bed.switchIp, { count: 2, intervalS: 0.1, timeoutS: 2 });
      assert.equal(masq.received, 2, 'container reaches the outside through MASQUERADE');

      await b1.call({ op: 'masq', network: NETWORK, subnet: subnetOf(h1) });
      assert.deepEqual(await nat(), rules, 'setup again changes nothing');
      await b1.call({ op: 'masq', network: NETWORK, subnet: '10.244.7.0/24' });
      const moved = await nat();
      assert.equal(moved.length, rules.length, 'a new subnet replaces the rules instead of adding');
      assert.ok(moved.some((r) => r.includes('-d 10.244.7.0/24')) && !moved.some((r) => r.includes('10.244.1.0/24')));

      await b1.call({ op: 'unmasq' });
      assert.deepEqual(await nat(), before);
      await b1.call({ op: 'unmasq' });
      assert.deepEqual(await nat(), before, 'teardown is idempotent');
      await b1.stop();
    });
  });
}

const hostArgs = process.env[HOST_ENV];
if (hostArgs) {
  runHost(JSON.parse(hostArgs) as HostArgs).catch((e: Error) => {
    console.error(`backend host: ${e.message}`);
    process.exit(1);
  });
} else {
  defineTests();
}
