// The userspace datapath between namespaced hosts, routes set from TypeScript (no etcd): traffic for
// both encapsulations, interop with the kernel vxlan device, hostile input, and route churn.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { NetBed, BedHost, ping, iperf3Tcp } from '../../src/testbed/netbed';
import { DpHost, settled } from '../../src/testbed/dp-host';
import { addon } from '../../src/datapath/native';
import { ipv4, vxlanFrame, vxlanHeader, ethernet } from '../../src/testbed/packets';

const REPO = path.resolve(__dirname, '..', '..', '..');
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
async function mesh(bed: NetBed, encap: 'udp' | 'vxlan', hosts: BedHost[], extra: { queues?: number; busyPollUs?: number; cpuLocal?: boolean; tunQueueLen?: number } = {}): Promise<DpHost[]> {
  const mtu = encap === 'vxlan' ? 1450 : 1472;
  const dps: DpHost[] = [];
  for (const h of hosts) {
    await h.setContainerSubnet(`10.244.${h.index}.1/24`, mtu);
    dps.push(await DpHost.start(bed, h, { encap, localSubnet: `10.244.${h.index}.0/24`, vtepMac: MAC(h.index), mtu, ...extra }));
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
      const s1 = await settled(() => dps[0].stats());
      const s2 = await settled(() => dps[1].stats());
      assert.ok(s1.txPackets > 1000 && s2.rxPackets > 1000, 'the datapath carried the flow');
      assert.equal(s1.peers[0].txBytes, s1.txBytes, 'per-peer bytes add up');
      for (const s of [s1, s2]) {
        for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
      }
      // Busy polling is bounded: under light request/response traffic (a ping every 100 ms, each
      // answered by a spin of at most busyPollUs) the datapath processes stay nearly idle.
      const cpu = () => dps.reduce((sum, d) => {
        const f = readFileSync(`/proc/${d.child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
        return sum + (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (USER_HZ 100)
      }, 0);
      const cpu0 = cpu();
      const light = await ping(bed, h1.containerNs, h2.containerIp!, { count: 20, intervalS: 0.1 });
      const used = cpu() - cpu0;
      assert.equal(light.received, 20);
      assert.ok(used < 0.5, `both datapath processes used ${used.toFixed(2)} CPU seconds over 2 s of pings`);
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

test('two workers per host, cpuLocal off (multi-queue TUN, SO_REUSEPORT sockets): one peer\'s flows spread by their hash over both ends\' workers, parallel TCP both ways; busy polling off', { timeout: 150000 }, async () => {
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    const dps = await mesh(bed, 'vxlan', [h1, h2], { queues: 2, busyPollUs: 0, cpuLocal: false });
    assert.equal((await dps[0].stats()).offload.cpuLocal, false, 'no steering programs');
    const link = (await bed.execOk(h1.ns, ['ip', '-d', 'link', 'show', 'vxnet0'])).replace(/\s+/g, ' ');
    assert.match(link, /multi_queue/, `a multi-queue TUN: ${link}`);
    assert.match(link, /numqueues 2/, `two queues attached: ${link}`);
    assert.match(link, new RegExp(`qlen ${addon.options.datapath.tunQueueLen.default} `), `the TUN holds the default queue length: ${link}`);
    assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 5, intervalS: 0.05 })).received, 5);
    const out = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 3, streams: 32 });
    // One peer's flows spread over both of the receiver's workers (outer source port by inner-flow
    // hash over 2 x 8 sending sockets, SO_REUSEPORT by 4-tuple) and the sender's TUN queues: 32
    // flows on ~15 distinct outer ports all reaching one receiving socket has odds near 2^-14.
    const [s1, s2] = await Promise.all(dps.map((d) => d.stats()));
    assert.equal(s1.workers.length, 2);
    assert.ok(s1.workers.every((w) => w.txPackets > 100), `every sending worker carried flows: ${JSON.stringify(s1.workers)}`);
    assert.ok(s2.workers.every((w) => w.rxPackets > 100), `every receiving worker got flows: ${JSON.stringify(s2.workers)}`);
    const back = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 3, streams: 4, reverse: true });
    assert.ok(out.bytes > 10 * 1024 * 1024 && back.bytes > 10 * 1024 * 1024, `TCP moved ${out.bytes} and ${back.bytes} bytes`);
    for (const d of dps) {
      const s = await d.stats();
      for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
    }
    for (const d of dps) await d.close();
  });
});

/** The CPUs a task may run on (`Cpus_allowed_list` of /proc/<task>/status, e.g. "0-3,6"). */
function allowedCpus(task: string): number[] {
  const list = /Cpus_allowed_list:\s*(\S+)/.exec(readFileSync(`/proc/${task}/status`, 'utf8'))![1];
  return list.split(',').flatMap((r) => {
    const [a, b] = r.split('-').map(Number);
    return Array.from({ length: (b ?? a) - a + 1 }, (_, i) => a + i);
  });
}

/** The CPUs each `vxnet-wkN` thread of `pid` may run on, by N. */
function workerCpus(pid: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const [name, cpus] of laneThreads(pid)) if (name.startsWith('wk')) out.set(Number(name.slice(2)), cpus);
  return out;
}

/** The CPUs each lane thread (`vxnet-wkN`: light, `vxnet-bkN`: bulk) of `pid` may run on, by wkN / bkN. */
function laneThreads(pid: number): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const tid of execFileSync('ls', [`/proc/${pid}/task`], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
    const m = /^vxnet-((?:wk|bk)\d+)$/.exec(readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
    if (m) out.set(m[1], allowedCpus(`${pid}/task/${tid}`));
  }
  return out;
}

type Stats = Awaited<ReturnType<DpHost['stats']>>;

/** What `worker`'s `kind` lane counted in `dir` between two stats() readings of one host. */
function laneMoved(before: Stats, after: Stats, kind: 'light' | 'bulk', worker: number, dir: 'txPackets' | 'rxPackets'): number {
  const at = (s: Stats) => s.lanes.filter((l) => l.lane === kind && l.worker === worker).reduce((n, l) => n + l[dir], 0);
  return at(after) - at(before);
}

/**
 * Two hosts with two workers each (cpuLocal, the default) in a full mesh, when this process may use
 * two CPUs (cpuLocal steers by CPU; else `t` is skipped); `allowed` is the CPUs it may use.
 */
async function withTwoWorkerMesh(
  t: TestContext,
  encap: 'udp' | 'vxlan',
  fn: (c: { bed: NetBed; h1: BedHost; h2: BedHost; dps: DpHost[]; allowed: number[] }) => Promise<void>,
): Promise<void> {
  const allowed = allowedCpus('self');
  if (allowed.length < 2) {
    t.skip(`needs two CPUs, this process may use ${allowed.length}`);
    return;
  }
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    await fn({ bed, h1, h2, dps: await mesh(bed, encap, [h1, h2], { queues: 2 }), allowed });
  });
}

test('cpuLocal (the default with two workers): each worker pinned to its own CPU; a new flow is placed on the CPU its sender runs on, at both hosts and both ways; TCP sent from two CPUs is never reordered', { timeout: 150000 }, async (t) => {
  await withTwoWorkerMesh(t, 'vxlan', async ({ bed, h1, h2, dps, allowed }) => {
    for (const d of dps) assert.equal((await d.stats()).offload.cpuLocal, true, 'steering in effect (stats().offload)');
    for (const d of dps) {
      const pinned = workerCpus(d.child.pid!);
      assert.deepEqual([...pinned.keys()].sort(), [0, 1], 'two workers');
      assert.deepEqual(pinned.get(0), [allowed[0]], 'worker 0 on the first CPU');
      assert.deepEqual(pinned.get(1), [allowed[1]], 'worker 1 on the second CPU');
    }
    // A ping pinned to CPU c: its requests enter h1's TUN on c (steering program: queue of the CPU),
    // reach h2 on c (veth delivers on the sender's CPU; reuseport program: socket of the CPU), the
    // replies enter h2's TUN on c and come back to h1 on c. Every packet of it on worker k, none on
    // the other worker.
    for (const [k, cpu] of allowed.slice(0, 2).entries()) {
      const before = await Promise.all(dps.map((d) => d.stats()));
      const p = await bed.exec(h1.containerNs, ['taskset', '-c', String(cpu), 'ping', '-c', '20', '-i', '0.02', '-W', '2', h2.containerIp!]);
      assert.match(p.stdout, / 20 received/, p.stdout);
      const after = await Promise.all(dps.map((d) => d.stats()));
      const moved = (h: number, w: number, dir: 'txPackets' | 'rxPackets') => after[h].workers[w][dir] - before[h].workers[w][dir];
      for (const [h, dir] of [[0, 'txPackets'], [1, 'rxPackets'], [1, 'txPackets'], [0, 'rxPackets']] as const) {
        assert.ok(moved(h, k, dir) >= 20, `host ${h + 1} worker ${k} (CPU ${cpu}) ${dir} +${moved(h, k, dir)}`);
        assert.equal(moved(h, 1 - k, dir), 0, `host ${h + 1} worker ${1 - k} ${dir}: nothing of a flow sent from CPU ${cpu}`);
      }
    }
    // TCP with the client on the first CPU and the server on the second: the server's ACKs are sent
    // from its CPU and the client's data partly from the CPU its ACKs are processed on. Steering
    // each packet by the CPU that sent it reordered TCP (tens of thousands of reorderings a second,
    // docs/datapath.md); with the flow table a flow moves only after a pause of 5 ms, when nothing
    // of it can be left in the old worker, so the sender sees no reordering at all. (Flows here do
    // pause that long when the server falls behind, and then follow the CPU that sends next.)
    const before = await Promise.all(dps.map((d) => d.stats()));
    const reorder = async () => {
      const c = await snmp(bed, h1.containerNs);
      return c['TcpExt.TCPSACKReorder'] + c['TcpExt.TCPTSReorder'] + c['TcpExt.TCPRenoReorder'];
    };
    const reorder0 = await reorder();
    const out = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 2, streams: 4, clientCpu: allowed[0], serverCpu: allowed[1] });
    assert.ok(out.bytes > 10 * 1024 * 1024, `TCP moved ${out.bytes} bytes`);
    const after = await Promise.all(dps.map((d) => d.stats()));
    const reordered = (await reorder()) - reorder0;
    assert.ok(reordered < 10, `the TCP senders detected ${reordered} reorderings (SACK, timestamps, Reno)`);
    const carried = (h: number) => after[h].workers.reduce((n, w, i) => n + w.txPackets - before[h].workers[i].txPackets, 0);
    for (const h of [0, 1]) assert.ok(carried(h) > 1000, `host ${h + 1}'s workers carried the flows: +${carried(h)}`);
    // One client thread sends the four streams from one CPU, and h1 keeps them on that CPU's worker;
    // h2's receiving program spreads streams turning bulk together over both workers' bulk lanes
    // (docs/datapath.md, "One sender's streams").
    const bulkRx = (w: number) => laneMoved(before[1], after[1], 'bulk', w, 'rxPackets');
    for (const w of [0, 1]) assert.ok(bulkRx(w) > 1000, `h2 worker ${w}'s bulk lane received streams: +${bulkRx(w)} (the other +${bulkRx(1 - w)})`);
    for (const d of dps) {
      const s = await d.stats();
      for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
    }
    for (const d of dps) await d.close();
  });
});

test('cpuLocal: a request/response flow whose sender moves to another CPU follows it after a pause (5 ms idle), at both hosts and both ways', { timeout: 120000 }, async (t) => {
  await withTwoWorkerMesh(t, 'udp', async ({ bed, h1, h2, dps, allowed }) => {
    // One ping process (one ICMP flow: one identifier), 20 ms apart: placed on worker 0 by its first
    // echo, then moved by the scheduler (here: by us) to the second CPU.
    const count = 50;
    const before = await Promise.all(dps.map((d) => d.stats()));
    const pinger = bed.spawn(h1.containerNs, ['taskset', '-c', String(allowed[0]), 'ping', '-n', '-c', String(count), '-i', '0.02', '-W', '2', h2.containerIp!], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    pinger.stdout!.on('data', (b: Buffer) => (out += b.toString('utf8')));
    const exited = new Promise<number | null>((r) => pinger.once('exit', r));
    const replies = () => (out.match(/bytes from/g) ?? []).length;
    for (const t0 = Date.now(); replies() < 20 && Date.now() - t0 < 10000; ) await new Promise((r) => setTimeout(r, 5));
    assert.ok(replies() >= 20, `20 replies before the move: ${out}`);
    const pid = pinger.pid!;
    assert.equal(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'ping', '`ip netns exec` and taskset exec in place: the child is ping');
    const mid = await Promise.all(dps.map((d) => d.stats()));
    const answered = replies();
    execFileSync('taskset', ['-p', '-c', String(allowed[1]), String(pid)], { stdio: 'ignore' });
    assert.equal(await exited, 0, out);
    const after = await Promise.all(dps.map((d) => d.stats()));
    const moved = (from: typeof before, to: typeof before, h: number, w: number, dir: 'txPackets' | 'rxPackets') => to[h].workers[w][dir] - from[h].workers[w][dir];
    // Echoes sent from the first CPU after `mid`: the one in flight, and one more if the move took
    // longer than the 20 ms interval. Every later echo is sent from the second CPU.
    const slack = 3;
    for (const [h, dir] of [[0, 'txPackets'], [1, 'rxPackets'], [1, 'txPackets'], [0, 'rxPackets']] as const) {
      assert.ok(moved(before, mid, h, 0, dir) >= 20, `before the move: host ${h + 1} worker 0 ${dir} +${moved(before, mid, h, 0, dir)}`);
      assert.equal(moved(before, mid, h, 1, dir), 0, `before the move: host ${h + 1} worker 1 ${dir}`);
      const on1 = moved(mid, after, h, 1, dir);
      const on0 = moved(mid, after, h, 0, dir);
      assert.ok(on1 >= count - answered - slack, `after the move: host ${h + 1} worker 1 ${dir} +${on1} of ${count - answered} (worker 0 +${on0})`);
      assert.ok(on0 <= slack, `after the move: host ${h + 1} worker 0 ${dir} +${on0}: the flow stayed behind`);
    }
    for (const d of dps) await d.close();
  });
});

test('cpuLocal: light and bulk lanes: a bulk transfer moves to the bulk lanes at both hosts, its ACKs too, a ping from the same CPU beside it stays on the light lanes both ways; the lanes\' threads pinned', { timeout: 150000 }, async (t) => {
  await withTwoWorkerMesh(t, 'vxlan', async ({ bed, h1, h2, dps, allowed }) => {
    for (const [i, d] of dps.entries()) {
      const ns = [h1, h2][i].ns;
      const threads = laneThreads(d.child.pid!);
      assert.deepEqual([...threads.keys()].sort(), ['bk0', 'bk1', 'wk0', 'wk1'], 'a light (wk) and a bulk (bk) thread per worker');
      for (const [name, cpus] of threads) assert.deepEqual(cpus, [allowed[Number(name.slice(2))]], `${name} pinned to its worker's CPU`);
      const link = (await bed.execOk(ns, ['ip', '-d', 'link', 'show', 'vxnet0'])).replace(/\s+/g, ' ');
      assert.match(link, /numqueues 4/, `two TUN queues per worker: ${link}`);
      const socks = (await bed.execOk(ns, ['ss', '-Huan', 'sport = :8472'])).trim().split('\n').filter(Boolean);
      assert.equal(socks.length, 4, `a light and a bulk receiving socket per worker: ${socks.join(' | ')}`);
    }
    // Both the bulk transfer and the ping are sent from the first CPU: without lanes they share
    // worker 0's TUN queue at h1 and its socket at h2 (the ping then waits behind the bulk data,
    // docs/datapath.md "Under bulk load").
    const cpu = allowed[0];
    const bulk = iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: 5, streams: 2, clientCpu: cpu });
    bulk.catch(() => undefined);  // awaited below
    await new Promise((r) => setTimeout(r, 1500));  // past the flows' first bursts, which start light
    const before = await Promise.all(dps.map((d) => d.stats()));
    const pings = 60;
    const p = await bed.exec(h1.containerNs, ['taskset', '-c', String(cpu), 'ping', '-n', '-c', String(pings), '-i', '0.02', '-W', '2', h2.containerIp!]);
    let after = await Promise.all(dps.map((d) => d.stats()));
    const lane = (h: number, kind: 'light' | 'bulk', dir: 'txPackets' | 'rxPackets') => laneMoved(before[h], after[h], kind, 0, dir);
    // A lane counts a datagram once its sendmmsg has returned; on a CPU this busy its thread may be
    // preempted between the two while the reply already reached ping (CI saw h2's light lane at 59
    // of 60 replies). Read again until every lane has counted the pings (or 3 s have passed).
    for (let i = 0; i < 30 && !(lane(0, 'light', 'txPackets') >= pings && lane(1, 'light', 'txPackets') >= pings &&
                                lane(0, 'light', 'rxPackets') >= pings && lane(1, 'light', 'rxPackets') >= pings); ++i) {
      await new Promise((r) => setTimeout(r, 100));
      after = await Promise.all(dps.map((d) => d.stats()));
    }
    const out = await bulk;
    assert.match(p.stdout, new RegExp(` ${pings} received`), p.stdout);
    assert.ok(out.bytes > 10 * 1024 * 1024, `TCP moved ${out.bytes} bytes`);
    const shown = JSON.stringify(after.map((s, h) => s.lanes.map((l) => `${l.lane}${l.worker} tx+${l.txPackets - before[h].lanes.find((b) => b.lane === l.lane && b.worker === l.worker)!.txPackets} rx+${l.rxPackets - before[h].lanes.find((b) => b.lane === l.lane && b.worker === l.worker)!.rxPackets}`)));
    // The data: h1 sends it on worker 0's bulk lane, h2 receives at least one of the two streams
    // there (the other may go to worker 1's: the receiving side spreads streams turning bulk
    // together); of the light lane's packets in that direction all but a few are the pings (a flow
    // that pauses for 50 ms starts over light).
    for (const [h, dir] of [[0, 'txPackets'], [1, 'rxPackets']] as const) {
      assert.ok(lane(h, 'bulk', dir) > 20 * lane(h, 'light', dir) && lane(h, 'bulk', dir) > 10000, `host ${h + 1} ${dir}: the bulk data on the bulk lane ${shown}`);
      assert.ok(lane(h, 'light', dir) >= pings, `host ${h + 1} ${dir}: every echo request on the light lane ${shown}`);
      assert.ok(lane(h, 'light', dir) <= pings + 40, `host ${h + 1} ${dir}: little else on the light lane ${shown}`);
    }
    // The other way: h2 sends the replies beside the transfer's ACKs, h1 receives them; the replies
    // on the light lanes, the ACKs (a bulk flow too) on the bulk lanes.
    for (const [h, dir] of [[1, 'txPackets'], [0, 'rxPackets']] as const) {
      assert.ok(lane(h, 'light', dir) >= pings, `host ${h + 1} ${dir}: every echo reply on the light lane ${shown}`);
      assert.ok(lane(h, 'bulk', dir) > 1000, `host ${h + 1} ${dir}: the ACKs on the bulk lane ${shown}`);
    }
    for (const d of dps) {
      const s = await d.stats();
      for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
    }
    for (const d of dps) await d.close();
  });
});

