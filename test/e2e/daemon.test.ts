// `vxnet daemon` end to end: namespaced hosts, a real etcd in the switch namespace and one daemon per
// host (src/testbed/cluster.ts). Containers talk across hosts on every backend; hosts join, crash,
// lose their lease and come back; racing daemons, hand-written flanneld leases, bad configurations,
// SIGTERM, etcd outages, /metrics and /healthz, and a second daemon on the same subnet file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { Cluster, CLI_JS, sleep } from '../../src/testbed/cluster';
import type { BedHost } from '../../src/testbed/netbed';
import { iperf3Tcp, ping } from '../../src/testbed/traffic';
import type { DaemonStatus } from '../../src/daemon/status';
import { cidrHost, formatIPv4, parseCidr } from '../../src/net/ip';

const NETWORK = '10.244.0.0/16';
const PREFIX = '/coreos.com/network';
const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HEALTHZ_PORT = 8286;

interface BackendCase {
  name: string;
  tag: string;
  backend: Record<string, unknown>;
  kind: string;
  type: string;
  /** 1500 minus the encapsulation overhead. */
  mtu: number;
  /** status.backend.device */
  device: string;
  userspace: boolean;
}

const BACKENDS: BackendCase[] = [
  { name: 'udp', tag: 'dmnu', backend: { Type: 'udp' }, kind: 'udp', type: 'udp', mtu: 1472, device: 'vxnet0', userspace: true },
  { name: 'vxlan (userspace)', tag: 'dmnv', backend: { Type: 'vxlan' }, kind: 'vxlan', type: 'vxlan', mtu: 1450, device: 'vxnet0', userspace: true },
  {
    name: 'vxlan (kernel)',
    tag: 'dmnk',
    backend: { Type: 'vxlan', Datapath: 'kernel' },
    kind: 'kernel-vxlan',
    type: 'vxlan',
    mtu: 1450,
    device: 'flannel.1',
    userspace: false,
  },
  { name: 'host-gw', tag: 'dmng', backend: { Type: 'host-gw' }, kind: 'host-gw', type: 'host-gw', mtu: 1500, device: 'eth0', userspace: false },
];

// ---- helpers ---------------------------------------------------------------------------------

/** "10.244.5.0/24" -> /coreos.com/network/subnets/10.244.5.0-24 */
function leaseKeyOf(subnet: string, prefix = PREFIX): string {
  return `${prefix}/subnets/${subnet.replace('/', '-')}`;
}

/** The lease's gateway address .1 with the prefix length, as FLANNEL_SUBNET holds it. */
function gatewayOf(subnet: string): string {
  const c = parseCidr(subnet);
  return `${formatIPv4(cidrHost(c, 1))}/${c.prefixLen}`;
}

function containerIpOf(subnet: string): string {
  return formatIPv4(cidrHost(parseCidr(subnet), 2));
}

/** A lease value exactly as `etcdctl get --print-value-only` prints it, or undefined when absent. */
async function etcdValue(c: Cluster, key: string): Promise<string | undefined> {
  const out = (await c.etcdctl(['get', key, '--print-value-only'])).replace(/\n$/, '');
  return out === '' ? undefined : out;
}

async function leaseKeys(c: Cluster, prefix = PREFIX): Promise<string[]> {
  const out = await c.etcdctl(['get', `${prefix}/subnets/`, '--prefix', '--keys-only']);
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .sort();
}

