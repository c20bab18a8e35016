// A namespaced cluster: a NetBed, a real etcd in the switch namespace and one `vxnet daemon` per
// host, each with its own subnet file and control socket. Shared by the e2e tests, the demo and the bench.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, createWriteStream, WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { DaemonStatus } from '../status';
import { readSubnetEnv, type SubnetEnv } from '../host/subnet-env';
import { formatIPv4, cidrHost } from '../net/ip';
import { type BedHost, NetBed } from './netbed';
import { type EtcdServer, type EtcdServerTls, startEtcd } from './etcd';

/** dist/src/cli.js, next to this file's directory. */
export const CLI_JS = path.resolve(__dirname, '..', 'cli.js');

export interface ClusterOptions {
  hosts: number;
  /** NetBed tag ([a-z0-9]{1,8}). */
  tag: string;
  /** flannel net-conf.json written to etcd before any daemon starts (skip with undefined). */
  netConf?: Record<string, unknown>;
  /** etcd serves clients over TLS (see src/testbed/tls.ts); etcdctl then uses etcd.etcdctlArgs. */
  etcdTls?: EtcdServerTls;
  /** etcdctl flags for the cluster's own etcdctl calls (e.g. --cacert/--cert/--key). */
  etcdctlArgs?: string[];
  underlayMtu?: number;
}

export interface DaemonProcess {
  host: BedHost;
  child: ChildProcess;
  pid: number;
  subnetFile: string;
  logFile: string;
  /** Resolves with the exit code (or 128+signal) once the process has exited. */
  exited: Promise<number>;
  /** Everything the daemon wrote to stderr/stdout so far. */
  output(): string;
}

export interface DaemonStartOptions {
  /** Extra flags after the defaults (--etcd-endpoints, --iface eth0, --subnet-file, --healthz-port). */
  args?: string[];
  /**
   * The whole flag list instead of the defaults and `args`, run as flanneld is (`vxnet <flags>`, no
   * subcommand); it must carry --subnet-file=subnetFile(host) (or FLANNELD_SUBNET_FILE) for status.
   */
  argv?: string[];
  /** Environment variables added to the daemon's (e.g. FLANNELD_* or a PATH). */
  env?: Record<string, string>;
  /**
   * How to enter the host instead of `ip netns exec <ns>`: a command prefix such as
   * `nsenter -t PID -m -n --` (the daemon then shares a private mount namespace with the host's dockerd).
   */
  enter?: string[];
  /** Wait for subnet.env and a status answer, then readdress docker0 from it (default true). */
  waitReady?: boolean;
  /** Readdress the bed's docker0 and container from subnet.env once ready (default true; a host whose dockerd runs with --bridge=none has no docker0). */
  readdress?: boolean;
  timeoutMs?: number;
}