test('cpuLocal with more workers than CPUs falls back to the flow hash: no worker pinned, no steering programs, traffic flows', { timeout: 60000 }, async (t) => {
  const allowed = allowedCpus('self');
  if (allowed.length + 1 > 16) {
    t.skip(`${allowed.length} CPUs: more workers than that exceed the queue limit`);
    return;
  }
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    const dps = await mesh(bed, 'udp', [h1, h2], { queues: allowed.length + 1, cpuLocal: true, tunQueueLen: 100 });
    const link = (await bed.execOk(h1.ns, ['ip', 'link', 'show', 'vxnet0'])).replace(/\s+/g, ' ');
    assert.match(link, /qlen 100 /, `tunQueueLen sets the TUN's queue length: ${link}`);
    for (const d of dps) {
      assert.equal((await d.stats()).offload.cpuLocal, false, 'steering not in effect');
      for (const [w, cpus] of workerCpus(d.child.pid!)) assert.deepEqual(cpus, allowed, `worker ${w} may run on every CPU`);
    }
    assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 5, intervalS: 0.05 })).received, 5);
    for (const d of dps) await d.close();
  });
});

const PKTGEN = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'pktgen');

/** Datagrams that reached the UDP layer in `ns` (read by a socket, or dropped for a full buffer), and checksum errors. */
async function udpIn(bed: NetBed, ns: string): Promise<{ datagrams: number; csumErrors: number }> {
  const rows = (await bed.execOk(ns, ['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Udp: '));
  const names = rows[0].split(/\s+/);
  const vals = rows[1].split(/\s+/).map(Number);
  const get = (n: string) => vals[names.indexOf(n)];
  return { datagrams: get('InDatagrams') + get('RcvbufErrors'), csumErrors: get('InCsumErrors') };
}

test('UDP offloads: a UDP_SEGMENT sender\'s super-packets are cut (TUN_F_USO4), datagram trains reach the container as GSO_UDP_L4, every datagram intact', { timeout: 120000 }, async () => {
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    const dps = await mesh(bed, 'vxlan', [h1, h2]);
    const sink = bed.spawn(h2.containerNs, [PKTGEN, '--sink', '9'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve, reject) => {
        sink.stdout!.once('data', () => resolve());
        sink.once('exit', (c) => reject(new Error(`sink exited ${c}`)));
      });
      const before = await udpIn(bed, h2.containerNs);
      // 20 datagrams of 1000 bytes per send, paced well below what the bed can carry.
      const g = await bed.execOk(h1.containerNs, [PKTGEN, '--dst', h2.containerIp!, '--payload', '1000', '--gso', '20', '--threads', '1', '--seconds', '1', '--pps', '200', '--paced-batch', '1']);
      const sent = (JSON.parse(g.trim().split('\n').pop()!) as { sent: number }).sent;
      await new Promise((r) => setTimeout(r, 500));
      const after = await udpIn(bed, h2.containerNs);
      assert.ok(sent >= 1000, `pktgen sent ${sent} datagrams`);
      assert.equal(after.datagrams - before.datagrams, sent, 'every datagram arrives, none merged or lost');
      assert.equal(after.csumErrors - before.csumErrors, 0, 'no UDP checksum errors in the container');
      const [s1, s2] = await Promise.all(dps.map((d) => d.stats()));
      if (s1.offload.tunUso) assert.ok(s1.tunUsoReads > 0, `UDP super-packets read from the TUN: ${s1.tunUsoReads}`);
      else assert.equal(s1.tunUsoReads, 0);
      assert.ok(s2.tunGroWrites > 0, `datagram trains written as GSO_UDP_L4: ${s2.tunGroWrites}`);
      for (const s of [s1, s2]) for (const [reason, n] of Object.entries(s.drops)) assert.equal(n, 0, `no ${reason}`);
    } finally {
      sink.kill('SIGTERM');
      for (const d of dps) await d.close();
    }
  });
});

