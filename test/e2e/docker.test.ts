// Docker networks across hosts with real components: three namespaced hosts, a real etcd, a real
// dockerd (Debian docker.io 20.10) per host, and each host's vxnet daemon serving the Docker plugin
// (src/testbed/docker-cluster.ts). h1 and h2 run with --docker-sync-networks, h3 without.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { DockerCluster } from '../../src/testbed/docker-cluster';
import { TEST_IMAGE } from '../../src/testbed/docker';
import { CLI_JS, sleep } from '../../src/testbed/cluster';
import { existsSync } from 'node:fs';
import { cidrContains, parseCidr, parseIPv4 } from '../../src/net/ip';

const NET1 = '10.250.0.0/16';
const NET2 = '10.251.0.0/16';
const ROOT = '/coreos.com/network/docker';

/** The root namespace's links, routes and iptables rules (counters stripped), to compare after. */
function rootState(): string {
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' });
  return [
    run('ip', ['-o', 'link', 'show']).replace(/\s+link\/\S+ \S+( brd \S+)?/g, ''),
    run('ip', ['-o', 'addr', 'show']),
    run('ip', ['route', 'show', 'table', 'all']),
    run('iptables-save', []).replace(/\[\d+:\d+\]/g, '').replace(/^#.*$/gm, ''),
  ].join('\n');
}

let dc: DockerCluster;
let rootBefore: string;

const d = (i: number) => dc.dockerOf(i);

async function run(i: number, name: string, net: string, extra: string[] = []): Promise<string> {
  await d(i).dockerOk(['run', '-d', '--init', '--name', name, '--net', net, ...extra, TEST_IMAGE, 'sleep', '1000000']);
  return dc.containerIp(i, name, net);
}

async function assertPings(i: number, from: string, to: string): Promise<void> {
  const r = await d(i).exec(from, ['ping', '-c', '2', '-W', '2', to]);
  assert.ok(r.code === 0 && / 2 packets received/.test(r.stdout), `h${i} ${from} -> ${to} should answer: ${r.stdout}${r.stderr}`);
}

/** After a restart: traffic resumes, i.e. pings answer within `timeoutMs` (then every later ping must). */
async function waitPings(i: number, from: string, to: string, timeoutMs = 40_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await d(i).exec(from, ['ping', '-c', '1', '-W', '1', to]);
    if (r.code === 0) return;
    if (Date.now() > deadline) {
      // What every host's vxnet knows of the Docker networks, and its last log lines: the failure explains itself.
      const facts: string[] = [];
      for (const host of dc.cluster.bed.hosts) {
        const h = host.index;
        const st = await dc.status(h).catch(() => undefined);
        const nets = st?.docker?.networks.map((n) => ({ name: n.name, lease: n.lease, tun: n.tun, error: n.error, peers: n.peers, counters: n.counters, drops: Object.fromEntries(Object.entries(n.drops).filter(([, v]) => v > 0)) }));
        facts.push(`h${h}: ${JSON.stringify(nets)}\n${dc.cluster.daemons.get(h)?.output().split('\n').slice(-15).join('\n') ?? ''}`);
      }
      assert.fail(`h${i} ${from} -> ${to}: no answer within ${timeoutMs} ms of the restart: ${r.stdout}${r.stderr}\n${facts.join('\n')}`);
    }
  }
}

async function assertNoPing(i: number, from: string, to: string): Promise<void> {
  const r = await d(i).exec(from, ['ping', '-c', '2', '-W', '1', to]);
  assert.notEqual(r.code, 0, `h${i} ${from} -> ${to} must not answer: ${r.stdout}`);
  assert.match(r.stdout, / 0 packets received/);
}

/** Writes 2 MB of random data into container `name`; returns its md5. */
async function makeBlob(i: number, name: string): Promise<string> {
  await d(i).dockerOk(['exec', name, 'sh', '-c', 'dd if=/dev/urandom of=/tmp/blob bs=1024 count=2048 2>/dev/null']);
  return (await d(i).dockerOk(['exec', name, 'md5sum', '/tmp/blob'])).split(' ')[0];
}