/** Polls `check` until it returns true; fails with `what` and the last detail. */
async function waitUntil(what: string, check: () => Promise<boolean | string>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = '';
  for (;;) {
    try {
      const r = await check();
      if (r === true) return;
      last = r;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : String(last)}`);
    await sleep(200);
  }
}

/** Pings container to container; retries a few times (a route may have been installed a moment ago). */
async function assertReach(c: Cluster, from: BedHost, to: BedHost | string, label = ''): Promise<void> {
  const ip = typeof to === 'string' ? to : (to.containerIp as string);
  assert.ok(ip, `${label} no container address`);
  let last;
  for (let attempt = 0; attempt < 5; attempt++) {
    last = await ping(c.bed, from.containerNs, ip, { count: 3, intervalS: 0.2, timeoutS: 2 });
    if (last.received === last.transmitted) return;
    await sleep(500);
  }
  assert.fail(`${label} ${from.name} container -> ${ip}: ${last?.received}/${last?.transmitted} replies`);
}

/** Waits until 2 probes get no reply at all (forwarding state is removed a moment after status shows it). */
async function waitUnreachable(c: Cluster, from: BedHost, ip: string, label = ''): Promise<void> {
  await waitUntil(`${label} ${from.name} container -> ${ip} unreachable`, async () => {
    const r = await ping(c.bed, from.containerNs, ip, { count: 2, intervalS: 0.2, timeoutS: 1 });
    return r.received === 0 || `${r.received}/${r.transmitted} replies`;
  });
}

/** Sends one probe and reports the userspace datapath's drops.tx_no_route of `from`'s daemon afterwards. */
async function noRouteDropsAfterProbe(c: Cluster, from: BedHost, ip: string): Promise<number> {
  await ping(c.bed, from.containerNs, ip, { count: 1, timeoutS: 1 });
  return (await c.status(from)).drops.tx_no_route ?? 0;
}

/** `ip -o link` of a namespace, one normalised line per device. */
async function links(c: Cluster, ns: string): Promise<string[]> {
  const out = await c.bed.execOk(ns, ['ip', '-o', 'link', 'show']);
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.replace(/^\d+:\s*/, '').replace(/\s+/g, ' ').trim())
    .sort();
}

function linkNames(lines: string[]): string[] {
  return lines.map((l) => l.split(':')[0].replace(/@.*$/, '')).sort();
}

/** `iptables-save -t nat` without comments, timestamps and packet counters. */
async function natTable(c: Cluster, ns: string): Promise<string[]> {
  const out = await c.bed.execOk(ns, ['iptables-save', '-t', 'nat']);
  return out
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'));
}

/** IPv4 routes of a host namespace (`ip -4 route`), one per line. */
async function routes(c: Cluster, ns: string): Promise<string[]> {
  const out = await c.bed.execOk(ns, ['ip', '-4', 'route', 'show']);
  return out.split('\n').filter((l) => l.trim() !== '');
}

/** HTTP GET from inside a namespace (a tiny node client, so curl is not needed). */
async function httpGet(c: Cluster, ns: string, url: string): Promise<{ status: number; body: string }> {
  const script =
    "require('http').get(process.argv[1], (r) => { let b = ''; r.setEncoding('utf8'); r.on('data', (d) => (b += d));" +
    " r.on('end', () => process.stdout.write(JSON.stringify({ status: r.statusCode, body: b }))); })" +
    ".on('error', (e) => { process.stderr.write(e.message); process.exit(1); });";
  const out = await c.bed.execOk(ns, [process.execPath, '-e', script, url], { timeoutMs: 15_000 });
  return JSON.parse(out) as { status: number; body: string };
}

/** Value of an exposition sample line such as `vxnet_up 1` or `vxnet_peers{state="installed"} 2`. */
function metric(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

/** Runs `fn`; on failure appends each daemon's last log lines to the error, so a failure explains itself. */
async function withLogs<T>(c: Cluster | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (c && err instanceof Error) {
      const tails = [...c.daemons.values()].map((d) => `--- ${d.host.name} (pid ${d.pid}) ---\n${d.output().split('\n').slice(-25).join('\n')}`);
      err.message += `\n${tails.join('\n')}`;
    }
    throw err;
  }
}

function peerSubnets(st: DaemonStatus): string[] {
  return st.peers.map((p) => p.subnet).sort();
}

/** Exactly the peers in `want` (subnet -> host), all installed, with their public IPs. */
function assertPeers(st: DaemonStatus, want: Map<string, BedHost>, label: string): void {
  assert.deepEqual(peerSubnets(st), [...want.keys()].sort(), `${label}: peer subnets`);
  for (const p of st.peers) {
    assert.equal(p.installed, true, `${label}: peer ${p.subnet} installed`);
    assert.equal(p.publicIp, want.get(p.subnet)?.underlayIp, `${label}: peer ${p.subnet} public IP`);
  }
}

/** argv of `vxnet daemon` without the cluster's defaults, for the bad-flag cases. */
function bareArgv(c: Cluster, host: BedHost, extra: string[]): string[] {
  return [process.execPath, CLI_JS, 'daemon', `--subnet-file=${c.subnetFile(host)}`, ...extra];
}

// ---- 1, 2, 6, 8: every backend ---------------------------------------------------------------

for (const bc of BACKENDS) {
  describe(`daemon with ${bc.name}`, { timeout: 300_000 }, () => {
    let c: Cluster;
    /** Subnet of each host by index. */
    const subnetOf = new Map<number, string>();
    /** h3's namespace before its daemon ever ran (h3 runs with --ip-masq). */
    let h3Links: string[] = [];
    let h3Nat: string[] = [];

    before(async () => {
      c = await Cluster.create({ hosts: 3, tag: bc.tag, netConf: { Network: NETWORK, Backend: bc.backend } });
      await withLogs(c, async () => {
        h3Links = await links(c, c.host(3).ns);
        h3Nat = await natTable(c, c.host(3).ns);
        await c.startDaemon(c.host(1));
        await c.startDaemon(c.host(2));
        await c.startDaemon(c.host(3), { args: ['--ip-masq'] });
        for (const i of [1, 2, 3]) subnetOf.set(i, (await c.status(c.host(i))).lease.subnet);
        await c.waitForMesh(30_000);
      });
    });

    after(async () => {
      await c?.destroy();
    });

    const peersOf = (i: number, hosts: number[]) =>
      new Map(hosts.filter((j) => j !== i).map((j) => [subnetOf.get(j) as string, c.host(j)] as [string, BedHost]));

    test('containers ping and exchange TCP across hosts; status, subnet.env and leases are flannel-shaped', { timeout: 120_000 }, () =>
      withLogs(c, async () => {
        const subnets = [1, 2, 3].map((i) => subnetOf.get(i) as string);
        assert.equal(new Set(subnets).size, 3, `distinct subnets: ${subnets.join(', ')}`);

        for (const i of [1, 2, 3]) {
          const h = c.host(i);
          const sn = subnetOf.get(i) as string;
          assert.match(sn, /^10\.244\.\d{1,3}\.0\/24$/);
          assert.equal(h.containerIp, containerIpOf(sn), `${h.name}: docker0/container readdressed from subnet.env`);

          // subnet.env: flanneld's keys, order and values.
          const env = readFileSync(c.subnetFile(h), 'utf8');
          assert.equal(
            env,
            `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${gatewayOf(sn)}\nFLANNEL_MTU=${bc.mtu}\nFLANNEL_IPMASQ=${i === 3}\n`,
            `${h.name}: subnet.env`,
          );

          // Status: backend, lease and exactly the two other hosts as installed peers.
          const st = await c.status(h);
          assert.equal(st.backend.kind, bc.kind);
          assert.equal(st.backend.type, bc.type);
          assert.equal(st.backend.mtu, bc.mtu);
          assert.equal(st.backend.device, bc.device);
          assert.equal(st.backend.publicIp, h.underlayIp);
          assert.equal(st.lease.state, 'held');
          assert.equal(st.etcd.state, 'connected');
          assert.equal(st.network, NETWORK);
          assert.equal(st.ipMasq, i === 3);
          assertPeers(st, peersOf(i, [1, 2, 3]), h.name);
          for (const p of st.peers) assert.equal(p.backendType, bc.type, `${h.name}: peer ${p.subnet} BackendType`);

          // The lease in etcd, byte for byte as flanneld writes it, with an etcd TTL lease attached.
          const key = leaseKeyOf(sn);
          const value = await etcdValue(c, key);
          assert.ok(value, `${key} in etcd`);
          if (bc.type === 'vxlan') {
            const m = /^\{"PublicIP":"([\d.]+)","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"([0-9a-f:]+)"\}\}$/.exec(value);
            assert.ok(m, `${key}: flanneld vxlan lease shape, got ${value}`);
            assert.equal(m[1], h.underlayIp, `${key}: PublicIP`);
            assert.match(m[2], MAC_RE);
            assert.deepEqual(st.lease.backendData, { VNI: 1, VtepMAC: m[2] });
            // Every other host sees this VtepMAC in its peer list.
            for (const j of [1, 2, 3].filter((x) => x !== i)) {
              const other = await c.status(c.host(j));
              assert.equal(other.peers.find((p) => p.subnet === sn)?.vtepMac, m[2], `h${j} sees ${h.name}'s VtepMAC`);
            }
            if (bc.kind === 'kernel-vxlan') {
              // flanneld's device: flannel.1, VNI 1, dstport 8472, nolearning, our VTEP MAC, <subnet>.0/32.
              const dev = JSON.parse(await c.bed.execOk(h.ns, ['ip', '-d', '-j', 'addr', 'show', 'dev', 'flannel.1']))[0];
              assert.equal(dev.address, m[2], `${h.name}: flannel.1 MAC is the lease's VtepMAC`);
              assert.equal(dev.mtu, bc.mtu);
              const info = dev.linkinfo?.info_data ?? {};
              assert.equal(info.id, 1);
              assert.equal(info.port, 8472);
              assert.equal(info.learning, false);
              assert.equal(info.local, h.underlayIp);
              assert.deepEqual(
                (dev.addr_info as Array<{ family: string; local: string; prefixlen: number }>).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
                [`${sn.split('/')[0]}/32`],
              );
            }
          } else if (bc.type === 'udp') {
            // flanneld's udp backend writes only PublicIP; "BackendType":"udp" is accepted by flanneld readers too.
            assert.match(value, new RegExp(`^\\{"PublicIP":"${h.underlayIp.replace(/\./g, '\\.')}","PublicIPv6":null(,"BackendType":"udp")?\\}$`), `${key}: ${value}`);
          } else {
            assert.equal(value, `{"PublicIP":"${h.underlayIp}","PublicIPv6":null,"BackendType":"host-gw"}`, key);
          }
          const kv = JSON.parse(await c.etcdctl(['get', key, '-w', 'json'])) as { kvs?: Array<{ lease?: number }> };
          assert.ok(kv.kvs?.[0]?.lease, `${key} carries an etcd lease (TTL)`);

          // Kernel backends: the forwarding state flanneld would program, per peer.
          const rt = await routes(c, h.ns);
          for (const j of [1, 2, 3].filter((x) => x !== i)) {
            const psn = subnetOf.get(j) as string;
            if (bc.kind === 'host-gw') {
              assert.ok(rt.some((l) => l.startsWith(`${psn} via ${c.host(j).underlayIp} dev eth0`)), `${h.name}: host-gw route to ${psn}: ${rt.join(' | ')}`);
            } else if (bc.kind === 'kernel-vxlan') {
              assert.ok(rt.some((l) => l.startsWith(`${psn} via ${psn.split('/')[0]} dev flannel.1 onlink`)), `${h.name}: vxlan route to ${psn}: ${rt.join(' | ')}`);
            }
          }
        }

        // The table shows the same.
        const table = await c.statusTable(c.host(1));
        assert.match(table, /etcd\s+connected/);
        for (const j of [2, 3]) assert.match(table, new RegExp(`^${subnetOf.get(j)?.replace(/\./g, '\\.')}\\s+${c.host(j).underlayIp.replace(/\./g, '\\.')}\\s.*installed`, 'm'));

        // Every ordered pair of containers pings.
        for (const [a, b] of [[1, 2], [2, 1], [1, 3], [3, 1], [2, 3], [3, 2]]) await assertReach(c, c.host(a), c.host(b), bc.name);

        // TCP both ways through the overlay.
        const t1 = await iperf3Tcp(c.bed, c.host(1).containerNs, c.host(1).containerIp as string, c.host(2).containerNs, { seconds: 2 });
        assert.ok(t1.bytes > 0, `iperf3 h2 -> h1 moved ${t1.bytes} bytes`);
        const t2 = await iperf3Tcp(c.bed, c.host(3).containerNs, c.host(3).containerIp as string, c.host(2).containerNs, { seconds: 2, reverse: true });
        assert.ok(t2.bytes > 0, `iperf3 h3 -> h2 (reverse) moved ${t2.bytes} bytes`);
      }),
    );

    test('/healthz and /metrics answer inside the host namespace', { timeout: 60_000 }, () =>
      withLogs(c, async () => {
        const h = c.host(1);
        // Traffic to every peer first, so the userspace per-peer counters have something to show.
        await assertReach(c, h, c.host(2));
        await assertReach(c, h, c.host(3));
        const health = await httpGet(c, h.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`);
        assert.equal(health.status, 200);
        assert.equal(health.body.trim(), 'ok');

        const m = await httpGet(c, h.ns, `http://127.0.0.1:${HEALTHZ_PORT}/metrics`);
        assert.equal(m.status, 200);
        const text = m.body;
        assert.equal(metric(text, 'vxnet_up'), 1, 'vxnet_up');
        assert.equal(metric(text, 'vxnet_etcd_up'), 1, 'vxnet_etcd_up');
        assert.equal(metric(text, 'vxnet_peers{state="installed"}'), 2, 'installed peers');
        assert.equal(metric(text, 'vxnet_peers{state="pending"}'), 0, 'pending peers');
        assert.equal(metric(text, 'vxnet_mtu'), bc.mtu);
        assert.match(text, /^# TYPE vxnet_drops_total counter$/m);
        for (const line of text.split('\n').filter((l) => l.startsWith('vxnet_drops_total'))) {
          assert.match(line, /^vxnet_drops_total\{reason="[a-z0-9_]+"\} \d+$/, line);
        }
        assert.match(text, new RegExp(`^vxnet_info\\{.*subnet="${subnetOf.get(1)}".*\\} 1$`, 'm'));
        // The runtime metrics of prom-client's default collectors, beside vxnet's own.
        assert.ok((metric(text, 'process_cpu_seconds_total') ?? 0) > 0, 'process CPU');
        assert.ok((metric(text, 'process_resident_memory_bytes') ?? 0) > 1e6, 'process RSS');
        assert.match(text, /^# TYPE nodejs_eventloop_lag_seconds gauge$/m);
        assert.match(text, /^# TYPE nodejs_gc_duration_seconds histogram$/m);
        assert.equal(text.split('\n').filter((l) => l.startsWith('# TYPE ')).length, new Set(text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2])).size, 'every family declared once');
        if (bc.userspace) {
          for (const j of [2, 3]) {
            const series = `vxnet_peer_tx_packets_total{peer="${subnetOf.get(j)}",public_ip="${c.host(j).underlayIp}"}`;
            const n = metric(text, series);
            assert.ok(n !== undefined && n > 0, `${series} = ${n}`);
            const rx = metric(text, `vxnet_peer_rx_packets_total{peer="${subnetOf.get(j)}",public_ip="${c.host(j).underlayIp}"}`);
            assert.ok(rx !== undefined && rx > 0, `rx packets from h${j} = ${rx}`);
          }
          assert.ok((metric(text, 'vxnet_tx_packets_total') ?? 0) > 0, 'vxnet_tx_packets_total');
        }
        const notFound = await httpGet(c, h.ns, `http://127.0.0.1:${HEALTHZ_PORT}/nope`);
        assert.equal(notFound.status, 404);
      }),
    );

    test('SIGTERM: exit 0, devices, routes and ip-masq rules removed, lease kept, restart takes the same subnet', { timeout: 90_000 }, () =>
      withLogs(c, async () => {
        const h = c.host(3);
        const sn = subnetOf.get(3) as string;
        const key = leaseKeyOf(sn);
        const leaseBefore = await etcdValue(c, key);

        // While running: our device and the masquerading chain exist.
        const natRunning = await natTable(c, h.ns);
        assert.ok(natRunning.includes(':VXNET-POSTRTG - [0:0]'), `VXNET-POSTRTG chain while running:\n${natRunning.join('\n')}`);
        assert.ok(natRunning.some((l) => /^-A POSTROUTING .*-j VXNET-POSTRTG$/.test(l)), 'POSTROUTING jumps to VXNET-POSTRTG');
        assert.ok(natRunning.some((l) => l.startsWith('-A VXNET-POSTRTG') && l.includes('MASQUERADE')), 'MASQUERADE rule');
        if (bc.device !== 'eth0') assert.ok(linkNames(await links(c, h.ns)).includes(bc.device), `${bc.device} exists while running`);
        assert.ok((await routes(c, h.ns)).some((l) => l.startsWith(subnetOf.get(1) as string) || l.startsWith('10.244.0.0/16')), 'overlay routes while running');

        assert.equal(await c.stopDaemon(h, 'SIGTERM'), 0, 'exit code after SIGTERM');

        assert.deepEqual(linkNames(await links(c, h.ns)), linkNames(h3Links), 'devices after SIGTERM equal those before the daemon ran');
        assert.deepEqual(await natTable(c, h.ns), h3Nat, 'nat table after SIGTERM equals the one before the daemon ran');
        const left = (await routes(c, h.ns)).filter((l) => l.includes('10.244.') && !/ dev docker0 /.test(` ${l} `));
        assert.deepEqual(left, [], 'no overlay routes left (only docker0 own subnet)');
        assert.equal(await etcdValue(c, key), leaseBefore, 'lease kept in etcd');
        assert.ok(existsSync(c.subnetFile(h)), 'subnet.env kept');
        const st = await c.bed.exec(h.ns, [process.execPath, CLI_JS, 'status', `--subnet-file=${c.subnetFile(h)}`]);
        assert.equal(st.code, 3, `status without a daemon exits 3: ${st.stderr}`);

        // Restart: same subnet, ip-masq back, reachable again.
        const proc = await c.startDaemon(h, { args: ['--ip-masq'] });
        assert.equal((await c.status(h)).lease.subnet, sn, 'same subnet after restart');
        assert.match(proc.output(), /acquired lease.*reason="previous subnet, still ours"/);
        assert.ok((await natTable(c, h.ns)).includes(':VXNET-POSTRTG - [0:0]'), 'ip-masq chain back after restart');
        await c.waitForMesh(30_000);
        await assertReach(c, c.host(1), h);
        await assertReach(c, h, c.host(2));
      }),
    );

    test('a fourth host joins; kill -9 keeps its routes, deleting its lease removes them; restart keeps the subnet', { timeout: 150_000 }, () =>
      withLogs(c, async () => {
        const h4 = await c.bed.addHost();
        await c.startDaemon(h4);
        const sn4 = (await c.status(h4)).lease.subnet;
        subnetOf.set(4, sn4);
        assert.equal(new Set([1, 2, 3, 4].map((i) => subnetOf.get(i))).size, 4, 'four distinct subnets');
        // The running hosts learn about h4 without a restart.
        await c.waitForMesh(30_000);
        for (const i of [1, 2, 3]) assertPeers(await c.status(c.host(i)), peersOf(i, [1, 2, 3, 4]), `h${i}`);
        assertPeers(await c.status(h4), peersOf(4, [1, 2, 3, 4]), 'h4');
        await assertReach(c, c.host(1), h4);
        await assertReach(c, h4, c.host(2));
        await assertReach(c, c.host(3), h4);

        // kill -9: no cleanup, the lease stays, so the others keep the peer.
        const killedPid = c.daemons.get(4)?.pid;
        assert.equal(await c.stopDaemon(h4, 'SIGKILL'), 128 + 9);
        await sleep(1000);
        for (const i of [1, 2, 3]) {
          const st = await c.status(c.host(i));
          assert.ok(st.peers.some((p) => p.subnet === sn4 && p.installed), `h${i} still has h4's peer after kill -9`);
          if (!bc.userspace) assert.ok((await routes(c, c.host(i).ns)).some((l) => l.startsWith(`${sn4} `)), `h${i} still routes ${sn4}`);
        }
        if (bc.userspace) {
          // h1's datapath still sends to h4 (nobody answers there now).
          const tx = async () => (await c.status(c.host(1))).peers.find((p) => p.subnet === sn4)?.txPackets ?? 0;
          const tx0 = await tx();
          const r = await ping(c.bed, c.host(1).containerNs, h4.containerIp as string, { count: 2, intervalS: 0.2, timeoutS: 1 });
          assert.equal(r.received, 0, 'h4 is down');
          assert.ok((await tx()) >= tx0 + 2, 'h1 still encapsulates for h4 after kill -9');
        }

        // Deleting the lease removes h4 everywhere.
        const del = await c.etcdctl(['del', leaseKeyOf(sn4)]);
        assert.equal(del.trim(), '1', 'one key deleted');
        for (const i of [1, 2, 3]) {
          const h = c.host(i);
          const st = await c.waitFor(h, `${sn4} gone`, (s) => !s.peers.some((p) => p.subnet === sn4), 30_000);
          assertPeers(st, peersOf(i, [1, 2, 3]), `h${i} after the delete`);
          if (bc.userspace) {
            const m = await httpGet(c, h.ns, `http://127.0.0.1:${HEALTHZ_PORT}/metrics`);
            assert.equal(metric(m.body, 'vxnet_peers{state="installed"}'), 2);
            assert.ok(!m.body.includes(`peer="${sn4}"`), `h${i}: no per-peer counters for ${sn4}`);
            // The datapath itself holds no route any more: a packet for h4 is a tx_no_route drop.
            const drops0 = (await c.status(h)).drops.tx_no_route ?? 0;
            await waitUntil(`h${i}: datapath route to ${sn4} removed`, async () => {
              const n = await noRouteDropsAfterProbe(c, h, h4.containerIp as string);
              return n > drops0 || `tx_no_route ${n}`;
            });
          } else {
            await waitUntil(`h${i}: route (and neighbour) of ${sn4} removed`, async () => {
              const rt = await routes(c, h.ns);
              if (rt.some((l) => l.startsWith(`${sn4} `))) return rt.join(' | ');
              if (bc.kind !== 'kernel-vxlan') return true;
              const neigh = await c.bed.execOk(h.ns, ['ip', 'neigh', 'show', 'dev', 'flannel.1']);
              return !neigh.includes(`${sn4.split('/')[0]} `) || neigh;
            });
          }
        }
        await waitUnreachable(c, c.host(1), h4.containerIp as string, 'after the lease delete');

        // Restart after kill -9: the subnet comes back from subnet.env.
        const proc = await c.startDaemon(h4);
        assert.notEqual(proc.pid, killedPid);
        assert.equal((await c.status(h4)).lease.subnet, sn4, 'same subnet after restart');
        assert.match(proc.output(), /acquired lease.*reason="previous subnet, still free"/);
        assert.ok(await etcdValue(c, leaseKeyOf(sn4)), 'lease re-created');
        await c.waitForMesh(30_000);
        await assertReach(c, c.host(1), h4);
        await assertReach(c, h4, c.host(3));
        await assertReach(c, c.host(2), h4);
      }),
    );
  });
}