test('a full TUN queue: what the kernel drops while the worker cannot read is counted as tx_tun_queue_full, equal to the TUN\'s own TX dropped', { timeout: 120000 }, async () => {
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    const dps = await mesh(bed, 'udp', [h1, h2], { queues: 1, tunQueueLen: 16 });
    const kernelDropped = async () => {
      const j = JSON.parse(await bed.execOk(h1.ns, ['ip', '-s', '-j', 'link', 'show', 'dev', 'vxnet0'])) as Array<{ stats64: { tx: { dropped: number } } }>;
      return j[0].stats64.tx.dropped;
    };
    try {
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 3, intervalS: 0.1 })).received, 3);
      assert.equal((await dps[0].stats()).drops.tx_tun_queue_full, 0, 'nothing dropped at the TUN yet');
      // The worker stopped (the whole datapath process), 2000 datagrams offered at 2000/s: the
      // 16-packet queue fills and the kernel drops the rest.
      process.kill(dps[0].child.pid!, 'SIGSTOP');
      let sent = 0;
      try {
        const g = await bed.execOk(h1.containerNs, [PKTGEN, '--dst', h2.containerIp!, '--port', '9', '--threads', '1', '--seconds', '1', '--pps', '2000', '--paced-batch', '16']);
        sent = (JSON.parse(g.trim().split('\n').pop()!) as { sent: number }).sent;
      } finally {
        process.kill(dps[0].child.pid!, 'SIGCONT');
      }
      await new Promise((r) => setTimeout(r, 300));
      const s = await dps[0].stats();
      const k = await kernelDropped();
      assert.ok(sent >= 1000, `pktgen sent ${sent} datagrams`);
      assert.ok(s.drops.tx_tun_queue_full >= sent - 16, `at most the queue's 16 packets survive: ${s.drops.tx_tun_queue_full} of ${sent} dropped`);
      assert.equal(s.drops.tx_tun_queue_full, k, 'the drop count is the TUN\'s own TX dropped');
      for (const [reason, n] of Object.entries(s.drops)) if (reason !== 'tx_tun_queue_full') assert.equal(n, 0, `no ${reason}`);
      assert.equal((await ping(bed, h1.containerNs, h2.containerIp!, { count: 3, intervalS: 0.1 })).received, 3, 'forwarding goes on');
      assert.equal((await dps[0].stats()).drops.tx_tun_queue_full, k, 'no further drops');
    } finally {
      for (const d of dps) await d.close();
    }
  });
});

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

