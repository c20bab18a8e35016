// `npm run demo`: three hosts in network namespaces with a local etcd, one `vxnet daemon` each,
// docker0 readdressed from subnet.env, cross-host container traffic, `vxnet status`, teardown.
// `--keep` leaves it running until Ctrl-C; `--backend` picks udp, vxlan, kernel-vxlan or host-gw.
// `--docker`: two hosts with a real dockerd each, two isolated vxnet Docker networks across them.
import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { BACKEND_KINDS, descriptorOf, type BackendKind } from './backend/registry';
import { Cluster, CLI_JS } from './testbed/cluster';
import { iperf3Tcp, ping } from './testbed/traffic';
import { DockerCluster } from './testbed/docker-cluster';
import { TEST_IMAGE } from './testbed/docker';

interface DemoArgs {
  keep: boolean;
  backend: BackendKind;
  hosts: number;
  docker: boolean;
  hostsGiven: boolean;
}

/** A bad demo command line: one line naming the argument, exit 2. */
class DemoUsageError extends Error {}

const USAGE = `usage: npm run demo -- [--keep] [--backend ${BACKEND_KINDS.join('|')}] [--hosts N] [--docker]`;

function parseDemoArgs(argv: string[]): DemoArgs {
  let values: { keep?: boolean; backend?: string; hosts?: string; docker?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: { keep: { type: 'boolean' }, backend: { type: 'string' }, hosts: { type: 'string' }, docker: { type: 'boolean' } },
    }));
  } catch (err) {
    throw new DemoUsageError((err as Error).message.replace(/\. To specify a positional argument.*$/, ''));
  }
  const backend = values.backend ?? 'vxlan';
  if (!(BACKEND_KINDS as readonly string[]).includes(backend)) throw new DemoUsageError(`--backend: unknown ${JSON.stringify(backend)} (${BACKEND_KINDS.join(', ')})`);
  const hosts = values.hosts === undefined ? 3 : Number(values.hosts);
  if (!Number.isInteger(hosts) || hosts < 2 || hosts > 8) throw new DemoUsageError(`--hosts: must be a whole number in 2..8, got ${JSON.stringify(values.hosts)}`);
  return { keep: values.keep === true, backend: backend as BackendKind, hosts, docker: values.docker === true, hostsGiven: values.hosts !== undefined };
}

const t0 = Date.now();
function say(msg: string): void {
  process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
}

function indent(text: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');
}

/** What a demo scenario found: failed checks, and the commands worth trying when the cluster is kept. */
interface Outcome {
  failures: number;
  hints: string[];
}

/**
 * Runs a scenario on a built cluster, then either keeps the cluster up (--keep: prints the hints and
 * waits for Ctrl-C) or tears it down, also when the scenario throws. Ctrl-C or SIGTERM at any point
 * removes everything (the testbed's own handler has already removed namespaces and processes
 * synchronously; this removes the temp dir). Returns the number of failed checks.
 */
async function hold(cluster: { dir: string }, keep: boolean, teardown: { say: string; destroy: () => Promise<void> }, scenario: () => Promise<Outcome>): Promise<number> {
  const onSignal = () => {
    rmSync(cluster.dir, { recursive: true, force: true });
    process.stdout.write('\ninterrupted: namespaces and processes removed\n');
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { failures, hints } = await scenario();
    if (keep) {
      say('--keep: the cluster stays up until Ctrl-C. Try, as root:');
      process.stdout.write([...hints.map((h) => `    ${h}`), ''].join('\n'));
      await new Promise<never>(() => undefined);
    }
    return failures;
  } finally {
    if (!keep) {
      say(teardown.say);
      await teardown.destroy();
    }
  }
}

/** The exit code for `failures`, said in words. */
function verdict(failures: number, failed: string, passed: string): number {
  say(failures > 0 ? `${failures} ${failed}` : passed);
  return failures > 0 ? 1 : 0;
}

/**
 * `--docker`: hosts with a real dockerd each (Debian docker.io) and vxnet serving the Docker plugin;
 * net1 and net2 created on h1 appear on the other hosts (--docker-sync-networks); containers on
 * each network talk across hosts, never across networks.
 */
