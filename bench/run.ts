// `vxnet bench` / `npm run bench`: builds its own namespaced bed (three hosts with docker0 bridges
// and containers, a local etcd in the underlay switch), runs the real daemon on it and measures
// every backend in one run, against kernel-vxlan measured on the same bed in the same run.
//
//   node dist/bench/run.js [--quick] [--runs N] [--json FILE] [--svg FILE] [--docs] [--backends a,b]
//                          [--scaling-backends a,b] [--no-scaling] [--no-micro] [--direct]
//
// --runs N repeats the whole suite N times (a fresh bed each time) and reports per metric the
// median and the min–max spread; ratios to kernel-vxlan are taken per run, then summarised.
//
// Exit status: 0 when every measurement ran, 1 when one could not run, 2 for bad arguments,
// 130 on Ctrl-C. Figures are never judged here. Namespaces, daemons, etcd and temporary files are
// removed on every exit path (NetBed and the etcd launcher hook process exit and signals).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync, type ChildProcess } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { NetBed, type BedHost } from '../src/testbed/netbed';
import { startEtcd, type EtcdServer } from '../src/testbed/etcd';
import { stopChild } from '../src/testbed/children';
import { parseNetworkConfig, subnetAt, subnetCount } from '../src/subnet/config';
import { configKey, encodeLeaseValue, leaseKey, DEFAULT_PREFIX } from '../src/subnet/lease';
import { cidrHost, formatCidr, formatIPv4, parseCidr } from '../src/net/ip';
import { readSubnetEnv } from '../src/host/subnet-env';
import { FLANNEL_DEFAULT_PORT } from '../src/backend/common';
import type { AgentRequest, StatusLike, WireLease } from './agent';
import { flood, PKTGEN, rtt, tcp, type FloodOptions, type FloodResult } from './lib/bedtools';
import { DEFAULT_LOSS_LIMIT, searchNoLoss } from './lib/search';
import { summarizeRuns } from './lib/summary';
import { processRssMB } from './lib/proc';
import { renderFloors } from './lib/floors';
import { BACKENDS, BackendName, BackendResult, BenchResult, METRIC_KEYS, METRICS, REFERENCE, ScalingPoint, type Spread, computeRatios, failedBackend, validateResult } from './lib/schema';
import { human, ratio, sig } from './lib/stats';
import { renderChart } from './lib/svg';
import { renderMarkdown } from './lib/report';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const AGENT = path.join(__dirname, 'agent.js');
const NETWORK = '10.244.0.0/16';
const ETCD_PORT = 2379;

interface Options {
  quick: boolean;
  json?: string;
  svg?: string;
  docs: boolean;
  backends: BackendName[];
  scalingBackends: BackendName[];
  scalingPoints: number[];
  scaling: boolean;
  micro: boolean;
  direct: boolean;
  tag: string;
  seconds: number;
  /** Generator thread counts to try; each flood keeps the one that delivered most. */
  genThreads: number[];
  pings: number;
  pingInterval: number;
  /** Whole-suite repetitions (--runs). */
  runs: number;
  /** The zero-loss search: on/off, trials per backend, seconds per trial. */
  noLoss: boolean;
  noLossTrials: number;
  trialSeconds: number;
}

const USAGE = `usage: vxnet bench [options]      (also: npm run bench -- [options])
  --quick                  short measurements (a few seconds each): a smoke run
  --runs N                 run the whole suite N times; report medians and min–max spread (default 1)
  --json FILE              write the results as JSON
  --svg FILE               render the chart (default: beside --json, FILE.svg)
  --docs                   also write docs/bench/latest.{json,svg} and docs/benchmarks.md
  --backends LIST          comma-separated subset of ${BACKENDS.join(',')} (default: all)
  --scaling-backends LIST  backends for the route-table scaling runs (default: vxlan,kernel-vxlan; full: all)
  --no-scaling             skip scaling and control-plane measurements
  --no-micro               skip the microbenchmarks
  --seconds N              seconds per throughput/flood measurement (default 10, quick 3)
  --gen-threads N          64-byte generator threads (default: try CPUs - 1 and CPUs, keep the better)
  --trials N               paced trials of the 64-byte zero-loss search per backend (default 7, quick 5)
  --trial-seconds N        seconds per zero-loss trial (default 4, quick 2; at most --seconds)
  --no-zero-loss           skip the 64-byte zero-loss search
  --direct                 drive backends without the daemon and etcd (development aid)
  --tag TAG                namespace tag, [a-z0-9]{1,8} (default bench)`;

class UsageError extends Error {}

function parseList(v: string, what: string): BackendName[] {
  const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const x of xs) if (!(BACKENDS as readonly string[]).includes(x)) throw new UsageError(`${what}: unknown backend ${JSON.stringify(x)}`);
  return xs as BackendName[];
}