/** One's-complement checksum (RFC 1071) of `parts` together. */
function csum(...parts: Buffer[]): number {
  const b = Buffer.concat(parts);
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** TCP pseudo-header (RFC 793) of an IPv4 packet. */
function tcpPseudo(ip: Buffer): Buffer {
  const ihl = (ip[0] & 15) * 4;
  const ph = Buffer.alloc(12);
  ip.copy(ph, 0, 12, 20);
  ph[9] = 6;
  ph.writeUInt16BE(ip.readUInt16BE(2) - ihl, 10);
  return ph;
}

/** Inner IPv4/TCP packets of the complete VXLAN datagrams from `src` in a pcap, with whether their TCP checksum verifies. */
function innerTcpInPcap(file: string, src: string): Array<{ ok: boolean; len: number }> {
  const b = readFileSync(file);
  const out: Array<{ ok: boolean; len: number }> = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const incl = b.readUInt32LE(off + 8);
    const orig = b.readUInt32LE(off + 12);
    const f = b.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (incl !== orig || f.length < 14 + 20 + 8 + 22 + 40 || f.readUInt16BE(12) !== 0x0800) continue;
    if ([...f.subarray(26, 30)].join('.') !== src) continue;
    // One capture may hold a UDP GSO super-datagram (a veth passes it on whole): VXLAN datagrams
    // back to back, each VXLAN + Ethernet + the inner packet's total length.
    for (let d = 14 + (f[14] & 15) * 4 + 8; d + 22 + 40 <= f.length; ) {
      const inner = f.subarray(d + 22);
      const tot = inner.readUInt16BE(2);
      if (tot < 40 || tot > inner.length) break;
      d += 22 + tot;
      if (inner[9] !== 6) continue;
      const ip = inner.subarray(0, tot);
      out.push({ ok: csum(tcpPseudo(ip), ip.subarray((ip[0] & 15) * 4)) === 0, len: tot });
    }
  }
  return out;
}