let port = 5000;

/**
 * TCP: container `server` on host `si` sends its blob to the first client on a fresh port, container
 * `from` on host `i` reads it; the md5 of what arrived, or undefined when nothing did.
 */
async function fetchMd5(si: number, server: string, i: number, from: string, ip: string, timeoutS = 5): Promise<string | undefined> {
  const p = ++port;
  await d(si).dockerOk(['exec', '-d', server, 'nc', '-l', '-p', String(p), '-e', 'cat', '/tmp/blob']);
  await sleep(200);
  const r = await d(i).exec(from, ['sh', '-c', `nc -w ${timeoutS} ${ip} ${p} | md5sum`], 30_000);
  const sum = r.stdout.split(' ')[0];
  // md5 of nothing: no data came.
  return r.code === 0 && sum !== 'd41d8cd98f00b204e9800998ecf8427e' ? sum : undefined;
}

async function etcdKeys(prefix = `${ROOT}/`): Promise<string[]> {
  const out = await dc.cluster.etcdctl(['get', '--prefix', '--keys-only', prefix]);
  return out.split('\n').filter(Boolean);
}

/** vxnet's veths and namespaces on host i: veth names in the host namespace, and namespace mounts. */
async function leftovers(i: number): Promise<{ links: string[]; mounts: string[] }> {
  const links = (await dc.bed.execOk(dc.host(i).ns, ['ip', '-o', 'link', 'show'])).split('\n').filter((l) => / vx[ch][0-9a-f]+[@:]/.test(l));
  const mounts = (await d(i).runOk(['cat', '/proc/self/mountinfo'])).split('\n').filter((l) => /vxnet-docker\/netns\//.test(l));
  return { links, mounts };
}

/** Host-end veths on network `name`'s bridge inside its namespace on host i. */
async function bridgePorts(i: number, name: string): Promise<number> {
  const n = await dc.network(i, name);
  assert.ok(n, `h${i} has ${name}`);
  const out = await d(i).runOk(['nsenter', `--net=${n.namespace}`, 'ip', '-o', 'link', 'show', 'master', 'vxbr0']);
  return out.split('\n').filter(Boolean).length;
}

describe('docker networks across hosts (real dockerd, etcd, namespaces)', () => {
  before(async () => {
    rootBefore = rootState();
    dc = await DockerCluster.create({ hosts: 3, tag: 'dock', syncHosts: [1, 2] });
  });

  after(async () => {
    await dc?.destroy();
    assert.equal(rootState(), rootBefore, "the root namespace's links, routes and iptables are unchanged");
  });

  const ips: Record<string, string> = {};

  test('net1 on three hosts (created on h1, synced to h2, created by hand on h3): one VNI, disjoint leases, containers ping and move data by IP', async () => {
    await d(1).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', NET1, 'net1']);
    await dc.waitDockerNetwork(2, 'net1');
    // h3 does not sync: the same name and range by hand joins the same overlay.
    await d(3).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', NET1, 'net1']);
    const mesh = await dc.waitNetworkMesh('net1', [1, 2, 3]);
    const leases = [1, 2, 3].map((i) => mesh.get(i)?.lease as string);
    assert.equal(new Set(leases).size, 3, `disjoint leases ${leases.join(' ')}`);
    for (const i of [1, 2, 3]) assert.equal(mesh.get(i)?.vni, 4096);
    const keys = await etcdKeys();
    assert.ok(keys.includes(`${ROOT}/networks/10.250.0.0-16/config`));
    assert.ok(keys.includes(`${ROOT}/vnis/4096`));
    assert.ok(keys.includes(`${ROOT}/names/net1`));
    assert.equal(keys.filter((k) => k.startsWith(`${ROOT}/networks/10.250.0.0-16/subnets/`)).length, 3);

    ips.c1 = await run(1, 'c1', 'net1');
    ips.c1b = await run(1, 'c1b', 'net1');
    ips.c2 = await run(2, 'c2', 'net1');
    ips.c3 = await run(3, 'c3', 'net1');
    assert.equal(new Set(Object.values(ips)).size, 4, `addresses never collide: ${JSON.stringify(ips)}`);
    for (const [c, i] of [['c1', 0], ['c1b', 0], ['c2', 1], ['c3', 2]] as const) {
      assert.ok(cidrContains(parseCidr(leases[i]), parseIPv4(ips[c])), `${c} ${ips[c]} lies in its host's lease ${leases[i]}`);
    }
    await assertPings(1, 'c1', ips.c1b);
    await assertPings(1, 'c1', ips.c2);
    await assertPings(2, 'c2', ips.c3);
    await assertPings(3, 'c3', ips.c1);
    const sum = await makeBlob(2, 'c2');
    assert.equal(await fetchMd5(2, 'c2', 1, 'c1', ips.c2), sum, '2 MB over TCP from h2 to h1, intact');
    assert.equal(await fetchMd5(2, 'c2', 3, 'c3', ips.c2), sum, '2 MB over TCP from h2 to h3, intact');
    // Outbound the Docker way: docker_gwbridge (the container's default route) to the underlay.
    await assertPings(1, 'c1', dc.bed.switchIp);

    // An address of net1's range no host leases: the network's TUN takes it, its datapath has no
    // route, drops it and counts it in net1's own drops.
    const free = Array.from({ length: 250 }, (_, k) => `10.250.${k + 2}.0/24`).find((sn) => !leases.includes(sn)) as string;
    const noRouteBefore = (await dc.network(1, 'net1'))?.drops.tx_no_route ?? 0;
    await assertNoPing(1, 'c1', free.replace('.0/24', '.9'));
    const n1 = await dc.network(1, 'net1');
    assert.ok((n1?.drops.tx_no_route ?? 0) > noRouteBefore, `net1 counts tx_no_route: ${JSON.stringify(n1?.drops)}`);
    assert.ok((n1?.counters.txPackets ?? 0) > 0 && (n1?.counters.rxPackets ?? 0) > 0, `per-network counters: ${JSON.stringify(n1?.counters)}`);
    const table = await dc.cluster.statusTable(dc.host(1));
    assert.match(table, /net1\s+4096\s+10\.250\.0\.0\/16/);
    const metrics = await dc.bed.execOk(dc.host(1).ns, ['busybox', 'wget', '-q', '-O', '-', 'http://127.0.0.1:8286/metrics']);
    assert.match(metrics, /^vxnet_tx_packets_total\{network="net1"\} [1-9]/m);
    assert.match(metrics, /^vxnet_tx_packets_total [0-9]/m, "the daemon's own network keeps its series");
    assert.match(metrics, /^vxnet_docker_network_info\{network="net1",vni="4096",range="10\.250\.0\.0\/16"/m);
    assert.match(metrics, /^vxnet_peers\{network="net1",state="installed"\} 2$/m);
    assert.match(metrics, /^vxnet_drops_total\{network="net1",reason="tx_no_route"\} [1-9]/m);
  });

  test('net2 (two hosts) is isolated from net1 on the same host and across hosts; a container on both reaches both', async () => {
    await d(2).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', NET2, 'net2']);
    await dc.waitDockerNetwork(1, 'net2');
    const mesh = await dc.waitNetworkMesh('net2', [1, 2]);
    assert.equal(mesh.get(1)?.vni, 4097);
    // h3 does not sync: net2 is in etcd but not there.
    const st3 = await dc.status(3);
    assert.ok(st3.docker?.remoteNetworks.some((r) => r.name === 'net2' && r.vni === 4097), JSON.stringify(st3.docker?.remoteNetworks));
    ips.d1 = await run(1, 'd1', 'net2');
    ips.d2 = await run(2, 'd2', 'net2');
    await assertPings(1, 'd1', ips.d2);
    await assertPings(2, 'd2', ips.d1);
    // net1 -> net2, same host and across hosts: nothing answers, not ping and not TCP.
    await assertNoPing(1, 'c1', ips.d1);
    await assertNoPing(1, 'c1', ips.d2);
    await assertNoPing(2, 'c2', ips.d2);
    await assertNoPing(2, 'd2', ips.c2);
    await assertNoPing(1, 'd1', ips.c2);
    const sum = await makeBlob(2, 'd2');
    assert.equal(await fetchMd5(2, 'd2', 1, 'c1', ips.d2, 2), undefined, 'TCP net1 -> net2 across hosts fails');
    assert.equal(await fetchMd5(2, 'd2', 2, 'c2', ips.d2, 2), undefined, 'TCP net1 -> net2 on one host fails');
    assert.equal(await fetchMd5(2, 'd2', 1, 'd1', ips.d2), sum, 'TCP within net2 works');
    // A container on both networks reaches both.
    await d(1).dockerOk(['network', 'connect', 'net2', 'c1']);
    await assertPings(1, 'c1', ips.d1);
    await assertPings(1, 'c1', ips.d2);
    await assertPings(1, 'c1', ips.c2);
    assert.equal(await fetchMd5(2, 'd2', 1, 'c1', ips.d2), sum);
    // ...without bridging them: d1 still cannot reach net1.
    await assertNoPing(1, 'd1', ips.c1b);
  });

  test('a network whose range overlaps net1 and net2 (10.248.0.0/14) works across hosts and reaches neither', async () => {
    await d(1).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', '10.248.0.0/14', 'wide']);
    await dc.waitDockerNetwork(2, 'wide');
    const mesh = await dc.waitNetworkMesh('wide', [1, 2]);
    assert.ok(![4096, 4097].includes(mesh.get(1)?.vni as number), 'a VNI of its own');
    await run(1, 'w1', 'wide');
    const w2 = await run(2, 'w2', 'wide');
    await assertPings(1, 'w1', w2);
    // net1's and net2's addresses lie inside wide's range: wide routes them into its own TUN, where
    // no lease of wide holds them, so nothing of net1 or net2 is reached, on one host or across.
    const dropsBefore = (await dc.network(1, 'wide'))?.drops.tx_no_route ?? 0;
    for (const ip of [ips.c1b, ips.c2, ips.d1, ips.d2]) await assertNoPing(1, 'w1', ip);
    await assertNoPing(2, 'w2', ips.c2);
    assert.ok(((await dc.network(1, 'wide'))?.drops.tx_no_route ?? 0) > dropsBefore);
    await assertPings(1, 'c1', ips.c2);
    await d(1).dockerOk(['rm', '-f', 'w1']);
    await d(2).dockerOk(['rm', '-f', 'w2']);
    await d(1).dockerOk(['network', 'rm', 'wide']);
    await dc.cluster.waitFor(dc.host(2), 'wide gone', (s) => !(s.docker?.networks.some((n) => n.name === 'wide') ?? true));
  });

  test("bad requests from Docker answer in Docker's error shape, naming the option", async () => {
    const create = (args: string[]) => d(1).docker(['network', 'create', '-d', 'vxnet', ...args]);
    const cases: Array<[string[], RegExp]> = [
      [['--ipam-driver', 'vxnet', '--ipam-opt', 'colour=blue', '--subnet', '10.252.0.0/16', 'bad1'], /IpamDriver\.RequestPool: --ipam-opt colour: unknown vxnet IPAM option/],
      [['--subnet', '10.252.0.0/16', 'bad2'], /NetworkDriver\.CreateNetwork: --ipam-driver: vxnet networks take their addresses from the vxnet IPAM driver/],
      [['--ipam-driver', 'vxnet', '-o', 'colour=blue', '--subnet', '10.252.0.0/16', 'bad3'], /NetworkDriver\.CreateNetwork: -o colour: unknown vxnet driver option/],
      [['--ipam-driver', 'vxnet', '--subnet', '10.252.0.0/16', '--ip-range', '10.252.1.0/24', 'bad4'], /--ip-range: not supported/],
      [['--ipam-driver', 'vxnet', '--ipam-opt', 'vxnet.subnet-len=12', '--subnet', '10.252.0.0/16', 'bad5'], /--ipam-opt vxnet\.subnet-len: must be in 18\.\.30/],
      [['--ipam-driver', 'vxnet', '--subnet', NET1, 'net1again'], /--subnet: 10\.250\.0\.0\/16 is already the range of vxnet network net1/],
    ];
    for (const [args, want] of cases) {
      const r = await create(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, want, args.join(' '));
    }
    // An exhausted lease: /30 leases hold one container each.
    await d(1).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--ipam-opt', 'vxnet.subnet-len=30', '--subnet', '10.252.0.0/24', 'tiny']);
    await run(1, 'e1', 'tiny');
    const full = await d(1).docker(['run', '-d', '--init', '--name', 'e2', '--net', 'tiny', TEST_IMAGE, 'sleep', '1000']);
    assert.notEqual(full.code, 0);
    assert.match(full.stderr, /--ipam-opt vxnet\.subnet-len: no free address left in this host's lease 10\.252\.0\.\d+\/30/);
    await d(1).docker(['rm', '-f', 'e1', 'e2']);
    // --ip outside this host's lease.
    const lease = (await dc.network(1, 'net1'))?.lease as string;
    const other = (await dc.network(2, 'net1'))?.lease as string;
    const foreign = other.replace(/\.0\/24$/, '.77');
    const r = await d(1).docker(['run', '-d', '--init', '--name', 'e3', '--net', 'net1', '--ip', foreign, TEST_IMAGE, 'sleep', '1000']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`--ip: ${foreign.replace(/\./g, '\\.')} is not in this host's lease ${lease.replace(/\./g, '\\.')}`));
    await d(1).docker(['rm', '-f', 'e3']);
    // A raw call naming an unknown network, on the plugin socket itself.
    const script =
      "const h=require('http');const q=h.request({socketPath:'/run/docker/plugins/vxnet.sock',method:'POST',path:'/NetworkDriver.CreateEndpoint'},(s)=>{let b='';s.on('data',(c)=>b+=c);s.on('end',()=>{console.log(s.statusCode+' '+b)})});" +
      `q.end(JSON.stringify({NetworkID:'${'f'.repeat(64)}',EndpointID:'${'e'.repeat(64)}',Interface:{Address:'10.250.1.2/24'}}))`;
    const raw = await d(1).runOk([process.execPath, '-e', script]);
    assert.match(raw, /^404 \{"Err":"NetworkID: unknown vxnet network \\"f{64}\\""\}/);
    // The tiny network goes from h1, and with the sync from h2 too.
    await d(1).dockerOk(['network', 'rm', 'tiny']);
    await dc.cluster.waitFor(dc.host(2), 'tiny removed', (s) => !(s.docker?.networks.some((n) => n.name === 'tiny') ?? true));
    for (let i = 0; i < 100 && (await etcdKeys(`${ROOT}/networks/10.252.0.0-24/`)).length > 0; i++) await sleep(100);
    assert.deepEqual(await etcdKeys(`${ROOT}/networks/10.252.0.0-24/`), []);
  });

  test('container stop/start and a dockerd restart leave no stale veths; traffic resumes', async () => {
    assert.equal(await bridgePorts(2, 'net1'), 1);
    await d(2).dockerOk(['stop', '-t', '1', 'c2']);
    assert.equal(await bridgePorts(2, 'net1'), 0, 'the stopped container has no veth on the bridge');
    await d(2).dockerOk(['start', 'c2']);
    ips.c2 = await dc.containerIp(2, 'c2', 'net1');
    assert.equal(await bridgePorts(2, 'net1'), 1);
    await assertPings(1, 'c1', ips.c2);

    await d(2).stopDockerd();
    assert.equal(await bridgePorts(2, 'net1'), 0, 'dockerd stopped its containers: no veth left');
    assert.deepEqual((await leftovers(2)).links, []);
    await d(2).startDockerd();
    await d(2).dockerOk(['start', 'c2', 'd2']);
    ips.c2 = await dc.containerIp(2, 'c2', 'net1');
    ips.d2 = await dc.containerIp(2, 'd2', 'net2');
    assert.equal(await bridgePorts(2, 'net1'), 1);
    assert.equal(await bridgePorts(2, 'net2'), 1);
    await assertPings(1, 'c1', ips.c2);
    await assertPings(2, 'd2', ips.d1);
  });

  test('vxnet restart (SIGTERM, then kill -9): same leases and VNIs, local traffic goes on meanwhile, cross-host traffic resumes', async () => {
    const before = await dc.network(1, 'net1');
    const vnisBefore = (await etcdKeys(`${ROOT}/vnis/`)).sort();
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      await dc.cluster.stopDaemon(dc.host(1), signal);
      // The namespace outlives the daemon: containers of one host still talk.
      await assertPings(1, 'c1', ips.c1b);
      await dc.startVxnet(dc.host(1));
      const mesh = await dc.waitNetworkMesh('net1', [1, 2, 3]);
      assert.equal(mesh.get(1)?.lease, before?.lease, `${signal}: the same lease`);
      assert.equal(mesh.get(1)?.vni, 4096);
      await dc.waitNetworkMesh('net2', [1, 2]);
      await waitPings(1, 'c1', ips.c2);
      await assertPings(1, 'c1', ips.c2);
      await assertPings(3, 'c3', ips.c1);
      await assertPings(1, 'd1', ips.d2);
      assert.deepEqual((await etcdKeys(`${ROOT}/vnis/`)).sort(), vnisBefore);
      assert.equal((await etcdKeys(`${ROOT}/networks/10.250.0.0-16/subnets/`)).length, 3, `${signal}: no stale lease`);
      // The plugin answers at once after the restart (its stale socket was removed).
      const ip = await run(1, `r-${signal.toLowerCase()}`, 'net1');
      await assertPings(1, `r-${signal.toLowerCase()}`, ips.c2);
      assert.ok(ip);
    }
  });

  test('networks created at the same moment on different hosts get different VNIs', async () => {
    const specs: Array<[number, string, string]> = [
      [1, 'race1', '10.253.0.0/16'],
      [3, 'race2', '10.254.0.0/16'],
      [2, 'race3', '10.249.0.0/16'],
    ];
    await Promise.all(specs.map(([i, name, range]) => d(i).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', range, name])));
    const vnis = await Promise.all(specs.map(async ([i, name]) => (await dc.waitNetwork(i, name, 'up', (n) => n.vni > 0)).vni));
    assert.equal(new Set(vnis).size, 3, `distinct VNIs ${vnis.join(' ')}`);
    for (const v of vnis) assert.ok(v > 4097 && v < 2 ** 24, `VNI ${v} in Docker's range, not net1's or net2's`);
    // h1 and h2 sync: each race network appears on both; h3 does not: it has only its own.
    for (const [, name] of specs) for (const i of [1, 2]) await dc.waitDockerNetwork(i, name);
    for (const name of ['race1', 'race3']) assert.notEqual((await d(3).docker(['network', 'inspect', name])).code, 0, `${name} is not on h3`);
    // rm on h3 (no sync) removes only h3's copy: race2 stays in etcd, held by h1 and h2.
    await d(3).dockerOk(['network', 'rm', 'race2']);
    assert.equal((await dc.network(1, 'race2'))?.name, 'race2');
    assert.ok((await etcdKeys(`${ROOT}/networks/10.254.0.0-16/subnets/`)).length === 2, 'h1 and h2 still hold race2');
    // rm on h1 (sync) removes them from h2 too.
    for (const [, name] of specs) await d(1).dockerOk(['network', 'rm', name]);
    for (const [, name] of specs) await dc.cluster.waitFor(dc.host(2), `${name} gone`, (s) => !(s.docker?.networks.some((n) => n.name === name) ?? true));
  });

  test('--docker-plugin refuses the kernel vxlan backend (it holds port 8472), naming the flag, creating nothing', async () => {
    const conf = dc.cluster.writeFile('kvxlan.json', JSON.stringify({ Network: '10.243.0.0/16', Backend: { Type: 'vxlan', Datapath: 'kernel' } }));
    const sock = `${dc.cluster.dir}/refused.sock`;
    const r = await dc.bed.exec(dc.host(3).ns, [
      process.execPath,
      CLI_JS,
      'daemon',
      `--etcd-endpoints=${dc.cluster.endpoint}`,
      '--etcd-prefix=/vxnet-test-refused',
      `--net-config=${conf}`,
      '--iface=eth0',
      `--subnet-file=${dc.cluster.dir}/refused/subnet.env`,
      '--healthz-port=0',
      `--docker-plugin=${sock}`,
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^vxnet: --docker-plugin: Docker networks need UDP port 8472 for the userspace vxlan datapath, which the kernel vxlan backend \("Datapath": "kernel"\) holds/m);
    assert.equal(existsSync(sock), false);
    assert.doesNotMatch(await dc.bed.execOk(dc.host(3).ns, ['ip', '-o', 'link', 'show']), /flannel\./, 'no kernel vxlan device was made');
  });

  test('docker network rm on every host leaves no namespaces, veths, leases, records or VNIs', async () => {
    for (const i of [1, 2, 3]) {
      const ids = (await d(i).dockerOk(['ps', '-aq'])).split('\n').filter(Boolean);
      if (ids.length) await d(i).dockerOk(['rm', '-f', ...ids]);
    }
    // h1 removes net1; h2 syncs and removes it too; h3 does not sync and keeps it (and the record).
    await d(1).dockerOk(['network', 'rm', 'net1']);
    await dc.cluster.waitFor(dc.host(2), 'net1 removed by the sync', (s) => !(s.docker?.networks.some((n) => n.name === 'net1') ?? true));
    assert.ok((await dc.network(3, 'net1')) !== undefined);
    assert.ok((await etcdKeys(`${ROOT}/networks/10.250.0.0-16/`)).length > 0, 'h3 still holds net1');
    await d(3).dockerOk(['network', 'rm', 'net1']);
    await d(2).dockerOk(['network', 'rm', 'net2']);
    await dc.cluster.waitFor(dc.host(1), 'net2 removed by the sync', (s) => !(s.docker?.networks.some((n) => n.name === 'net2') ?? true));
    for (let i = 0; i < 100 && (await etcdKeys()).length > 0; i++) await sleep(100);
    assert.deepEqual(await etcdKeys(), [], 'no record, name, VNI or lease left in etcd');
    for (const i of [1, 2, 3]) {
      const st = await dc.status(i);
      assert.deepEqual(st.docker?.networks, [], `h${i} has no docker network`);
      assert.deepEqual(await leftovers(i), { links: [], mounts: [] }, `h${i}: no veth or namespace left`);
    }
  });
});

describe('docker networks beside the host-gw backend (a VXLAN port of their own)', () => {
  let hg: DockerCluster;
  before(async () => {
    hg = await DockerCluster.create({ hosts: 2, tag: 'dockhg', backend: { Type: 'host-gw' } });
  });
  after(async () => {
    await hg?.destroy();
    assert.equal(rootState(), rootBefore, "the root namespace's links, routes and iptables are unchanged");
  });

  test('a network across two host-gw hosts: containers talk, the port counts what no network takes', async () => {
    await hg.dockerOf(1).dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', NET1, 'net1']);
    await hg.waitDockerNetwork(2, 'net1');
    await hg.waitNetworkMesh('net1', [1, 2]);
    await hg.dockerOf(1).dockerOk(['run', '-d', '--init', '--name', 'x1', '--net', 'net1', TEST_IMAGE, 'sleep', '1000000']);
    await hg.dockerOf(2).dockerOk(['run', '-d', '--init', '--name', 'x2', '--net', 'net1', TEST_IMAGE, 'sleep', '1000000']);
    const x2 = await hg.containerIp(2, 'x2', 'net1');
    const r = await hg.dockerOf(1).exec('x1', ['ping', '-c', '2', '-W', '2', x2]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const st = await hg.status(1);
    assert.equal(st.backend.kind, 'host-gw');
    assert.ok(st.docker?.portDrops && 'rx_bad_vni' in st.docker.portDrops, JSON.stringify(st.docker?.portDrops));
    const n = st.docker?.networks.find((x) => x.name === 'net1');
    assert.ok((n?.counters.txPackets ?? 0) > 0);
  });
});