export function parseArgs(argv: string[]): Options | 'help' {
  const o: Partial<Options> & { docs: boolean; scaling: boolean; micro: boolean; direct: boolean; quick: boolean; noLoss: boolean } = {
    quick: false,
    docs: false,
    scaling: true,
    micro: true,
    direct: false,
    noLoss: true,
  };
  let scalingBackends: BackendName[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    const num = (min: number) => {
      const v = Number(val());
      if (!Number.isFinite(v) || v < min) throw new UsageError(`${a}: must be a number ≥ ${min}`);
      return v;
    };
    switch (a) {
      case '-h':
      case '--help':
        return 'help';
      case '--quick':
        o.quick = true;
        break;
      case '--json':
        o.json = val();
        break;
      case '--svg':
        o.svg = val();
        break;
      case '--docs':
        o.docs = true;
        break;
      case '--backends':
        o.backends = parseList(val(), a);
        break;
      case '--scaling-backends':
        scalingBackends = parseList(val(), a);
        break;
      case '--no-scaling':
        o.scaling = false;
        break;
      case '--no-micro':
        o.micro = false;
        break;
      case '--direct':
        o.direct = true;
        break;
      case '--tag':
        o.tag = val();
        if (!/^[a-z0-9]{1,8}$/.test(o.tag)) throw new UsageError('--tag must match [a-z0-9]{1,8}');
        break;
      case '--seconds':
        o.seconds = num(1);
        break;
      case '--gen-threads':
        o.genThreads = [Math.floor(num(1))];
        break;
      case '--runs':
        o.runs = Math.floor(num(1));
        break;
      case '--trials':
        o.noLossTrials = Math.floor(num(2));
        break;
      case '--trial-seconds':
        o.trialSeconds = num(0.5);
        break;
      case '--no-zero-loss':
        o.noLoss = false;
        break;
      default:
        throw new UsageError(`unknown argument ${JSON.stringify(a)}`);
    }
  }
  const quick = o.quick;
  const seconds = o.seconds ?? (quick ? 3 : 10);
  return {
    quick,
    json: o.json,
    svg: o.svg ?? (o.json ? o.json.replace(/\.json$/, '') + '.svg' : undefined),
    docs: o.docs,
    backends: o.backends ?? [...BACKENDS],
    scalingBackends: scalingBackends ?? (quick ? ['vxlan', 'kernel-vxlan'] : [...BACKENDS]),
    scalingPoints: [2, 3, 1000, 10000],
    scaling: o.scaling,
    micro: o.micro,
    direct: o.direct,
    tag: o.tag ?? 'bench',
    seconds,
    // A userspace forwarder needs a core the generator leaves free, while the kernel datapaths forward
    // inside the sending thread and gain from more senders: try both and keep the better one.
    genThreads: o.genThreads ?? [...new Set([Math.max(1, os.cpus().length - 1), Math.min(4, os.cpus().length)])],
    pings: quick ? 400 : 1000,
    pingInterval: quick ? 0.005 : 0.01,
    runs: o.runs ?? 1,
    noLoss: o.noLoss,
    noLossTrials: o.noLossTrials ?? (quick ? 5 : 7),
    trialSeconds: o.trialSeconds ?? Math.min(seconds, quick ? 2 : 4),
  };
}

// ---------------------------------------------------------------------------------------- progress

class Progress {
  private readonly t0 = Date.now();
  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  private stamp(): string {
    const s = Math.floor((Date.now() - this.t0) / 1000);
    return `[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}]`;
  }

  line(msg: string): void {
    this.out.write(`${this.stamp()} ${msg}\n`);
  }
}

// ------------------------------------------------------------------------------------ agent (IPC)

class Agent {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private stderr = '';

  private constructor(
    readonly ns: string,
    readonly child: ChildProcess,
  ) {
    child.on('message', (raw) => {
      const m = raw as { id?: number; ok?: boolean; result?: unknown; error?: string };
      if (m.id === undefined) return;
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.ok) p?.resolve(m.result);
      else p?.reject(new Error(m.error));
    });
    child.stderr?.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-4000)));
    child.on('exit', (code, sig) => {
      for (const p of this.pending.values()) p.reject(new Error(`bench agent in ${ns} exited (${code ?? sig}): ${this.stderr.trim()}`));
      this.pending.clear();
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  static async start(bed: NetBed, ns: string): Promise<Agent> {
    const child = bed.spawn(ns, [process.execPath, AGENT], { stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });
    const agent = new Agent(ns, child);
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`bench agent in ${ns} exited before ready (${code}): ${agent.stderr.trim()}`)));
    });
    return agent;
  }

  call<T>(req: AgentRequest): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, req });
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try {
        this.child.disconnect();
      } catch {
        // already disconnected
      }
    }
    await stopChild(this.child, 5_000);
  }
}

// --------------------------------------------------------------------------------- the overlay

interface RunningHost {
  host: BedHost;
  /** The forwarding process: the daemon, or in --direct mode the agent running the backend. */
  pid: number;
  subnet: string;
  mtu: number;
  subnetFile: string;
  daemon?: ChildProcess;
  logTail: () => string;
  agent?: Agent;
}

interface NetConf {
  Network: string;
  SubnetLen: number;
  Backend: Record<string, unknown>;
}