/** The kernel's SNMP counters of a namespace (/proc/net is per namespace), e.g. "Tcp.InCsumErrors". */
async function snmp(bed: NetBed, ns: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = (await bed.execOk(ns, ['cat', file])).trim().split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const [kind, ...names] = lines[i].split(/\s+/);
      const values = lines[i + 1].split(/\s+/).slice(1);
      names.forEach((n, j) => (out[`${kind.replace(/:$/, '')}.${n}`] = Number(values[j])));
    }
  }
  return out;
}

/** Host B as flannel's vxlan backend programs it, by hand: nolearning device, /32 address, onlink route, permanent neighbour and FDB entry. */
async function kernelVxlanHost(bed: NetBed, b: BedHost, peer: { subnet: string; underlayIp: string; mac: string }): Promise<string> {
  const k = (argv: string[]) => bed.execOk(b.ns, argv);
  const gw = peer.subnet.replace(/\/.*/, '');
  await k(['ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'local', b.underlayIp, 'dev', 'eth0', 'dstport', '8472', 'nolearning']);
  await k(['ip', 'link', 'set', 'flannel.1', 'mtu', '1450', 'up']);
  await k(['ip', 'addr', 'add', `10.244.${b.index}.0/32`, 'dev', 'flannel.1']);
  await k(['ip', 'route', 'add', peer.subnet, 'via', gw, 'dev', 'flannel.1', 'onlink']);
  await k(['ip', 'neigh', 'add', gw, 'lladdr', peer.mac, 'dev', 'flannel.1', 'nud', 'permanent']);
  await k(['bridge', 'fdb', 'add', peer.mac, 'dev', 'flannel.1', 'dst', peer.underlayIp]);
  return (JSON.parse(await k(['ip', '-j', 'link', 'show', 'flannel.1'])) as Array<{ address: string }>)[0].address;
}

test('vxlan interop: vxnet and a kernel vxlan device set up as flannel does: ping and TCP both ways, wire format', { timeout: 180000 }, async () => {
  await withBed(2, async (bed) => {
    const [a, b] = bed.hosts;
    await a.setContainerSubnet('10.244.1.1/24', 1450);
    await b.setContainerSubnet('10.244.2.1/24', 1450);
    const vx = await DpHost.start(bed, a, { encap: 'vxlan', localSubnet: '10.244.1.0/24', vtepMac: MAC(1) });
    const kmac = await kernelVxlanHost(bed, b, { subnet: '10.244.1.0/24', underlayIp: a.underlayIp, mac: MAC(1) });
    await vx.setRoutes([{ subnet: '10.244.2.0/24', publicIp: b.underlayIp, vtepMac: kmac }]);

    const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-pcap-'));
    const stopDump = async (d: ReturnType<NetBed['spawn']>) => {
      if (d.exitCode === null && d.signalCode === null) {
        const gone = new Promise((r) => d.once('exit', r));
        d.kill('SIGINT');
        await gone;
      }
    };
    try {
      const pcap = path.join(dir, 'underlay.pcap');
      const dump = bed.spawn(b.ns, ['tcpdump', '-i', 'eth0', '-nn', '-U', '-s', '128', '-w', pcap, 'udp port 8472'], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal((await ping(bed, a.containerNs, b.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'vxnet -> kernel');
      assert.equal((await ping(bed, b.containerNs, a.containerIp!, { count: 4, intervalS: 0.2 })).received, 4, 'kernel -> vxnet');
      await new Promise((r) => setTimeout(r, 300));
      await stopDump(dump);
      const pkts = vxlanInPcap(pcap);
      const fromVxnet = pkts.filter((p) => p.src === a.underlayIp);
      const fromKernel = pkts.filter((p) => p.src === b.underlayIp);
      assert.ok(fromVxnet.length >= 4 && fromKernel.length >= 4, `captured ${fromVxnet.length} + ${fromKernel.length} datagrams`);
      for (const p of fromVxnet) {
        assert.deepEqual([p.dport, p.flags, p.vni, p.innerDst, p.innerSrc, p.innerType], [8472, 0x08, 1, kmac, MAC(1), 0x0800]);
      }
      for (const p of fromKernel) assert.deepEqual([p.dport, p.vni, p.innerDst, p.innerSrc], [8472, 1, MAC(1), kmac]);

      // TCP both ways. vxnet puts complete TCP checksums on the wire (a full capture of the start of
      // its flow verifies); the kernel peer leaves them to offload, which nothing finishes on a veth
      // underlay, and vxnet completes them on receipt: no container may count a checksum error.
      const before = { a: await snmp(bed, a.containerNs), b: await snmp(bed, b.containerNs) };
      const full = path.join(dir, 'tcp.pcap');
      const tcpDump = bed.spawn(b.ns, ['tcpdump', '-i', 'eth0', '-nn', '-U', '-s', '0', '-c', '200', '-w', full, `udp port 8472 and src host ${a.underlayIp}`], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 1000));
      const out = await iperf3Tcp(bed, b.containerNs, b.containerIp!, a.containerNs, { seconds: 2 });
      await stopDump(tcpDump);
      const back = await iperf3Tcp(bed, a.containerNs, a.containerIp!, b.containerNs, { seconds: 2 });
      assert.ok(out.bytes > 10 * 1024 * 1024, `vxnet -> kernel: TCP moved ${out.bytes} bytes`);
      assert.ok(back.bytes > 10 * 1024 * 1024, `kernel -> vxnet: TCP moved ${back.bytes} bytes`);
      const segs = innerTcpInPcap(full, a.underlayIp);
      assert.ok(segs.length >= 50 && segs.some((x) => x.len > 1000), `captured ${segs.length} full TCP segments from vxnet`);
      assert.deepEqual(segs.filter((x) => !x.ok), [], 'every inner TCP checksum vxnet sent verifies');
      const after = { a: await snmp(bed, a.containerNs), b: await snmp(bed, b.containerNs) };
      for (const side of ['a', 'b'] as const) {
        for (const c of ['Tcp.InCsumErrors', 'Udp.InCsumErrors']) assert.equal(after[side][c] - before[side][c], 0, `${c} in container ${side}`);
      }
      const s = await vx.stats();
      for (const [reason, n] of Object.entries(s.drops)) if (reason.startsWith('rx_')) assert.equal(n, 0, `no ${reason}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    await vx.close();
  });
});

/** An IPv4/TCP segment from `src` to `dst` (ACK, optional payload) with a correct checksum, and its pseudo-header sum. */
function tcpSegment(src: string, dst: string, sport: number, dport: number, seq: number, payload: Buffer) {
  const tcp = Buffer.alloc(20 + payload.length);
  tcp.writeUInt16BE(sport, 0);
  tcp.writeUInt16BE(dport, 2);
  tcp.writeUInt32BE(seq >>> 0, 4);
  tcp.writeUInt32BE(1, 8);
  tcp[12] = 5 << 4;
  tcp[13] = 0x10; // ACK
  tcp.writeUInt16BE(512, 14);
  payload.copy(tcp, 20);
  const pkt = ipv4({ src, dst, proto: 6, payload: tcp, id: seq & 0xffff });
  const ph = tcpPseudo(pkt);
  pkt.writeUInt16BE(csum(ph, tcp), 36);
  return { pkt, pseudoSum: ~csum(ph) & 0xffff };
}

test('checksums from the wire: a bad TCP checksum reaches the container as an error, an offloaded one is completed', { timeout: 150000 }, async () => {
  await withBed(2, async (bed) => {
    const [h1, h2] = bed.hosts;
    const dps = await mesh(bed, 'vxlan', [h1, h2]);
    const n = 20;
    // Consecutive full-sized data segments of one flow: exactly what the receive coalescer merges.
    const flow = (port: number, mutate: (seg: ReturnType<typeof tcpSegment>) => Buffer) =>
      Array.from({ length: n }, (_, i) => mutate(tcpSegment(h1.containerIp!, h2.containerIp!, port, 9, 1000 + i * 1398, Buffer.alloc(1398, i))));
    const good = flow(40001, (s) => s.pkt);
    const bad = flow(40002, (s) => {
      s.pkt[100] ^= 0x5a; // payload corrupted after the checksum was computed
      return s.pkt;
    });
    const offloaded = flow(40003, (s) => {
      s.pkt.writeUInt16BE(s.pseudoSum, 36);
      return s.pkt;
    });
    // Sent from h1, the real peer (right source address, VXLAN to h2's VTEP), as ONE UDP GSO send:
    // h2's datapath receives the whole flow in one batch, as it does a peer's TSO output.
    const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-gso-'));
    const gsoSend = path.join(dir, 'gso-send');
    execFileSync('g++', ['-std=c++17', '-O1', '-Wall', '-Wextra', '-Werror', path.join(REPO, 'native', 'test', 'gso-send.cc'), '-o', gsoSend]);
    let batch = 0;
    const send = async (pkts: Buffer[]) => {
      const file = path.join(dir, `batch${++batch}.hex`);
      writeFileSync(file, pkts.map((p) => vxlanFrame(1, MAC(2), MAC(1), p).toString('hex')).join('\n') + '\n');
      assert.deepEqual(JSON.parse(await bed.execOk(h1.ns, [gsoSend, h2.underlayIp, '8472', file])), { sent: pkts.length });
    };
    const settle = () => new Promise((r) => setTimeout(r, 500));
    const delta = async (pkts: Buffer[]) => {
      const s0 = await snmp(bed, h2.containerNs);
      const d0 = await dps[1].stats();
      await send(pkts);
      await settle();
      const s1 = await snmp(bed, h2.containerNs);
      const d1 = await dps[1].stats();
      return {
        csumErrors: s1['Tcp.InCsumErrors'] - s0['Tcp.InCsumErrors'],
        inSegs: s1['Tcp.InSegs'] - s0['Tcp.InSegs'],
        rsts: s1['Tcp.OutRsts'] - s0['Tcp.OutRsts'],
        vxnetRx: d1.rxPackets - d0.rxPackets,
        completed: d1.rxCsumCompleted - d0.rxCsumCompleted,
        merged: d1.tunGroWrites - d0.tunGroWrites,
      };
    };
    // Good segments for a port nobody listens on: accepted by TCP, answered with a reset.
    const g = await delta(good);
    assert.equal(g.vxnetRx, n, 'vxnet received every good segment');
    assert.equal(g.csumErrors, 0, 'good segments verify');
    assert.ok(g.merged >= 1, 'the receive coalescer merged the good flow (the path under test ran)');
    assert.ok(g.inSegs >= 1 && g.rsts >= 1, `good segments reach TCP (${g.inSegs} in, ${g.rsts} resets)`);
    // Corrupted segments: never merged, never marked valid; the container's TCP counts each as a
    // checksum error and answers none of them.
    const b = await delta(bad);
    assert.equal(b.vxnetRx, n, 'vxnet received every corrupted segment');
    assert.equal(b.completed, 0, 'a wrong checksum is never completed');
    assert.equal(b.merged, 0, 'corrupted segments are never merged');
    assert.equal(b.csumErrors, n, 'every corrupted segment is a checksum error in the container');
    assert.equal(b.rsts, 0, 'no corrupted segment was taken as valid');
    // Offloaded form (pseudo-header sum only, as a kernel peer on a veth underlay sends): completed.
    const o = await delta(offloaded);
    assert.equal(o.completed, n, 'every offloaded checksum completed');
    assert.equal(o.csumErrors, 0, 'completed segments verify');
    assert.ok(o.merged >= 1, 'completed segments coalesce like good ones');
    assert.ok(o.inSegs >= 1 && o.rsts >= 1, `completed segments reach TCP (${o.inSegs} in, ${o.rsts} resets)`);
    for (const d of dps) await d.close();
    rmSync(dir, { recursive: true, force: true });
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