// ---- 3: racing daemons ------------------------------------------------------------------------

describe('daemons started at once', { timeout: 300_000 }, () => {
  let c: Cluster;
  // Four leasable subnets for four hosts: every round forces collisions to be resolved.
  const RANGE = ['10.244.10.0/24', '10.244.11.0/24', '10.244.12.0/24', '10.244.13.0/24'];

  before(async () => {
    c = await Cluster.create({
      hosts: 4,
      tag: 'dmnr',
      netConf: { Network: NETWORK, SubnetLen: 24, SubnetMin: '10.244.10.0', SubnetMax: '10.244.13.0', Backend: { Type: 'host-gw' } },
    });
  });

  after(async () => {
    await c?.destroy();
  });

  test('never get the same subnet, and etcd holds exactly their leases', { timeout: 240_000 }, () =>
    withLogs(c, async () => {
      const hosts = [1, 2, 3, 4].map((i) => c.host(i));
      const ROUNDS = 3;
      for (let round = 0; round < ROUNDS; round++) {
        await Promise.all(hosts.map((h) => c.startDaemon(h)));
        const got = await Promise.all(hosts.map(async (h) => (await c.status(h)).lease.subnet));
        assert.equal(new Set(got).size, 4, `round ${round}: subnets ${got.join(', ')}`);
        assert.deepEqual([...got].sort(), RANGE, `round ${round}: the four subnets of SubnetMin..SubnetMax`);
        assert.deepEqual(await leaseKeys(c), RANGE.map((s) => leaseKeyOf(s)).sort(), `round ${round}: etcd keys`);
        for (const [i, h] of hosts.entries()) {
          assert.equal(await etcdValue(c, leaseKeyOf(got[i])), `{"PublicIP":"${h.underlayIp}","PublicIPv6":null,"BackendType":"host-gw"}`);
          assert.equal(readFileSync(c.subnetFile(h), 'utf8').split('\n')[1], `FLANNEL_SUBNET=${gatewayOf(got[i])}`);
        }
        if (round === ROUNDS - 1) {
          await c.waitForMesh(30_000);
          await assertReach(c, hosts[0], hosts[1]);
          await assertReach(c, hosts[3], hosts[2]);
          // The range is full: a fifth daemon fails (exit != 0) with one line, and takes nothing.
          const h5 = await c.bed.addHost();
          const r = await c.bed.exec(h5.ns, c.daemonArgv(h5), { timeoutMs: 60_000 });
          assert.notEqual(r.code, 0, `fifth daemon exit code; stderr: ${r.stderr}`);
          assert.match(r.stderr, /no free subnet left in 10\.244\.10\.0\/24 \.\. 10\.244\.13\.0\/24/);
          assert.ok(!existsSync(c.subnetFile(h5)), 'no subnet.env for the fifth host');
          assert.deepEqual(await leaseKeys(c), RANGE.map((s) => leaseKeyOf(s)).sort(), 'etcd keys unchanged');
          break;
        }
        // Next round from scratch: no daemons, no leases, no subnet files.
        for (const h of hosts) assert.equal(await c.stopDaemon(h), 0);
        await c.etcdctl(['del', `${PREFIX}/subnets/`, '--prefix']);
        for (const h of hosts) rmSync(c.subnetFile(h), { force: true });
      }
    }),
  );
});