function backendSection(b: BackendName): Record<string, unknown> {
  switch (b) {
    case 'udp':
      return { Type: 'udp' };
    case 'vxlan':
      return { Type: 'vxlan', Datapath: 'userspace' };
    case 'kernel-vxlan':
      return { Type: 'vxlan', Datapath: 'kernel' };
    case 'host-gw':
      return { Type: 'host-gw' };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Overlay {
  hosts: RunningHost[] = [];

  constructor(
    private readonly bed: NetBed,
    private readonly control: Agent | undefined,
    private readonly tmp: string,
    private readonly direct: boolean,
  ) {}

  get endpoint(): string {
    return `http://${this.bed.switchIp}:${ETCD_PORT}`;
  }

  /** Starts the overlay on `hosts` with `conf`; resolves once container 1 reaches container 2. */
  async start(hosts: BedHost[], conf: NetConf): Promise<void> {
    if (this.hosts.length) await this.stop();
    if (this.direct) await this.startDirect(hosts, conf);
    else await this.startDaemons(hosts, conf);
    await this.waitConnected();
  }

  private async startDaemons(hosts: BedHost[], conf: NetConf): Promise<void> {
    const ctl = this.control!;
    await ctl.call({ op: 'etcdDeletePrefix', endpoint: this.endpoint, prefix: `${DEFAULT_PREFIX}/` });
    await ctl.call({ op: 'etcdPut', endpoint: this.endpoint, kvs: [[configKey(DEFAULT_PREFIX), JSON.stringify(conf)]] });
    for (const host of hosts) {
      const dir = path.join(this.tmp, host.name);
      mkdirSync(dir, { recursive: true });
      const subnetFile = path.join(dir, 'subnet.env');
      rmSync(subnetFile, { force: true });
      const argv = [process.execPath, CLI, 'daemon', '--etcd-endpoints', this.endpoint, '--iface', 'eth0', '--subnet-file', subnetFile, '--healthz-port', '0'];
      const daemon = this.bed.spawn(host.ns, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let tail = '';
      const keep = (b: Buffer) => (tail = (tail + b.toString()).slice(-6000));
      daemon.stdout?.on('data', keep);
      daemon.stderr?.on('data', keep);
      this.hosts.push({ host, pid: daemon.pid ?? -1, subnet: '', mtu: 0, subnetFile, daemon, logTail: () => tail });
    }
    await Promise.all(
      this.hosts.map(async (h) => {
        const deadline = Date.now() + 30_000;
        for (;;) {
          if (h.daemon && (h.daemon.exitCode !== null || h.daemon.signalCode !== null)) {
            throw new Error(`daemon on ${h.host.name} exited (${h.daemon.exitCode ?? h.daemon.signalCode}): ${h.logTail().trim().split('\n').slice(-8).join(' | ')}`);
          }
          // The daemon writes subnet.env atomically, once startup has succeeded.
          const env = await readSubnetEnv(h.subnetFile);
          if (env) {
            h.subnet = `${formatIPv4(cidrHost(env.subnet, 1))}/${env.subnet.prefixLen}`;
            h.mtu = env.mtu;
            break;
          }
          if (Date.now() > deadline) throw new Error(`daemon on ${h.host.name} wrote no subnet file in 30 s: ${h.logTail().trim().split('\n').slice(-8).join(' | ')}`);
          await sleep(100);
        }
        await h.host.setContainerSubnet(h.subnet, h.mtu);
      }),
    );
  }

  private async startDirect(hosts: BedHost[], conf: NetConf): Promise<void> {
    const cfg = parseNetworkConfig(JSON.stringify(conf));
    const leases: WireLease[] = [];
    for (const [i, host] of hosts.entries()) {
      const agent = await Agent.start(this.bed, host.ns);
      const sn = subnetAt(cfg, i);
      const iface = { name: 'eth0', address: host.underlayIp, publicIp: host.underlayIp, mtu: this.bed.underlayMtu };
      const common = { backend: conf.Backend, iface, network: conf.Network, subnetLen: conf.SubnetLen };
      const r = await agent.call<{ mtu: number; pid: number }>({ op: 'backendStart', ...common, subnet: formatCidr(sn) });
      const attrs = await agent.call<WireLease['attrs']>({ op: 'backendAttrs', ...common });
      leases.push({ subnet: formatCidr(sn), attrs });
      const gw = `${formatIPv4((sn.ip + 1) >>> 0)}/${sn.prefixLen}`;
      this.hosts.push({ host, pid: agent.pid, subnet: gw, mtu: r.mtu, subnetFile: '', logTail: () => '', agent });
      await host.setContainerSubnet(gw, r.mtu);
    }
    this.directLeases = leases;
    await this.setDirectPeers([]);
  }

  private directLeases: WireLease[] = [];

  /** --direct: every host gets all other real hosts' leases plus `extra`. */
  async setDirectPeers(extra: WireLease[]): Promise<number> {
    let seconds = 0;
    for (const [i, h] of this.hosts.entries()) {
      const peers = [...this.directLeases.filter((_, j) => j !== i), ...(i === 0 ? extra : [])];
      const r = await h.agent!.call<{ seconds: number }>({ op: 'backendPeers', peers });
      if (i === 0) seconds = r.seconds;
    }
    return seconds;
  }

  private async waitConnected(): Promise<void> {
    const [a, b] = this.hosts;
    const to = b.host.containerIp!;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await this.bed.exec(a.host.containerNs, ['ping', '-n', '-c', '1', '-W', '1', to], { timeoutMs: 5_000 });
      if (r.code === 0) return;
      if (Date.now() > deadline) {
        const logs = this.hosts.map((h) => `${h.host.name}: ${h.logTail().trim().split('\n').slice(-5).join(' | ')}`).join('; ');
        throw new Error(`container ${a.host.name} cannot reach ${to} on ${b.host.name} within 30 s${logs ? ` (${logs})` : ''}`);
      }
      await sleep(200);
    }
  }

  async status(h: RunningHost): Promise<StatusLike> {
    if (!this.control || this.direct) throw new Error('status needs the daemon');
    return this.control.call<StatusLike>({ op: 'status', subnetFile: h.subnetFile });
  }

  /** Stops the daemons (SIGTERM) and removes whatever they left on the hosts. */
  async stop(): Promise<void> {
    const hosts = this.hosts;
    this.hosts = [];
    await Promise.all(
      hosts.map(async (h) => {
        if (h.daemon) await stopChild(h.daemon, 10_000);
        if (h.agent) {
          await h.agent.call({ op: 'backendClose' }).catch(() => undefined);
          await h.agent.stop();
        }
      }),
    );
    for (const h of hosts) await scrubHost(this.bed, h.host);
  }
}

/** Deletes overlay devices and routes a stopped daemon may have left (flannel leaves routes). */
async function scrubHost(bed: NetBed, host: BedHost): Promise<void> {
  const links = JSON.parse(await bed.execOk(host.ns, ['ip', '-j', 'link', 'show'])) as Array<{ ifname: string }>;
  const keep = new Set(['lo', 'eth0', 'docker0', 'veth0']);
  const lines = links.filter((l) => !keep.has(l.ifname)).map((l) => `link del dev ${l.ifname}`);
  if (lines.length) await bed.ipBatch(host.ns, lines, `remove leftover devices on ${host.name}`).catch(() => undefined);
  await bed.exec(host.ns, ['ip', 'route', 'flush', 'root', NETWORK]);
}

// ------------------------------------------------------------------------------------- machine

function tryRun(cmd: string, args: string[]): string | undefined {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return undefined;
  }
}

/** lscpu's "Model name" (what the issue asks the docs to name), else what node reports. */
function cpuModel(): string | undefined {
  const line = tryRun('lscpu', [])?.split('\n').find((l) => /^Model name:/.test(l));
  return line?.replace(/^Model name:\s*/, '').trim() || os.cpus()[0]?.model?.trim();
}

function machineInfo(opts: Options): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpuModel(),
    memGB: sig(os.totalmem() / 2 ** 30, 3),
    kernel: os.release(),
    arch: process.arch,
    node: process.version,
    iperf3: tryRun('iperf3', ['--version'])?.split('\n')[0],
    etcd: tryRun('/usr/bin/etcd', ['--version'])?.split('\n')[0],
    loadAvgAtStart: os.loadavg().map((v) => sig(v, 3)),
    generatorThreads: opts.genThreads,
    secondsPerMeasurement: opts.seconds,
    zeroLossSearch: opts.noLoss ? `${opts.noLossTrials} trials of ${opts.trialSeconds} s, loss ≤ ${DEFAULT_LOSS_LIMIT * 100} %` : 'skipped',
    pingSamples: opts.pings,
    mode: opts.direct ? 'direct (backends without daemon)' : 'daemon',
    addon: process.env.VXNET_ADDON || 'build/Release/vxnet_datapath.node',
    generator: PKTGEN,
  };
}

