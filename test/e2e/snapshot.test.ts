// Restarting while etcd is down: the lease snapshot on namespaced hosts with a real etcd and real
// daemons (src/testbed/cluster.ts). etcd stopped + kill -9 + restart forwards from the snapshot within
// a second; reconnecting reconciles (added and deleted peers, compaction, renewal) without dropping
// flows; corrupt and foreign snapshots are ignored with one warning; leases whose PublicIP lies inside
// the overlay network are refused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Cluster, sleep } from '../../src/testbed/cluster';
import type { BedHost } from '../../src/testbed/netbed';
import { parsePing, ping } from '../../src/testbed/traffic';
import { parseCidr } from '../../src/net/ip';
import { decodeSnapshot, snapshotPath } from '../../src/subnet/snapshot';
import type { DaemonStatus } from '../../src/daemon/status';

const NETWORK = '10.244.0.0/16';
const PREFIX = '/coreos.com/network';

function leaseKeyOf(subnet: string): string {
  return `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
}

async function withLogs<T>(c: Cluster | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (c && err instanceof Error) {
      const tails = [...c.daemons.values()].map((d) => `--- ${d.host.name} (pid ${d.pid}) ---\n${d.output().split('\n').slice(-30).join('\n')}`);
      err.message += `\n${tails.join('\n')}`;
    }
    throw err;
  }
}

async function assertReach(c: Cluster, from: BedHost, to: BedHost, label = ''): Promise<void> {
  let last;
  for (let attempt = 0; attempt < 5; attempt++) {
    last = await ping(c.bed, from.containerNs, to.containerIp as string, { count: 3, intervalS: 0.2, timeoutS: 2 });
    if (last.received === last.transmitted) return;
    await sleep(500);
  }
  assert.fail(`${label} ${from.name} container -> ${to.containerIp}: ${last?.received}/${last?.transmitted} replies`);
}

/** Makes etcd unreachable from one host only (its own namespace's OUTPUT chain), or reachable again. */
async function blockEtcd(c: Cluster, h: BedHost, on: boolean): Promise<void> {
  const port = new URL(c.endpoint).port;
  const rule = ['OUTPUT', '-p', 'tcp', '-d', c.bed.switchIp, '--dport', port, '-j', 'REJECT', '--reject-with', 'tcp-reset'];
  await c.bed.execOk(h.ns, ['iptables', on ? '-I' : '-D', ...rule]);
}

function snapshotFile(c: Cluster, h: BedHost): string {
  return snapshotPath(path.dirname(c.subnetFile(h)), c.subnetFile(h));
}

const peerSubnets = (st: DaemonStatus) => st.peers.map((p) => p.subnet).sort();

/** node -e script: GET argv[1], print "<status> <body>". */
const HTTP_GET = "require('http').get(process.argv[1], (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => process.stdout.write(r.statusCode + ' ' + b)); })";

/** Log lines (logfmt) of a daemon that mention the snapshot being ignored. */
function ignoredSnapshotLines(out: string): string[] {
  return out.split('\n').filter((l) => /ignoring the lease snapshot/.test(l));
}

describe('restart while etcd is down (lease snapshot)', { timeout: 600_000 }, () => {
  let c: Cluster;
  const subnetOf = new Map<number, string>();

  before(async () => {
    c = await Cluster.create({ hosts: 3, tag: 'snrest', netConf: { Network: NETWORK, Backend: { Type: 'vxlan' } } });
    await withLogs(c, async () => {
      for (const i of [1, 2, 3]) await c.startDaemon(c.host(i));
      for (const i of [1, 2, 3]) subnetOf.set(i, (await c.status(c.host(i))).lease.subnet);
      await c.waitForMesh(30_000);
    });
  });

  after(async () => {
    await c?.destroy();
  });

  test('the snapshot is written beside the subnet file and follows the leases; with etcd up a restart ignores it', { timeout: 60_000 }, (t) =>
    withLogs(c, async () => {
      const h1 = c.host(1);
      const file = snapshotFile(c, h1);
      assert.equal(path.dirname(file), path.dirname(c.subnetFile(h1)), 'default state dir is that of --subnet-file');
      const want = [1, 2, 3].map((i) => leaseKeyOf(subnetOf.get(i) as string)).sort();
      let snap = decodeSnapshot(readFileSync(file), file);
      for (let i = 0; i < 50 && JSON.stringify(snap.records.map((r) => r.key).sort()) !== JSON.stringify(want); i++) {
        await sleep(100);
        snap = decodeSnapshot(readFileSync(file), file);
      }
      assert.deepEqual(snap.records.map((r) => r.key).sort(), want, 'every lease, ours included');
      assert.equal(snap.prefix, PREFIX);
      assert.equal(JSON.parse(snap.configText).Network, NETWORK);
      assert.equal(`${snap.own.subnet.ip}/${snap.own.subnet.prefixLen}`, `${parseCidr(subnetOf.get(1) as string).ip}/24`);
      assert.equal(snap.own.attrs.publicIp, h1.underlayIp);
      const etcdRev = Number(JSON.parse(await c.etcdctl(['get', leaseKeyOf(subnetOf.get(1) as string), '-w', 'json'])).header.revision);
      assert.ok(snap.revision > 0 && snap.revision <= etcdRev, `snapshot revision ${snap.revision} <= etcd ${etcdRev}`);
      for (const r of snap.records) assert.ok(r.modRevision > 0 && r.createRevision > 0 && r.modRevision <= snap.revision);

      // With etcd up, a restart takes the normal path (the snapshot only waits in the wings).
      assert.equal(await c.stopDaemon(h1, 'SIGTERM'), 0);
      const proc = await c.startDaemon(h1, { args: ['--log-level=debug'] });
      assert.match(proc.output(), /acquired lease.*reason="previous subnet, still ours"/);
      const probe = /etcd answered the startup probe; the snapshot is not needed" ms=(\d+)/.exec(proc.output());
      assert.ok(probe, proc.output());
      t.diagnostic(`etcd answered the startup probe in ${probe[1]} ms`);
      assert.equal((await c.status(h1)).etcd.snapshotFrom, undefined);
      await c.waitForMesh(30_000);
    }),
  );

  test('etcd stopped, kill -9, restart: same subnet, ping to a peer within 1 s, status says so; etcd back: reconciled and renewed', { timeout: 180_000 }, (t) =>
    withLogs(c, async () => {
      const [h1, h2] = [c.host(1), c.host(2)];
      const sn1 = subnetOf.get(1) as string;
      try {
        c.etcd.kill9();
        assert.equal(await c.stopDaemon(h1, 'SIGKILL'), 128 + 9);
        // One ping process from before the spawn: the first reply's timestamp (-D) bounds the restart.
        const pinger = c.bed.spawn(h1.containerNs, ['ping', '-n', '-D', '-i', '0.02', '-W', '1', '-c', '250', h2.containerIp as string], { stdio: ['ignore', 'pipe', 'pipe'] });
        let pingOut = '';
        pinger.stdout?.on('data', (b: Buffer) => (pingOut += b.toString()));
        const pingDone = new Promise<void>((r) => pinger.once('exit', () => r()));
        await sleep(300);
        assert.ok(!/bytes from/.test(pingOut), `no reply before the restart:\n${pingOut}`);
        const spawnedAt = Date.now();
        const proc = await c.startDaemon(h1, { waitReady: false });
        await pingDone;
        const first = /^\[(\d+\.\d+)\] \d+ bytes from/m.exec(pingOut);
        assert.ok(first, `a reply after the restart:\n${pingOut.slice(-2000)}`);
        const afterMs = Number(first[1]) * 1000 - spawnedAt;
        t.diagnostic(`first reply ${afterMs.toFixed(0)} ms after the spawn`);
        // Where the time went: each startup log line, relative to the spawn.
        for (const line of proc.output().split('\n').slice(0, 8)) {
          const at = /^time=(\S+)/.exec(line);
          if (at) t.diagnostic(`+${Date.parse(at[1]) - spawnedAt} ms ${line.replace(/^time=\S+ /, '').slice(0, 100)}`);
        }
        assert.ok(afterMs < 1000, `first reply ${afterMs.toFixed(0)} ms after the spawn`);

        const st = await c.waitReady(proc, 20_000);
        assert.equal(st.lease.subnet, sn1, 'same subnet');
        assert.equal(st.etcd.state, 'unreachable');
        assert.ok(st.etcd.snapshotFrom, 'status names the snapshot');
        assert.deepEqual(peerSubnets(st), [2, 3].map((i) => subnetOf.get(i) as string).sort());
        assert.ok(st.peers.every((p) => p.installed), 'peers installed from the snapshot');
        const table = await c.statusTable(h1);
        assert.match(table, /^etcd\s+UNREACHABLE .*etcd unreachable, serving snapshot from \d{4}-\d\d-\d\dT/m);
        assert.equal(ignoredSnapshotLines(proc.output()).length, 0);
        const health = await c.bed.execOk(h1.ns, [process.execPath, '-e', HTTP_GET, 'http://127.0.0.1:8286/healthz']);
        assert.match(health, /^200 ok \(etcd unreachable, serving snapshot from \d{4}-/, 'degraded but healthy');
        await assertReach(c, c.host(3), h1, 'a peer reaches the restarted host');
      } finally {
        if (!c.etcd.running) await c.etcd.restart();
      }
      const st = await c.waitFor(h1, 'reconciled and renewed', (s) => s.etcd.state === 'connected' && !s.etcd.snapshotFrom && s.lease.renewals >= 1, 90_000);
      assert.equal(st.lease.subnet, sn1);
      assert.equal(st.lease.state, 'held');
      assert.match(await c.statusTable(h1), /^etcd\s+connected/m);
      await assertReach(c, h1, h2);
    }),
  );

  test('partitioned from etcd: a peer deleted and one added meanwhile, etcd compacted; reconnect reconciles without dropping flows', { timeout: 240_000 }, () =>
    withLogs(c, async () => {
      const [h1, h2, h3] = [c.host(1), c.host(2), c.host(3)];
      const sn3 = subnetOf.get(3) as string;
      let blocked = false;
      try {
        assert.equal(await c.stopDaemon(h1, 'SIGKILL'), 128 + 9);
        await blockEtcd(c, h1, true);
        blocked = true;
        await c.startDaemon(h1);
        const st0 = await c.status(h1);
        assert.equal(st0.etcd.state, 'unreachable');
        assert.ok(st0.etcd.snapshotFrom);
        assert.equal(st0.lease.subnet, subnetOf.get(1));

        // Meanwhile in etcd: h3 leaves (lease deleted), h4 joins, and history is compacted.
        assert.equal(await c.stopDaemon(h3), 0);
        assert.equal((await c.etcdctl(['del', leaseKeyOf(sn3)])).trim(), '1');
        const h4 = await c.bed.addHost();
        await c.startDaemon(h4);
        const sn4 = (await c.status(h4)).lease.subnet;
        subnetOf.set(4, sn4);
        const rev = Number(JSON.parse(await c.etcdctl(['get', leaseKeyOf(sn4), '-w', 'json'])).header.revision);
        await c.etcdctl(['compact', String(rev)]);
        const stale = await c.status(h1);
        assert.ok(stale.peers.some((p) => p.subnet === sn3), 'h1 does not know yet');
        assert.ok(!stale.peers.some((p) => p.subnet === sn4));

        // A flow to a peer that stays (h2) runs across the reconnect.
        const tx0 = (await c.status(h1)).peers.find((p) => p.subnet === subnetOf.get(2))?.txPackets ?? 0;
        const pinger = c.bed.spawn(h1.containerNs, ['ping', '-n', '-i', '0.1', '-W', '2', h2.containerIp as string], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        pinger.stdout?.on('data', (b: Buffer) => (out += b.toString()));
        const done = new Promise<void>((r) => pinger.once('exit', () => r()));
        await sleep(1000);
        await blockEtcd(c, h1, false);
        blocked = false;
        let st: DaemonStatus;
        try {
          st = await c.waitFor(
            h1,
            `${sn4} in, ${sn3} out, etcd connected, lease renewed`,
            (s) => s.etcd.state === 'connected' && !s.etcd.snapshotFrom && s.lease.renewals >= 1 && s.peers.some((p) => p.subnet === sn4 && p.installed) && !s.peers.some((p) => p.subnet === sn3),
            90_000,
          );
          await sleep(1000);
        } finally {
          pinger.kill('SIGINT');
          await done;
        }
        const r = parsePing(out);
        assert.ok(r && r.transmitted >= 10, `ping ran: ${out.slice(-300)}`);
        assert.equal(r.received, r.transmitted, `no reply lost to h2 across the reconnect: ${r.received}/${r.transmitted}`);
        const tx1 = st.peers.find((p) => p.subnet === subnetOf.get(2))?.txPackets ?? 0;
        assert.ok(tx1 >= tx0, `h2's peer entry kept its counters (${tx0} -> ${tx1}): not re-added`);
        assert.deepEqual(peerSubnets(st), [2, 4].map((i) => subnetOf.get(i) as string).sort());
        assert.ok(st.lease.renewals >= 1, 'renewed on contact');
        assert.match(c.daemons.get(1)?.output() ?? '', /snapshot replaced by the listing/);
        // The watch resumes from the snapshot revision (its retry backoff may bring it after the listing): compacted, so a re-list.
        const deadline = Date.now() + 30_000;
        while (!/fell behind etcd compaction, re-listing/.test(c.daemons.get(1)?.output() ?? '')) {
          assert.ok(Date.now() < deadline, 'the watch from the snapshot revision met the compaction and re-listed');
          await sleep(200);
        }
        assert.deepEqual(peerSubnets(await c.status(h1)), [2, 4].map((i) => subnetOf.get(i) as string).sort(), 'same peers after the re-list');
        await assertReach(c, h1, h4);
        await assertReach(c, h4, h1);
      } finally {
        if (blocked) await blockEtcd(c, h1, false).catch(() => undefined);
      }
    }),
  );

  test('a corrupt or foreign snapshot is ignored with one warning; without etcd that is today\'s clear failure', { timeout: 180_000 }, () =>
    withLogs(c, async () => {
      const h1 = c.host(1);
      const file = snapshotFile(c, h1);
      const linksBefore = async () => (await c.bed.execOk(h1.ns, ['ip', '-o', 'link', 'show'])).split('\n').map((l) => l.split(':')[1]?.trim()).filter(Boolean).sort();
      assert.equal(await c.stopDaemon(h1, 'SIGKILL'), 128 + 9);
      const good = readFileSync(file);
      const cases: Array<{ name: string; write: () => void; reason: RegExp }> = [
        { name: 'garbage', write: () => writeFileSync(file, 'not a snapshot at all'), reason: /bad magic/ },
        { name: 'truncated', write: () => writeFileSync(file, good.subarray(0, good.length - 7)), reason: /truncated/ },
        {
          name: 'flipped byte',
          write: () => {
            const b = Buffer.from(good);
            b[b.length - 3] ^= 1;
            writeFileSync(file, b);
          },
          reason: /checksum mismatch/,
        },
        { name: 'foreign (another host)', write: () => copyFileSync(snapshotFile(c, c.host(2)), file), reason: /made for public IP/ },
      ];
      await blockEtcd(c, h1, true);
      try {
        const devices = await linksBefore();
        for (const k of cases) {
          k.write();
          const r = await c.bed.exec(h1.ns, c.daemonArgv(h1), { timeoutMs: 60_000 });
          const label = `${k.name}: exit ${r.code}\n${r.stderr}`;
          assert.equal(r.code, 1, label);
          const warned = ignoredSnapshotLines(r.stderr);
          assert.equal(warned.length, 1, `one warning: ${label}`);
          assert.match(warned[0], k.reason, label);
          const lines = r.stderr.trim().split('\n');
          assert.match(lines[lines.length - 1], /^vxnet: --etcd-endpoints: cannot reach etcd at /, label);
          assert.equal(lines.length, 2, `the warning and the failure, nothing else: ${label}`);
          assert.deepEqual(await linksBefore(), devices, `no device created: ${label}`);
        }
      } finally {
        await blockEtcd(c, h1, false);
      }
      // With etcd reachable a corrupt snapshot costs one warning and nothing else; the next one is good again.
      writeFileSync(file, 'garbage again');
      const proc = await c.startDaemon(h1);
      assert.equal(ignoredSnapshotLines(proc.output()).length, 1);
      assert.equal((await c.status(h1)).lease.subnet, subnetOf.get(1));
      await c.waitFor(h1, 'snapshot rewritten', () => {
        try {
          return decodeSnapshot(readFileSync(file), file).own.attrs.publicIp === h1.underlayIp;
        } catch {
          return false;
        }
      });
      assert.ok(existsSync(file));
    }),
  );

  test('a lease whose PublicIP lies inside the overlay network is refused by every host: not installed, counted, in status', { timeout: 90_000 }, () =>
    withLogs(c, async () => {
      const loopSubnet = '10.244.250.0/24';
      const value = '{"PublicIP":"10.244.7.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:42:0a:f4:07:07"}}';
      await c.etcdctl(['put', leaseKeyOf(loopSubnet), value]);
      try {
        for (const i of [1, 2]) {
          const h = c.host(i);
          const st = await c.waitFor(h, 'lease refused', (s) => (s.refusedLeases ?? []).some((r) => r.subnet === loopSubnet));
          assert.ok(!st.peers.some((p) => p.subnet === loopSubnet), `${h.name}: not a peer`);
          const r = (st.refusedLeases ?? []).find((x) => x.subnet === loopSubnet);
          assert.equal(r?.publicIp, '10.244.7.7');
          assert.equal(r?.reason, 'public_ip_in_network');
          assert.equal(st.refusedLeasesTotal?.public_ip_in_network, 1);
          assert.match(await c.statusTable(h), /^refused lease: 10\.244\.250\.0\/24 \(public IP 10\.244\.7\.7\) public_ip_in_network: .*inside the overlay network 10\.244\.0\.0\/16/m);
          const m = await c.bed.execOk(h.ns, [process.execPath, '-e', HTTP_GET, 'http://127.0.0.1:8286/metrics']);
          assert.match(m, /^vxnet_leases_refused_total\{reason="public_ip_in_network"\} 1$/m);
          // Nothing routes that subnet: a probe is a no-route drop, never encapsulated.
          const drops0 = (await c.status(h)).drops.tx_no_route ?? 0;
          await ping(c.bed, h.containerNs, '10.244.250.2', { count: 1, timeoutS: 1 });
          assert.ok(((await c.status(h)).drops.tx_no_route ?? 0) > drops0, `${h.name}: no route to the refused subnet`);
        }
      } finally {
        await c.etcdctl(['del', leaseKeyOf(loopSubnet)]);
      }
      await c.waitFor(c.host(1), 'refusal cleared', (s) => (s.refusedLeases ?? []).length === 0);
    }),
  );
});