const SIGNAL_NUMBERS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class Cluster {
  readonly daemons = new Map<number, DaemonProcess>();
  private constructor(
    readonly bed: NetBed,
    readonly etcd: EtcdServer,
    readonly dir: string,
  ) {}

  static async create(opts: ClusterOptions): Promise<Cluster> {
    const bed = await NetBed.create({ hosts: opts.hosts, tag: opts.tag, underlayMtu: opts.underlayMtu });
    let etcd: EtcdServer | undefined;
    const dir = mkdtempSync(path.join(tmpdir(), `${bed.prefix}-`));
    try {
      etcd = await startEtcd({ netns: bed.switchNs, host: bed.switchIp, clientPort: 2379, peerPort: 2380, tls: opts.etcdTls, etcdctlArgs: opts.etcdctlArgs });
      const c = new Cluster(bed, etcd, dir);
      if (opts.netConf) await c.etcdctl(['put', '/coreos.com/network/config', JSON.stringify(opts.netConf)]);
      return c;
    } catch (err) {
      await etcd?.stop().catch(() => undefined);
      await bed.destroy().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  get endpoint(): string {
    return this.etcd.endpoint;
  }

  /** Runs etcdctl (v3 API) against the cluster's etcd from the switch namespace; returns stdout. */
  etcdctl(args: string[]): Promise<string> {
    return this.bed.execOk(this.bed.switchNs, ['etcdctl', `--endpoints=${this.endpoint}`, ...this.etcd.etcdctlArgs, ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
  }

  host(i: number): BedHost {
    return this.bed.host(i);
  }

  subnetFile(host: BedHost): string {
    return path.join(this.dir, host.name, 'subnet.env');
  }

  /** argv of `vxnet daemon` for `host` (run inside its namespace). */
  daemonArgv(host: BedHost, extra: string[] = []): string[] {
    return [
      process.execPath,
      CLI_JS,
      'daemon',
      `--etcd-endpoints=${this.endpoint}`,
      '--iface=eth0',
      `--subnet-file=${this.subnetFile(host)}`,
      ...extra,
    ];
  }

  /** Starts the daemon of `host`; by default waits until it serves status and readdresses docker0. */
  async startDaemon(host: BedHost, opts: DaemonStartOptions = {}): Promise<DaemonProcess> {
    const prev = this.daemons.get(host.index)?.child;
    // A daemon killed by a signal has exitCode null too: only one with neither is still running.
    if (prev && prev.exitCode === null && prev.signalCode === null) throw new Error(`${host.name}: daemon already running`);
    const logFile = path.join(this.dir, `${host.name}.log`);
    const log: WriteStream = createWriteStream(logFile, { flags: 'a' });
    const argv = opts.argv ? [process.execPath, CLI_JS, ...opts.argv] : this.daemonArgv(host, opts.args);
    const spawnOpts = { stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'], ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}) };
    const child = opts.enter ? this.bed.spawnArgv([...opts.enter, ...argv], spawnOpts) : this.bed.spawn(host.ns, argv, spawnOpts);
    let out = '';
    const collect = (b: Buffer) => {
      out += b.toString();
      if (out.length > 1 << 20) out = out.slice(-(1 << 19));
      log.write(b);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    const exited = new Promise<number>((resolve) => {
      child.once('exit', (code, signal) => {
        log.end();
        resolve(code ?? 128 + (signal ? (SIGNAL_NUMBERS[signal] ?? 0) : 0));
      });
    });
    const proc: DaemonProcess = { host, child, pid: child.pid ?? -1, subnetFile: this.subnetFile(host), logFile, exited, output: () => out };
    this.daemons.set(host.index, proc);
    if (opts.waitReady !== false) {
      await this.waitReady(proc, opts.timeoutMs ?? 30_000);
      if (opts.readdress !== false) await this.applySubnetEnv(host);
    }
    return proc;
  }

  /** Waits until the daemon answers status with a held lease; fails early if it exits. */
  async waitReady(proc: DaemonProcess, timeoutMs: number): Promise<DaemonStatus> {
    const deadline = Date.now() + timeoutMs;
    let exitCode: number | undefined;
    void proc.exited.then((c) => (exitCode = c));
    for (;;) {
      if (exitCode !== undefined) throw new Error(`${proc.host.name}: daemon exited with ${exitCode} before it was ready:\n${proc.output()}`);
      const st = await this.status(proc.host).catch(() => undefined);
      // 'running': subnet.env is written and ip-masq installed (a held lease alone comes earlier).
      if (st && st.state === 'running' && st.lease.state === 'held' && st.backend.mtu > 0) return st;
      if (Date.now() > deadline) throw new Error(`${proc.host.name}: daemon not ready within ${timeoutMs} ms:\n${proc.output()}`);
      await sleep(100);
    }
  }

  /** The subnet.env the daemon of `host` wrote. */
  async subnetEnv(host: BedHost): Promise<SubnetEnv> {
    const env = await readSubnetEnv(this.subnetFile(host));
    if (!env) throw new Error(`${host.name}: no subnet file at ${this.subnetFile(host)}`);
    return env;
  }

  /** Readdresses docker0 and the container from subnet.env (what dockerd --bip/--mtu would do). */
  async applySubnetEnv(host: BedHost): Promise<string> {
    const env = await this.subnetEnv(host);
    const gw = `${formatIPv4(cidrHost(env.subnet, 1))}/${env.subnet.prefixLen}`;
    return host.setContainerSubnet(gw, env.mtu);
  }

  /** `vxnet status --json` run inside the host's namespace. */
  async status(host: BedHost): Promise<DaemonStatus> {
    const out = await this.bed.execOk(host.ns, [process.execPath, CLI_JS, 'status', '--json', `--subnet-file=${this.subnetFile(host)}`], { timeoutMs: 10_000 });
    return JSON.parse(out) as DaemonStatus;
  }

  /** `vxnet status` (the table). */
  statusTable(host: BedHost): Promise<string> {
    return this.bed.execOk(host.ns, [process.execPath, CLI_JS, 'status', `--subnet-file=${this.subnetFile(host)}`], { timeoutMs: 10_000 });
  }

  /** Polls status of `host` until `pred` holds. */
  async waitFor(host: BedHost, what: string, pred: (st: DaemonStatus) => boolean, timeoutMs = 30_000): Promise<DaemonStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: DaemonStatus | undefined;
    let lastErr: unknown;
    for (;;) {
      try {
        last = await this.status(host);
        if (pred(last)) return last;
      } catch (err) {
        lastErr = err;
      }
      if (Date.now() > deadline) {
        const detail = last ? JSON.stringify({ lease: last.lease, peers: last.peers, etcd: last.etcd }) : String(lastErr);
        throw new Error(`${host.name}: timed out waiting for ${what}; last status: ${detail}`);
      }
      await sleep(150);
    }
  }

  /** Waits until every running daemon has every other running daemon's subnet installed. */
  async waitForMesh(timeoutMs = 30_000): Promise<void> {
    const running = [...this.daemons.values()].filter((d) => d.child.exitCode === null && d.child.signalCode === null);
    const subnets = new Map<number, string>();
    for (const d of running) subnets.set(d.host.index, (await this.status(d.host)).lease.subnet);
    await Promise.all(
      running.map((d) => {
        const want = running.filter((o) => o !== d).map((o) => subnets.get(o.host.index) as string);
        return this.waitFor(d.host, `peers ${want.join(', ')} installed`, (st) => want.every((sn) => st.peers.some((p) => p.subnet === sn && p.installed)), timeoutMs);
      }),
    );
  }

  /** Sends `signal` and waits for the exit; returns the exit code (128+n for a signal). */
  async stopDaemon(host: BedHost, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<number> {
    const d = this.daemons.get(host.index);
    if (!d) throw new Error(`${host.name}: no daemon`);
    if (d.child.exitCode === null && d.child.signalCode === null) d.child.kill(signal);
    const timer = new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`${host.name}: daemon did not exit within ${timeoutMs} ms after ${signal}`)), timeoutMs).unref());
    return Promise.race([d.exited, timer]);
  }

  /** Writes a file in the cluster's temp dir (e.g. a net-conf.json for --net-config). */
  writeFile(name: string, body: string): string {
    const file = path.join(this.dir, name);
    writeFileSync(file, body);
    return file;
  }

  /** Stops daemons (SIGTERM, then the bed's SIGKILL), etcd, and deletes the namespaces and temp dir. */
  async destroy(): Promise<void> {
    await Promise.all(
      [...this.daemons.values()].map((d) => (d.child.exitCode === null && d.child.signalCode === null ? this.stopDaemon(d.host).catch(() => undefined) : undefined)),
    );
    await this.etcd.stop().catch(() => undefined);
    try {
      await this.bed.destroy();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