async function dockerDemo(args: DemoArgs): Promise<number> {
  // Two hosts unless --hosts says otherwise (each runs a dockerd: keep it small).
  const hosts = args.hostsGiven ? args.hosts : 2;
  say(`building ${hosts} hosts in network namespaces, each with its own dockerd and vxnet daemon (--docker-plugin --docker-sync-networks)`);
  const dc = await DockerCluster.create({ hosts, tag: 'demod' });
  const c = dc.cluster;
  const hostIdx = c.bed.hosts.map((h) => h.index);
  const teardown = { say: 'tearing down: containers, dockerd, vxnet daemons, etcd, namespaces', destroy: () => dc.destroy() };
  const failures = await hold(c, args.keep, teardown, async () => {
    let failures = 0;
    const h1 = dc.dockerOf(1);
    for (const [net, range] of [['net1', '10.250.0.0/16'], ['net2', '10.251.0.0/16']]) {
      say(`h1: docker network create -d vxnet --ipam-driver vxnet --subnet ${range} ${net}`);
      await h1.dockerOk(['network', 'create', '-d', 'vxnet', '--ipam-driver', 'vxnet', '--subnet', range, net]);
    }
    for (const i of hostIdx.slice(1)) for (const net of ['net1', 'net2']) await dc.waitDockerNetwork(i, net);
    for (const net of ['net1', 'net2']) {
      const mesh = await dc.waitNetworkMesh(net, hostIdx);
      say(`${net}: VNI ${mesh.get(1)?.vni}, on every host; leases ${hostIdx.map((i) => `h${i} ${mesh.get(i)?.lease}`).join(', ')}`);
    }
    const ips = new Map<string, { host: number; ip: string; net: string }>();
    for (const i of hostIdx) {
      for (const [prefix, net] of [['a', 'net1'], ['b', 'net2']]) {
        const name = `${prefix}${i}`;
        await dc.dockerOf(i).dockerOk(['run', '-d', '--init', '--name', name, '--net', net, TEST_IMAGE, 'sleep', '1000000']);
        const ip = await dc.containerIp(i, name, net);
        ips.set(name, { host: i, ip, net });
        say(`h${i}: docker run --net ${net} --name ${name} -> ${ip}`);
      }
    }
    say('pings (2 each) between containers:');
    for (const [from, f] of ips) {
      for (const [to, t] of ips) {
        if (from === to || (f.host === t.host && f.net === t.net)) continue;
        const r = await dc.dockerOf(f.host).exec(from, ['ping', '-c', '2', '-W', '1', t.ip]);
        const got = / 2 packets received/.test(r.stdout);
        const want = f.net === t.net;
        if (got !== want) failures++;
        say(`  ${from} (h${f.host} ${f.net}) -> ${to} ${t.ip} (h${t.host} ${t.net}): ${got ? 'answers' : 'no answer'}${want ? '' : ' (isolated: expected)'}${got !== want ? '  UNEXPECTED' : ''}`);
      }
    }
    say('vxnet status on h1 (Docker part):');
    const table = await c.statusTable(c.host(1));
    process.stdout.write(indent(table.slice(table.indexOf('docker    plugin'))) + '\n');
    const hints = [
      `DOCKER_HOST=unix://${h1.sock} docker ps`,
      `DOCKER_HOST=unix://${h1.sock} docker exec a1 ping ${ips.get('a2')?.ip ?? ''}`,
      `ip netns exec ${c.host(1).ns} ${process.execPath} ${CLI_JS} status --subnet-file=${c.subnetFile(c.host(1))}`,
      `nsenter -t ${h1.pid} -m -n -- nsenter --net=${(await dc.network(1, 'net1'))?.namespace ?? ''} ip route   # net1's routing table on h1`,
      `ip netns exec ${c.bed.switchNs} etcdctl --endpoints=${c.endpoint} get --prefix /coreos.com/network/docker/`,
    ];
    return { failures, hints };
  });
  return verdict(failures, 'check(s) failed', 'done: each network reaches across hosts, neither reaches the other');
}