describe('restart while etcd is down with the kernel vxlan backend', { timeout: 300_000 }, () => {
  let c: Cluster;

  before(async () => {
    c = await Cluster.create({ hosts: 2, tag: 'snrestk', netConf: { Network: NETWORK, Backend: { Type: 'vxlan', Datapath: 'kernel' } } });
    await withLogs(c, async () => {
      for (const i of [1, 2]) await c.startDaemon(c.host(i));
      await c.waitForMesh(30_000);
    });
  });

  after(async () => {
    await c?.destroy();
  });

  test('kill -9 and restart from the snapshot adopt flannel.1 as left; etcd back: reconciled', { timeout: 120_000 }, () =>
    withLogs(c, async () => {
      const [h1, h2] = [c.host(1), c.host(2)];
      const sn1 = (await c.status(h1)).lease.subnet;
      const sn2 = (await c.status(h2)).lease.subnet;
      try {
        c.etcd.kill9();
        assert.equal(await c.stopDaemon(h1, 'SIGKILL'), 128 + 9);
        const proc = await c.startDaemon(h1);
        const st = await c.status(h1);
        assert.equal(st.lease.subnet, sn1);
        assert.ok(st.etcd.snapshotFrom, 'serving the snapshot');
        assert.deepEqual(peerSubnets(st), [sn2]);
        assert.ok(st.peers[0].installed);
        assert.equal(st.backend.device, 'flannel.1');
        assert.equal(ignoredSnapshotLines(proc.output()).length, 0);
        await assertReach(c, h1, h2);
        await assertReach(c, h2, h1);
      } finally {
        if (!c.etcd.running) await c.etcd.restart();
      }
      const st = await c.waitFor(h1, 'reconciled', (s) => s.etcd.state === 'connected' && !s.etcd.snapshotFrom && s.lease.renewals >= 1, 90_000);
      assert.deepEqual(peerSubnets(st), [sn2]);
      await assertReach(c, h1, h2);
    }),
  );
});