/** The invocation as typed, with the environment overrides that change what is measured. */
function commandLine(argv: string[]): string {
  const env = ['VXNET_ADDON', 'VXNET_PKTGEN'].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`);
  const viaCli = /(^|\/)cli\.js$/.test(process.argv[1] ?? '');
  return [...env, viaCli ? 'vxnet bench' : 'node dist/bench/run.js', ...argv].join(' ');
}

// ------------------------------------------------------------------------------------- the run

class Runner {
  readonly result: BenchResult;
  readonly errors: string[] = [];
  private bed?: NetBed;
  private etcd?: EtcdServer;
  private control?: Agent;
  private overlay?: Overlay;
  private readonly tmp: string;
  private readonly progress = new Progress();

  constructor(
    private readonly opts: Options,
    argv: string[],
  ) {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), 'vxnet-bench-'));
    this.result = {
      machine: machineInfo(opts),
      backends: {} as BenchResult['backends'],
      command: commandLine(argv),
      quick: opts.quick,
      startedAt: new Date().toISOString(),
    };
  }

  private log(msg: string): void {
    this.progress.line(msg);
  }

  private fail(where: string, e: unknown): string {
    const msg = `${where}: ${(e as Error).message ?? String(e)}`;
    this.errors.push(msg);
    this.log(`FAILED ${msg}`);
    return msg;
  }

  removeTmp(): void {
    rmSync(this.tmp, { recursive: true, force: true });
  }

  async run(): Promise<void> {
    const t0 = Date.now();
    try {
      await this.setup();
      for (const b of this.order(this.opts.backends)) await this.measureBackend(b);
      this.result.ratios = computeRatios(this.result.backends);
      this.generatorCheck();
      if (this.opts.scaling) await this.scalingAll();
    } catch (e) {
      this.fail('bed', e);
    } finally {
      await this.teardown();
    }
    if (this.opts.micro) {
      this.log('microbenchmarks (encap, decap, route lookup, lease parsing)');
      try {
        const { runMicro } = await import('./micro');
        this.result.micro = runMicro({ quick: this.opts.quick, log: (l) => this.log(l.trim()) });
      } catch (e) {
        this.fail('micro', e);
      }
    }
    for (const b of BACKENDS) this.result.backends[b] ??= failedBackend(this.opts.backends.includes(b) ? 'not measured' : 'not selected (--backends)');
    this.result.ratios = computeRatios(this.result.backends);
    this.result.durationSeconds = Math.round((Date.now() - t0) / 1000);
    this.result.machine.loadAvgAtEnd = os.loadavg().map((v) => sig(v, 3));
    this.result.errors = this.errors;
  }

  /** The reference first, so every later figure can show its ratio as it is printed. */
  private order(bs: BackendName[]): BackendName[] {
    return [...bs].sort((a, b) => Number(b === REFERENCE) - Number(a === REFERENCE) || BACKENDS.indexOf(a) - BACKENDS.indexOf(b));
  }

  private async setup(): Promise<void> {
    if (!existsSync(PKTGEN)) throw new Error(`${PKTGEN} is missing: build with node-gyp (npm install)`);
    if (!this.opts.direct && !existsSync(CLI)) throw new Error(`${CLI} is missing (the daemon is not built); --direct runs the backends without it`);
    const stale = await NetBed.cleanupStale();
    if (stale.length) this.log(`removed ${stale.length} stale namespaces of dead bench/test runs`);
    this.log(`building the bed: 3 hosts with docker0 + a container each, underlay switch (tag ${this.opts.tag})`);
    this.bed = await NetBed.create({ hosts: 3, tag: this.opts.tag });
    if (!this.opts.direct) {
      this.etcd = await startEtcd({ netns: this.bed.switchNs, host: this.bed.switchIp, clientPort: ETCD_PORT, peerPort: ETCD_PORT + 1 });
      this.control = await Agent.start(this.bed, this.bed.host(1).ns);
      this.log(`etcd up at ${this.etcd.endpoint} (switch namespace); bed ${this.bed.prefix}`);
    }
    this.overlay = new Overlay(this.bed, this.control, this.tmp, this.opts.direct);
  }

  private async teardown(): Promise<void> {
    try {
      await this.overlay?.stop();
    } catch {
      // the bed teardown below kills whatever is left
    }
    await this.control?.stop().catch(() => undefined);
    await this.etcd?.stop().catch(() => undefined);
    if (this.bed) {
      this.log(`removing bed ${this.bed.prefix}`);
      await this.bed.destroy().catch((e) => this.fail('teardown', e));
    }
  }

  private refOf(key: string): number | null {
    const ref = this.result.backends[REFERENCE];
    return ref ? ((ref as Record<string, unknown>)[key] as number | null) : null;
  }

  private show(b: BackendName, key: (typeof METRIC_KEYS)[number], v: number | null, extra = ''): void {
    const r = b === REFERENCE ? '(reference)' : ratio(v, this.refOf(key));
    const rs = typeof r === 'number' ? `×${r.toFixed(2)} kernel-vxlan` : r ?? '';
    const shown = key === 'loss64' && v !== null ? `${(v * 100).toFixed(2)}%` : human(v);
    const unit = key === 'loss64' ? '' : ` ${METRICS[key].unit}`;
    this.log(`  ${b}: ${METRICS[key].label} = ${shown}${unit}  ${rs}${extra}`);
  }

  private async measureBackend(b: BackendName): Promise<void> {
    const bed = this.bed!;
    const overlay = this.overlay!;
    const res = failedBackend('') as BackendResult;
    res.errors = [];
    this.result.backends[b] = res;
    const [h1, h2] = [bed.host(1), bed.host(2)];
    this.log(`${b}: starting ${this.opts.direct ? 'backends' : 'daemons'} on ${h1.name}, ${h2.name} (${JSON.stringify(backendSection(b))})`);
    try {
      await overlay.start([h1, h2], { Network: NETWORK, SubnetLen: 24, Backend: backendSection(b) });
    } catch (e) {
      res.errors.push(this.fail(`${b}: start`, e));
      await overlay.stop().catch(() => undefined);
      return;
    }
    const [r1, r2] = overlay.hosts;
    res.mtu = r1.mtu;
    const dst = h2.containerIp!;
    const pids = overlay.hosts.map((h) => h.pid);
    this.log(`  ${b}: up: ${h1.name} ${r1.subnet} ↔ ${h2.name} ${r2.subnet}, MTU ${r1.mtu}`);
    const step = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        res.errors!.push(this.fail(`${b}: ${name}`, e));
      }
    };
    this.lastFlood = undefined;
    await step('RTT', async () => {
      this.log(`  ${b}: RTT, ${this.opts.pings} pings at ${this.opts.pingInterval * 1000} ms intervals`);
      const r = await rtt(bed, h1.containerNs, dst, this.opts.pings, this.opts.pingInterval);
      res.rttP50Us = sig(r.p50Us);
      res.rttP99Us = sig(r.p99Us);
      res.rttSamples = r.samples;
      this.show(b, 'rttP50Us', res.rttP50Us);
      this.show(b, 'rttP99Us', res.rttP99Us, `  (${r.samples}/${r.sent} replies)`);
    });
    await step('TCP 1 stream', async () => {
      this.log(`  ${b}: TCP, 1 stream, ${this.opts.seconds} s (iperf3)`);
      const r = await tcp(bed, h2.containerNs, dst, h1.containerNs, 1, this.opts.seconds, pids);
      res.tcp1Gbps = sig(r.gbps);
      const gb = r.bytes / 1e9;
      res.cpuSecPerGB = gb > 0 ? sig(r.machineCpuSeconds / gb) : null;
      res.daemonCpuSecPerGB = gb > 0 ? sig(r.daemonCpuSeconds / gb) : null;
      this.show(b, 'tcp1Gbps', res.tcp1Gbps, r.retransmits !== undefined ? `  (${r.retransmits} retransmits)` : '');
      this.show(b, 'cpuSecPerGB', res.cpuSecPerGB, `  (daemons alone ${human(res.daemonCpuSecPerGB)} s/GB)`);
    });
    await step('TCP 4 streams', async () => {
      this.log(`  ${b}: TCP, 4 streams, ${this.opts.seconds} s (iperf3 -P 4)`);
      const r = await tcp(bed, h2.containerNs, dst, h1.containerNs, 4, this.opts.seconds, pids);
      res.tcp4Gbps = sig(r.gbps);
      this.show(b, 'tcp4Gbps', res.tcp4Gbps);
    });
    await step('64-byte flood', async () => {
      this.log(`  ${b}: 64-byte UDP flood, ${this.opts.genThreads.join(' and ')} generator threads, ${this.opts.seconds} s each`);
      const r = await this.bestFlood({ fromNs: h1.containerNs, dst, countNs: h2.containerNs });
      this.lastFlood = r;
      res.genThreads = r.threads;
      res.pps64 = sig(r.pps);
      res.loss64 = sig(r.loss);
      res.genPps64 = sig(r.offeredPps);
      this.show(b, 'pps64', res.pps64, `  (offered ${human(r.offeredPps)} pps by ${r.threads} thread${r.threads > 1 ? 's' : ''})`);
      this.show(b, 'loss64', res.loss64);
    });
    if (this.opts.noLoss) {
      await step('64-byte zero-loss rate', async () => {
        if (res.pps64 === null || !(res.pps64 > 0)) throw new Error('needs the max-delivered rate of the 64-byte flood (it did not run)');
        await this.zeroLoss(b, res, { fromNs: h1.containerNs, dst, countNs: h2.containerNs });
      });
      if (b === 'host-gw') {
        await step('paced generator check', async () => {
          const want = 1000;
          const r = await flood(bed, { fromNs: h1.containerNs, dst, countNs: h2.containerNs, seconds: this.opts.trialSeconds, threads: 1, pps: want });
          this.pacingCheck = { backend: b, requestedPps: want, offeredPps: sig(r.offeredPps), sent: r.sent, delivered: r.delivered, loss: sig(r.loss), resets: r.resets };
          this.log(`  ${b}: paced generator check: asked ${want} pps, offered ${human(r.offeredPps)} pps, ${r.delivered}/${r.sent} delivered, loss ${(r.loss * 100).toFixed(2)}%`);
        });
      }
    } else {
      (res.errors ??= []).push('64-byte zero-loss rate: skipped (--no-zero-loss)');
    }
    await step('RSS', async () => {
      const rss = processRssMB(r1.pid);
      if (rss === undefined) throw new Error(`forwarder process ${r1.pid} on ${h1.name} is gone`);
      res.rssMB = sig(rss, 3);
      this.show(b, 'rssMB', res.rssMB);
    });
    if (!this.opts.direct) {
      await step('daemon status', async () => {
        const st = await overlay.status(r1);
        if (typeof st.pid === 'number' && st.pid !== r1.pid) this.log(`  ${b}: note: status pid ${st.pid} differs from spawned pid ${r1.pid}`);
      });
    }
    await overlay.stop().catch((e) => res.errors!.push(this.fail(`${b}: stop`, e)));
  }

  private pacingCheck?: Record<string, unknown>;
  /** The kept 64-byte flood of the backend being measured (the zero-loss search's first trial). */
  private lastFlood?: FloodResult & { threads: number };

  /**
   * pps64NoLoss: paced trials searching the highest offered rate with loss ≤ 0.1 % (lib/search.ts),
   * from the flood's max-delivered rate down, with the thread count of the flood's kept run.
   */
  private async zeroLoss(b: BackendName, res: BackendResult, o: Omit<FloodOptions, 'seconds' | 'threads' | 'pps'>): Promise<void> {
    const threads = res.genThreads ?? this.opts.genThreads[0];
    const maxPps = res.pps64!;
    const seconds = this.opts.trialSeconds;
    const resets: number[] = [];
    // The unpaced flood is the first trial: if it lost ≤ 0.1 %, its offered rate stands.
    const f = this.lastFlood;
    const measured = f ? { requestedPps: 0, offeredPps: f.offeredPps, sent: f.sent, delivered: f.delivered, loss: f.loss, seconds: f.seconds } : undefined;
    if (measured && measured.loss > DEFAULT_LOSS_LIMIT) {
      this.log(`  ${b}: 64-byte zero-loss search: up to ${this.opts.noLossTrials} paced trials of ${seconds} s, ${threads} thread${threads > 1 ? 's' : ''}, from ${human(maxPps)} pps down`);
    }
    const s = await searchNoLoss(
      async (pps) => {
        const r = await flood(this.bed!, { ...o, seconds, threads, pps });
        resets.push(r.resets);
        this.log(
          `    asked ${human(pps)} pps, offered ${human(r.offeredPps)} (${((r.offeredPps / pps) * 100).toFixed(1)} %), ` +
            `delivered ${human(r.pps)}, loss ${(r.loss * 100).toFixed(3)}% ${r.loss <= DEFAULT_LOSS_LIMIT ? 'pass' : 'FAIL'}`,
        );
        return { requestedPps: pps, offeredPps: r.offeredPps, sent: r.sent, delivered: r.delivered, loss: r.loss, seconds: r.seconds };
      },
      { maxPps, trials: this.opts.noLossTrials, lossLimit: DEFAULT_LOSS_LIMIT, measured, generatorMaxPps: f?.offeredPps },
    );
    if (s.generatorLimited) this.log(`    note: no trial lost, but the generator never offered 95 % of ${human(maxPps)} pps: a lower bound`);
    res.pps64NoLoss = sig(s.pps);
    let pacedIndex = 0;
    res.noLoss64 = {
      lossLimit: s.lossLimit,
      maxPps,
      floorPps: sig(s.floorPps),
      threads,
      trialSeconds: seconds,
      generatorLimited: s.generatorLimited,
      trials: s.trials.map((t) => ({
        ...(t.aimedPps !== undefined ? { aimedPps: sig(t.aimedPps) } : {}),
        requestedPps: sig(t.requestedPps),
        offeredPps: sig(t.offeredPps),
        sent: t.sent,
        delivered: t.delivered,
        loss: sig(t.loss),
        seconds: sig(t.seconds),
        pass: t.pass,
        paced: t.paced,
        ...(t.paced ? { resets: resets[pacedIndex++] } : {}),
      })),
    };
    const how = !s.best
      ? `  (loss > 0.1 % even at ${human(s.floorPps)} pps)`
      : s.best.paced
        ? `  (asked ${human(s.best.requestedPps)}, loss ${(s.best.loss * 100).toFixed(3)}%${s.generatorLimited ? ', generator-limited: a lower bound' : ''})`
        : `  (the unpaced flood lost ${(s.best.loss * 100).toFixed(3)}%: its offered rate stands)`;
    this.show(b, 'pps64NoLoss', res.pps64NoLoss, how);
  }

  /** Floods with each configured generator thread count; keeps the run that delivered most. */
  private async bestFlood(o: Omit<FloodOptions, 'seconds' | 'threads'>): Promise<FloodResult & { threads: number }> {
    let best: (FloodResult & { threads: number }) | undefined;
    for (const threads of this.opts.genThreads) {
      const r = await flood(this.bed!, { ...o, seconds: this.opts.seconds, threads });
      if (!best || r.pps > best.pps) best = { ...r, threads };
    }
    return best!;
  }

  private generatorCheck(): void {
    const bs = this.result.backends;
    const hostGw = bs['host-gw']?.pps64 ?? null;
    const userspace = (['udp', 'vxlan'] as const).map((b) => bs[b]?.pps64 ?? null).filter((v): v is number => v !== null);
    const best = userspace.length ? Math.max(...userspace) : null;
    const headroom = ratio(hostGw, best);
    this.result.generator = {
      payloadBytes: 18,
      frameBytes: 64,
      threads: this.opts.genThreads,
      hostGwDeliveredPps: hostGw,
      hostGwOfferedPps: bs['host-gw']?.genPps64 ?? null,
      bestUserspaceDeliveredPps: best,
      headroom,
      notBottleneck: headroom !== null ? headroom > 1 : null,
      ...(this.pacingCheck ? { pacedLowRate: this.pacingCheck } : {}),
    };
    if (headroom !== null) {
      this.log(`generator check: host-gw delivered ${human(hostGw)} pps vs best userspace ${human(best)} pps: ×${headroom.toFixed(2)} ${headroom > 1 ? '(the generator was not the limit for the userspace backends)' : '(generator may be the limit!)'}`);
    }
  }

  // ---------------------------------------------------------------------------- scaling

  private async scalingAll(): Promise<void> {
    const sc: NonNullable<BenchResult['scaling']> = { subnetLen: 30, backends: {}, controlPlane: {}, rssMB10k: {} };
    this.result.scaling = sc;
    for (const b of this.order(this.opts.scalingBackends)) {
      try {
        await this.scaling(b, sc);
      } catch (e) {
        this.fail(`scaling ${b}`, e);
      } finally {
        await this.overlay!.stop().catch(() => undefined);
      }
    }
  }

  private async scaling(b: BackendName, sc: NonNullable<BenchResult['scaling']>): Promise<void> {
    const bed = this.bed!;
    const overlay = this.overlay!;
    const [h1, h2, h3] = [bed.host(1), bed.host(2), bed.host(3)];
    const conf: NetConf = { Network: NETWORK, SubnetLen: 30, Backend: backendSection(b) };
    const cfg = parseNetworkConfig(JSON.stringify(conf));
    this.log(`scaling ${b}: /30 leases, fake peers behind ${h3.name} (${h3.underlayIp}, a counting sink without daemon)`);
    await overlay.start([h1, h2], conf);
    const taken = new Set(overlay.hosts.map((h) => formatCidr(parseCidr(h.subnet, false))));
    const points: ScalingPoint[] = [];
    sc.backends[b] = points;
    // Fake leases in subnet order, skipping the two real ones.
    const fakes: Array<{ subnet: string; dst: string }> = [];
    for (let i = 0; fakes.length < 11_000 && i < subnetCount(cfg); i++) {
      const sn = subnetAt(cfg, i);
      const key = formatCidr(sn);
      if (!taken.has(key)) fakes.push({ subnet: key, dst: formatIPv4((sn.ip + 2) >>> 0) });
    }
    const fakeLease = (k: number): WireLease => {
      const mac = `02:fb:${[(k >> 16) & 255, (k >> 8) & 255, k & 255, 1].map((x) => x.toString(16).padStart(2, '0')).join(':')}`;
      const type = String(conf.Backend.Type);
      return {
        subnet: fakes[k].subnet,
        attrs: { publicIp: h3.underlayIp, backendType: type, ...(type === 'vxlan' ? { backendData: { VNI: 1, VtepMAC: mac } } : {}) },
      };
    };
    let written = 0;
    /** Adds fake leases until h1 has `peers` peers (h2 + fakes); returns [write s, install s]. */
    const grow = async (peers: number): Promise<{ installSeconds: number | null; writeSeconds: number | null; leases: number }> => {
      const from = written;
      const to = peers - 1;
      const batch = Array.from({ length: to - from }, (_, j) => fakeLease(from + j));
      written = to;
      const timeoutMs = 600_000;
      if (this.opts.direct) {
        const all = Array.from({ length: to }, (_, k) => fakeLease(k));
        const seconds = await overlay.setDirectPeers(all);
        return { installSeconds: seconds, writeSeconds: null, leases: batch.length };
      }
      const kvs = batch.map((l): [string, string] => [leaseKey(DEFAULT_PREFIX, parseCidr(l.subnet, true)), encodeLeaseValue(l.attrs)]);
      const r = await this.control!.call<{ writeSeconds: number; seconds: number; polls: number }>({
        op: 'putAndWait',
        endpoint: overlay.endpoint,
        kvs,
        subnetFile: overlay.hosts[0].subnetFile,
        wantInstalled: peers,
        timeoutMs,
        pollMs: 50,
      });
      return { installSeconds: r.seconds, writeSeconds: r.writeSeconds, leases: batch.length };
    };
    const measure = async (peers: number, installSeconds: number | null, leases: number) => {
      const dstFile = path.join(this.tmp, `dsts-${peers}.txt`);
      writeFileSync(dstFile, fakes.slice(0, peers - 1).map((f) => f.dst).join('\n') + '\n');
      let r: FloodResult | undefined;
      try {
        // Encapsulated traffic is counted at h3's UDP layer (GSO trains cut first); host-gw's plain
        // routed packets never reach a local socket there, and arrive one by one on eth0.
        const at = b === 'host-gw' ? { countDev: 'eth0' } : { countPort: FLANNEL_DEFAULT_PORT[b === 'udp' ? 'udp' : 'vxlan'] };
        r = await this.bestFlood({ fromNs: h1.containerNs, dstFile, countNs: h3.ns, ...at });
      } catch (e) {
        this.fail(`scaling ${b} ${peers} peers`, e);
      }
      const rss = processRssMB(overlay.hosts[0].pid);
      const p: ScalingPoint = {
        peers,
        pps: r ? sig(r.pps) : null,
        loss: r ? sig(r.loss) : null,
        offeredPps: r ? sig(r.offeredPps) : null,
        installSeconds: installSeconds === null ? null : sig(installSeconds),
        leasesWritten: leases,
        rssMB: rss === undefined ? null : sig(rss, 3),
      };
      points.push(p);
      const ref = b === REFERENCE ? undefined : sc.backends[REFERENCE]?.find((q) => q.peers === peers)?.pps;
      const rs = ref ? `  ×${(p.pps! / ref).toFixed(2)} kernel-vxlan` : b === REFERENCE ? '  (reference)' : '';
      this.log(`  ${b}: ${peers.toLocaleString('en-US')} peers: ${human(p.pps)} pps delivered, loss ${p.loss === null ? '–' : (p.loss * 100).toFixed(1) + '%'}${rs}; RSS ${human(p.rssMB)} MB`);
    };
    // The kernel backends program one `ip` command per entry (10,000 peers take minutes): a quick run
    // stops them at 1,000 peers.
    const kernel = b === 'kernel-vxlan' || b === 'host-gw';
    const pointsFor = this.opts.quick && kernel ? this.opts.scalingPoints.filter((n) => n <= 1000) : this.opts.scalingPoints;
    if (pointsFor.length < this.opts.scalingPoints.length) this.log(`  ${b}: quick run: kernel datapath scaled to ${pointsFor[pointsFor.length - 1]} peers only`);
    let controlDone = false;
    /** Exactly 1,000 leases written at once, timed until host 1 has installed all of them. */
    const controlPlane = async () => {
      controlDone = true;
      this.log(`  ${b}: control plane: writing 1,000 leases, timing until ${h1.name} has installed all`);
      const cp = await grow(written + 1 + 1000);
      sc.controlPlane![b] = { leases: cp.leases, seconds: cp.installSeconds === null ? null : sig(cp.installSeconds), writeSeconds: cp.writeSeconds === null ? null : sig(cp.writeSeconds) };
      this.log(`  ${b}: 1,000 leases installed ${cp.installSeconds?.toFixed(2)} s after the write began (write took ${cp.writeSeconds?.toFixed(2) ?? '–'} s)`);
    };
    for (const n of pointsFor) {
      if (n > 1000 && !controlDone) await controlPlane();
      this.log(`  ${b}: growing to ${n.toLocaleString('en-US')} peers in the route table`);
      const g = await grow(n);
      this.log(`  ${b}: ${g.leases.toLocaleString('en-US')} lease${g.leases === 1 ? '' : 's'} installed in ${g.installSeconds?.toFixed(2)} s`);
      await measure(n, g.installSeconds, g.leases);
      if (n === 10_000) {
        const rss = processRssMB(overlay.hosts[0].pid);
        sc.rssMB10k![b] = rss === undefined ? null : sig(rss, 3);
      }
    }
    if (!controlDone) await controlPlane();
  }
}

// ----------------------------------------------------------------------------------- entry

function printTable(result: BenchResult, out: (l: string) => void): void {
  const ratios = result.ratios ?? computeRatios(result.backends);
  const runs = result.runCount ?? 1;
  const range = (sp: Spread | null | undefined, f: (v: number) => string) => (runs > 1 && sp ? ` [${f(sp.min)}–${f(sp.max)}]` : '');
  const head = ['metric', ...BACKENDS];
  const rows = METRIC_KEYS.map((k) => [
    `${METRICS[k].label} (${METRICS[k].unit})`,
    ...BACKENDS.map((b) => {
      const v = result.backends[b]?.[k] ?? null;
      const fmt = (x: number) => (k === 'loss64' ? `${(x * 100).toFixed(2)}%` : human(x));
      const shown = (v === null ? human(v) : fmt(v)) + range(result.spread?.[b]?.[k], fmt);
      const r = ratios[b]?.[k];
      return b === REFERENCE || r === null || r === undefined ? shown : `${shown} (×${r.toFixed(2)}${range(result.ratioSpread?.[b]?.[k], (x) => x.toFixed(2))})`;
    }),
  ]);
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  if (runs > 1) out(`median of ${runs} runs [min–max]; ratios: median of the per-run ratios [min–max]`);
  for (const r of all) out(r.map((c, i) => c.padEnd(w[i])).join('  '));
}

export async function runBench(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vxnet bench: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  if (opts === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('vxnet bench: needs root (it builds network namespaces)\n');
    return 1;
  }
  let runner: Runner | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\nvxnet bench: ${sig}: stopping daemons and removing namespaces\n`);
    runner?.removeTmp();
    // NetBed's and etcd's exit hooks kill every process of the bed and delete its namespaces.
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', () => runner?.removeTmp());
  const runs: BenchResult[] = [];
  const errors: string[] = [];
  const writeJson = (result: BenchResult) => {
    if (!opts.json) return;
    mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
    writeFileSync(opts.json, JSON.stringify(result, null, 2) + '\n');
  };
  try {
    for (let i = 1; i <= opts.runs; i++) {
      if (opts.runs > 1) process.stderr.write(`\n==== vxnet bench: run ${i} of ${opts.runs} ====\n`);
      runner = new Runner(opts, argv);
      try {
        await runner.run();
      } finally {
        runner.removeTmp();
      }
      runs.push(runner.result);
      errors.push(...runner.errors.map((e) => (opts.runs > 1 ? `run ${i}: ${e}` : e)));
      if (opts.runs > 1) {
        process.stdout.write(`\nrun ${i} of ${opts.runs}:\n`);
        printTable(runner.result, (l) => process.stdout.write(`${l}\n`));
        // Keep what has been measured so far, should a later run be interrupted.
        if (i < opts.runs) writeJson(summarizeRuns(runs));
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    runner?.removeTmp();
  }
  const result = runs.length > 1 ? summarizeRuns(runs) : runs[0];
  process.stdout.write('\n');
  printTable(result, (l) => process.stdout.write(`${l}\n`));
  process.stdout.write(`\ndatapath v2 floors (issue 8):\n${renderFloors(result)}\n`);
  const problems = validateResult(result);
  if (problems.length) process.stderr.write(`result shape problems: ${problems.join('; ')}\n`);
  if (opts.json) {
    writeJson(result);
    process.stderr.write(`wrote ${opts.json}\n`);
  }
  if (opts.svg) {
    mkdirSync(path.dirname(path.resolve(opts.svg)), { recursive: true });
    writeFileSync(opts.svg, renderChart(result));
    process.stderr.write(`wrote ${opts.svg}\n`);
  }
  if (opts.docs) {
    const dir = path.join(ROOT, 'docs', 'bench');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    writeFileSync(path.join(dir, 'latest.svg'), renderChart(result));
    const notesFile = path.join(dir, 'notes.md');
    const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8') : undefined;
    writeFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), renderMarkdown(result, { chart: 'bench/latest.svg', json: 'bench/latest.json', notes }));
    process.stderr.write('wrote docs/bench/latest.json, docs/bench/latest.svg, docs/benchmarks.md\n');
  }
  if (errors.length) {
    process.stderr.write(`\n${errors.length} measurement(s) could not run:\n${errors.map((e) => `  - ${e}`).join('\n')}\n`);
    return 1;
  }
  return 0;
}

if (require.main === module) {
  runBench(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`vxnet bench: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