async function main(): Promise<number> {
  let args: DemoArgs;
  try {
    args = parseDemoArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof DemoUsageError)) throw err;
    process.stderr.write(`demo: ${err.message}\n${USAGE}\n`);
    return 2;
  }
  if (args.docker) return dockerDemo(args);
  const netConf = { Network: '10.244.0.0/16', SubnetLen: 24, Backend: { ...descriptorOf(args.backend).section } };
  say(`building ${args.hosts} hosts in network namespaces (underlay 198.18.0.0/24, etcd on the switch at 198.18.0.254)`);
  const c = await Cluster.create({ hosts: args.hosts, tag: 'demo' });
  const teardown = { say: 'tearing down: SIGTERM to the daemons, etcd stopped, namespaces deleted', destroy: () => c.destroy() };
  const failures = await hold(c, args.keep, teardown, async () => {
    let failures = 0;
    say(`etcd ${c.endpoint} running (data in a temp dir); namespaces ${c.bed.namespaceNames().join(' ')}`);
    const netConfFile = c.writeFile('net-conf.json', JSON.stringify(netConf, null, 2));
    say(`starting vxnet daemons with --net-config ${JSON.stringify(netConf)}`);
    // All at once, as hosts booting together would: the etcd transaction keeps their subnets apart.
    await Promise.all(c.bed.hosts.map((h) => c.startDaemon(h, { args: [`--net-config=${netConfFile}`, '--ip-masq'] })));
    for (const h of c.bed.hosts) {
      const env = await c.subnetEnv(h);
      say(`${h.name} (${h.underlayIp}): lease ${(await c.status(h)).lease.subnet}, FLANNEL_MTU=${env.mtu}; docker0 readdressed, container ${h.containerIp}`);
    }
    await c.waitForMesh(30_000);
    say('every daemon has every peer installed');

    const dockerOpts = await c.bed.execOk(c.host(1).ns, [process.execPath, CLI_JS, 'docker-opts', `--subnet-file=${c.subnetFile(c.host(1))}`]);
    say(`vxnet docker-opts on h1: ${dockerOpts.trim()}`);

    say('cross-host container traffic:');
    for (const a of c.bed.hosts) {
      for (const b of c.bed.hosts) {
        if (a === b) continue;
        const r = await ping(c.bed, a.containerNs, b.containerIp as string, { count: 3, intervalS: 0.2, timeoutS: 2 });
        const ok = r.received === r.transmitted;
        if (!ok) failures++;
        const avg = r.rttMs.length ? (r.rttMs.reduce((x, y) => x + y, 0) / r.rttMs.length).toFixed(3) : '-';
        say(`  ping ${a.name}c ${a.containerIp} -> ${b.name}c ${b.containerIp}: ${r.received}/${r.transmitted} replies, avg ${avg} ms${ok ? '' : '  FAILED'}`);
      }
    }
    const [h1, h2] = c.bed.hosts;
    try {
      const r = await iperf3Tcp(c.bed, h2.containerNs, h2.containerIp as string, h1.containerNs, { seconds: 3 });
      say(`  iperf3 TCP ${h1.name}c -> ${h2.name}c: ${(r.bitsPerSecond / 1e9).toFixed(2)} Gbit/s (1 stream, 3 s)`);
    } catch (err) {
      failures++;
      say(`  iperf3 TCP ${h1.name}c -> ${h2.name}c FAILED: ${(err as Error).message}`);
    }

    say(`vxnet status on ${h1.name}:`);
    process.stdout.write(indent(await c.statusTable(h1)) + '\n');

    const hints = [
      `ip netns exec ${h1.ns} ${process.execPath} ${CLI_JS} status --subnet-file=${c.subnetFile(h1)}`,
      `ip netns exec ${h1.containerNs} ping ${h2.containerIp}`,
      `ip netns exec ${c.bed.switchNs} etcdctl --endpoints=${c.endpoint} get --prefix /coreos.com/network/`,
      `daemon logs: ${c.dir}/h*.log`,
    ];
    return { failures, hints };
  });
  return verdict(failures, 'traffic check(s) failed', 'done: all cross-host traffic checks passed');
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`demo failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