// ---- 4: a hand-written flanneld lease and a hand-built flanneld host ---------------------------

describe('a lease written by hand in flanneld JSON', { timeout: 300_000 }, () => {
  let c: Cluster;
  const HAND_SUBNET = '10.244.200.0/24';
  const HAND_MAC = '0e:f1:a7:00:c8:01';

  before(async () => {
    c = await Cluster.create({ hosts: 3, tag: 'dmnh', netConf: { Network: NETWORK, Backend: { Type: 'vxlan' } } });
  });

  after(async () => {
    await c?.destroy();
  });

  test('is honoured: a kernel flannel.1 host configured like flanneld talks to vxnet userspace vxlan hosts', { timeout: 180_000 }, () =>
    withLogs(c, async () => {
      const [h1, h2, h3] = [1, 2, 3].map((i) => c.host(i));
      // h3 is "flanneld": its lease goes in first (with a TTL, as flanneld does), so nobody else picks its subnet.
      const handValue = `{"PublicIP":"${h3.underlayIp}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${HAND_MAC}"}}`;
      const grant = await c.etcdctl(['lease', 'grant', '3600']);
      const leaseId = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
      assert.ok(leaseId, grant);
      await c.etcdctl(['put', `--lease=${leaseId}`, leaseKeyOf(HAND_SUBNET), handValue]);

      await c.startDaemon(h1);
      await c.startDaemon(h2);
      const sn1 = (await c.status(h1)).lease.subnet;
      const sn2 = (await c.status(h2)).lease.subnet;

      // Our own leases have exactly the shape of the hand-written one.
      const own: Array<{ host: BedHost; subnet: string; mac: string }> = [];
      for (const [h, sn] of [[h1, sn1], [h2, sn2]] as Array<[BedHost, string]>) {
        const v = await etcdValue(c, leaseKeyOf(sn));
        const m = /^\{"PublicIP":"([\d.]+)","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"([0-9a-f:]{17})"\}\}$/.exec(v ?? '');
        assert.ok(m, `${h.name} lease shape: ${v}`);
        assert.equal(m[1], h.underlayIp);
        own.push({ host: h, subnet: sn, mac: m[2] });
        // JSON field order as flanneld's encoder writes it.
        assert.deepEqual(Object.keys(JSON.parse(v as string)), Object.keys(JSON.parse(handValue)));
      }

      // The daemons install the hand lease as a peer.
      for (const h of [h1, h2]) {
        const st = await c.waitFor(h, `${HAND_SUBNET} installed`, (s) => s.peers.some((p) => p.subnet === HAND_SUBNET && p.installed));
        const p = st.peers.find((x) => x.subnet === HAND_SUBNET);
        assert.equal(p?.vtepMac, HAND_MAC);
        assert.equal(p?.publicIp, h3.underlayIp);
        assert.equal(p?.backendType, 'vxlan');
        assert.deepEqual(Object.values(st.rejected).filter((n) => n > 0), [], `${h.name}: nothing rejected`);
      }

      // h3, by hand, as flanneld programs it: flannel.1 (nolearning, dstport 8472, its VTEP MAC,
      // <subnet>.0/32) and per peer lease a permanent neighbour, an FDB entry and an onlink route.
      await c.bed.ipBatch(h3.ns, [
        `link add flannel.1 address ${HAND_MAC} mtu 1450 type vxlan id 1 local ${h3.underlayIp} dev eth0 dstport 8472 nolearning`,
        `addr add ${HAND_SUBNET.split('/')[0]}/32 dev flannel.1`,
        'link set flannel.1 up',
      ]);
      for (const p of own) {
        const gw = p.subnet.split('/')[0];
        await c.bed.execOk(h3.ns, ['ip', 'neigh', 'replace', gw, 'lladdr', p.mac, 'dev', 'flannel.1', 'nud', 'permanent']);
        await c.bed.execOk(h3.ns, ['bridge', 'fdb', 'replace', p.mac, 'dev', 'flannel.1', 'dst', p.host.underlayIp, 'self', 'permanent']);
        await c.bed.execOk(h3.ns, ['ip', 'route', 'replace', p.subnet, 'via', gw, 'dev', 'flannel.1', 'onlink']);
      }
      await h3.setContainerSubnet(gatewayOf(HAND_SUBNET), 1450);
      assert.equal(h3.containerIp, containerIpOf(HAND_SUBNET));

      // Both directions, both vxnet hosts, and TCP.
      await assertReach(c, h1, h3);
      await assertReach(c, h3, h1);
      await assertReach(c, h2, h3);
      await assertReach(c, h3, h2);
      const t = await iperf3Tcp(c.bed, h3.containerNs, h3.containerIp as string, h1.containerNs, { seconds: 2 });
      assert.ok(t.bytes > 0, `iperf3 h1 -> hand host moved ${t.bytes} bytes`);
      const st1 = await c.status(h1);
      const hp = st1.peers.find((p) => p.subnet === HAND_SUBNET);
      assert.ok((hp?.txPackets ?? 0) > 0 && (hp?.rxPackets ?? 0) > 0, `h1 per-peer counters for the hand host: ${JSON.stringify(hp)}`);

      // Removing the hand lease removes the peer, down to the datapath's route.
      await c.etcdctl(['del', leaseKeyOf(HAND_SUBNET)]);
      await c.waitFor(h1, `${HAND_SUBNET} gone`, (s) => !s.peers.some((p) => p.subnet === HAND_SUBNET));
      await waitUnreachable(c, h1, h3.containerIp as string, 'after the hand lease is deleted');
      const drops0 = (await c.status(h1)).drops.tx_no_route ?? 0;
      assert.ok((await noRouteDropsAfterProbe(c, h1, h3.containerIp as string)) > drops0, 'h1 has no route for the deleted hand lease');
    }),
  );
});

// ---- 5, 7, 9: bad configurations, etcd outage, a second daemon ---------------------------------

describe('daemon failure handling', { timeout: 300_000 }, () => {
  let c: Cluster;

  before(async () => {
    c = await Cluster.create({ hosts: 3, tag: 'dmnm', netConf: { Network: NETWORK, Backend: { Type: 'udp' } } });
    await withLogs(c, async () => {
      // h1 and h2 run daemons; h3 never does (it is where the bad configurations are tried).
      await c.startDaemon(c.host(1));
      await c.startDaemon(c.host(2));
      await c.waitForMesh(30_000);
    });
  });

  after(async () => {
    await c?.destroy();
  });

  test('bad configurations: one line naming the field, exit != 0, nothing left on the host', { timeout: 120_000 }, () =>
    withLogs(c, async () => {
      const h = c.host(3);
      const ep = `--etcd-endpoints=${c.endpoint}`;
      const badJson = c.writeFile('bad-net-conf.json', '{"Network": "10.244.0.0/16",');
      interface Case {
        name: string;
        /** net-conf.json text put at /<name>/network/config (the run then uses that prefix). */
        netConf?: string;
        /** Extra flags after the cluster's defaults (ignored when argv is given). */
        args?: string[];
        /** Whole flag list instead of the cluster's defaults. */
        argv?: string[];
        field: string;
        message?: RegExp;
        code?: number;
      }
      const cases: Case[] = [
        { name: 'notjson', netConf: '{"Network": "10.244.0.0/16", "Backend": ', field: 'config', message: /not valid JSON/ },
        { name: 'netconffile', args: [`--net-config=${badJson}`], field: '--net-config', message: /not valid JSON/ },
        { name: 'net33', netConf: '{"Network":"10.244.0.0/33"}', field: 'Network', message: /\/33|prefix length/ },
        { name: 'net30', netConf: '{"Network":"10.244.0.0/30"}', field: 'Network', message: /\/30/ },
        { name: 'netv6', netConf: '{"Network":"fc00::/48"}', field: 'Network' },
        { name: 'sublen16', netConf: '{"Network":"10.244.0.0/16","SubnetLen":16}', field: 'SubnetLen' },
        { name: 'sublen8', netConf: '{"Network":"10.244.0.0/16","SubnetLen":8}', field: 'SubnetLen' },
        { name: 'gre', netConf: '{"Network":"10.244.0.0/16","Backend":{"Type":"gre"}}', field: 'Backend.Type', message: /gre/ },
        { name: 'vni', netConf: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}', field: 'Backend.VNI', message: /16777216/ },
        { name: 'vnik', netConf: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Datapath":"kernel","VNI":16777216}}', field: 'Backend.VNI' },
        { name: 'datapath', netConf: '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Datapath":"kernel"}}', field: 'Backend.Datapath' },
        { name: 'noconf', field: 'network config', message: /is not in etcd/ },
        { name: 'publicip', args: ['--public-ip', '1.2.3'], field: '--public-ip', code: 2 },
        { name: 'iface', argv: [ep, '--iface', '999.1.1.1'], field: '--iface', message: /999\.1\.1\.1/ },
        { name: 'foo', argv: ['--etcd-endpoints=foo://x', '--iface=eth0'], field: '--etcd-endpoints', message: /foo:\/\/x/, code: 2 },
        { name: 'ftp', argv: ['--etcd-endpoints', 'ftp://', '--iface=eth0'], field: '--etcd-endpoints', code: 2 },
        {
          name: 'unreach',
          argv: ['--etcd-endpoints=http://198.18.0.254:2399', '--iface=eth0'],
          field: '--etcd-endpoints',
          message: /cannot reach etcd at http:\/\/198\.18\.0\.254:2399/,
        },
        { name: 'flag', args: ['--no-such-flag'], field: '--no-such-flag', message: /unknown flag/, code: 2 },
        { name: 'nofile', args: ['--net-config=/nonexistent/vxnet/net-conf.json'], field: '--net-config', message: /nonexistent/, code: 2 },
      ];

      const linksBefore = await links(c, h.ns);
      const natBefore = await natTable(c, h.ns);
      const routesBefore = await routes(c, h.ns);
      assert.ok(!existsSync(c.subnetFile(h)));
      for (const k of cases) {
        const prefix = `/bad-${k.name}/network`;
        if (k.netConf !== undefined) await c.etcdctl(['put', `${prefix}/config`, k.netConf]);
        const argv = k.argv ? bareArgv(c, h, k.argv) : c.daemonArgv(h, [...(k.argv ? [] : [`--etcd-prefix=${prefix}`]), ...(k.args ?? [])]);
        const r = await c.bed.exec(h.ns, argv, { timeoutMs: 60_000 });
        const label = `${k.name} (${argv.slice(3).join(' ')}): exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`;
        assert.notEqual(r.code, 0, label);
        if (k.code !== undefined) assert.equal(r.code, k.code, label);
        const lines = r.stderr.trim().split('\n');
        assert.equal(lines.length, 1, `one line: ${label}`);
        assert.match(lines[0], /^vxnet: /, label);
        assert.ok(lines[0].length < 400, `short: ${label}`);
        assert.ok(!/\bat .*\(.*:\d+:\d+\)/.test(r.stderr), `no stack trace: ${label}`);
        assert.ok(lines[0].includes(k.field), `names ${k.field}: ${label}`);
        if (k.message) assert.match(lines[0], k.message, label);
        assert.equal(r.stdout, '', label);

        assert.deepEqual(await links(c, h.ns), linksBefore, `links unchanged: ${label}`);
        assert.deepEqual(await natTable(c, h.ns), natBefore, `nat table unchanged: ${label}`);
        assert.deepEqual(await routes(c, h.ns), routesBefore, `routes unchanged: ${label}`);
        assert.ok(!existsSync(c.subnetFile(h)), `no subnet.env written: ${label}`);
        if (k.netConf !== undefined) assert.deepEqual(await leaseKeys(c, prefix), [], `no lease taken: ${label}`);
      }
      assert.deepEqual(await leaseKeys(c, '/bad-noconf/network'), []);
    }),
  );

  test('a second daemon with the same subnet file in the same namespace fails and disturbs nothing', { timeout: 60_000 }, () =>
    withLogs(c, async () => {
      const h = c.host(1);
      const before = await c.status(h);
      const env = readFileSync(c.subnetFile(h), 'utf8');
      const linksBefore = await links(c, h.ns);
      const natBefore = await natTable(c, h.ns);
      const keysBefore = await leaseKeys(c);

      const r = await c.bed.exec(h.ns, c.daemonArgv(h), { timeoutMs: 60_000 });
      assert.notEqual(r.code, 0, r.stderr);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0], /^vxnet: --control-socket: another vxnet daemon already runs/);

      const after = await c.status(h);
      assert.equal(after.pid, before.pid, 'the first daemon still answers');
      assert.equal(after.lease.subnet, before.lease.subnet);
      assert.equal(after.lease.state, 'held');
      assert.deepEqual(peerSubnets(after), peerSubnets(before));
      assert.ok(after.peers.every((p) => p.installed));
      assert.equal(readFileSync(c.subnetFile(h), 'utf8'), env, 'subnet.env untouched');
      assert.deepEqual(await links(c, h.ns), linksBefore, 'links untouched (vxnet0 still there)');
      assert.deepEqual(await natTable(c, h.ns), natBefore);
      assert.deepEqual(await leaseKeys(c), keysBefore, 'no extra lease');
      const health = await httpGet(c, h.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`);
      assert.equal(health.status, 200);
      await assertReach(c, h, c.host(2));
      await assertReach(c, c.host(2), h);
    }),
  );

  test('etcd unreachable while running: forwarding continues, status says so, and recovers', { timeout: 180_000 }, () =>
    withLogs(c, async () => {
      const [h1, h2] = [c.host(1), c.host(2)];
      try {
        c.etcd.kill9();
        for (const h of [h1, h2]) await c.waitFor(h, 'etcd unreachable', (s) => s.etcd.state === 'unreachable', 60_000);

        // Existing hosts still forward with the last known peers.
        await assertReach(c, h1, h2);
        await assertReach(c, h2, h1);
        const st = await c.status(h1);
        assert.equal(st.lease.state, 'held');
        assert.equal(st.peers.length, 1);
        assert.ok(st.peers[0].installed);
        const table = await c.statusTable(h1);
        assert.match(table, /^etcd\s+UNREACHABLE/m);
        const health = await httpGet(c, h1.ns, `http://127.0.0.1:${HEALTHZ_PORT}/healthz`);
        assert.equal(health.status, 200, 'degraded, still healthy');
        assert.match(health.body, /etcd unreachable/);
        const m = await httpGet(c, h1.ns, `http://127.0.0.1:${HEALTHZ_PORT}/metrics`);
        assert.equal(metric(m.body, 'vxnet_etcd_up'), 0);
        assert.equal(metric(m.body, 'vxnet_up'), 1);
      } finally {
        if (!c.etcd.running) await c.etcd.restart();
      }

      for (const h of [h1, h2]) await c.waitFor(h, 'etcd connected again', (s) => s.etcd.state === 'connected', 90_000);
      assert.match(await c.statusTable(h1), /^etcd\s+connected/m);

      // A host joining now is seen by the others.
      const h4 = await c.bed.addHost();
      await c.startDaemon(h4);
      const sn4 = (await c.status(h4)).lease.subnet;
      for (const h of [h1, h2]) await c.waitFor(h, `${sn4} installed`, (s) => s.peers.some((p) => p.subnet === sn4 && p.installed), 60_000);
      await assertReach(c, h1, h4);
      await assertReach(c, h4, h2);
    }),
  );
});
