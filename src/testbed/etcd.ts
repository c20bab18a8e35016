// Launches a throwaway single-member etcd (Debian's /usr/bin/etcd) for tests and demos, optionally
// inside a network namespace, and guarantees it dies with this node process.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const ETCD_BIN = '/usr/bin/etcd';
export const ETCDCTL_BIN = '/usr/bin/etcdctl';

export interface EtcdOptions {
  /** Run inside `ip netns exec <netns>`; host must then be an address of that namespace. */
  netns?: string;
  /** Address to listen on for clients and peers (e.g. 127.0.0.1). */
  host: string;
  /** Client port; a free random high port when absent. */
  clientPort?: number;
  /** Peer port; a free random high port when absent. */
  peerPort?: number;
  /** Member name (default "vxnet-etcd"). */
  name?: string;
  /** Reuse this data dir instead of a fresh temp dir; it is then left in place by stop(). */
  dataDir?: string;
  /** How long to wait for /health to report a leader (default 20 s). */
  startTimeoutMs?: number;
  /** Serve clients over TLS with this certificate (endpoint https://); with `clientCaFile`, require client certificates. */
  tls?: EtcdServerTls;
  /** etcdctl flags for the health check (and for callers): --cacert/--cert/--key, later --user. */
  etcdctlArgs?: string[];
}

export interface EtcdServerTls {
  certFile: string;
  keyFile: string;
  /** Client certificates must be signed by this CA (--client-cert-auth). */
  clientCaFile?: string;
}

export interface EtcdServer {
  /** Client URL, e.g. http://127.0.0.1:23791. */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  /** Current process id (changes after restart()). */
  readonly pid: number;
  /** True while the etcd process is alive. */
  readonly running: boolean;
  /** The last few KB etcd wrote to stderr (for failure messages). */
  readonly stderr: string;
  /** SIGTERM (then SIGKILL after 5 s) and removes the data dir when it is ours. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL now, keeping the data dir (simulates a crash). */
  kill9(): void;
  /** Starts etcd again on the same ports and data dir (after kill9 or a crash) and waits for health. */
  restart(): Promise<void>;
  /** etcdctl flags every check uses (TLS files, and --user once auth is on); callers may append. */
  readonly etcdctlArgs: string[];
}

const STDERR_TAIL = 4096;
// Go's names for the architectures etcd 3.4 treats as unsupported (they refuse to start without the env).
const GO_ARCH: Record<string, string> = { arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x', ia32: '386', arm: 'arm' };

// Every server not yet stopped: killed (and its temp dir removed) synchronously when node exits,
// so no etcd outlives a crashed or interrupted test.
const active = new Set<EtcdProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const srv of active) srv.cleanupSync();
  });
}

function randomPort(): number {
  return 20000 + Math.floor(Math.random() * 30000);
}

/** True when host:port can be bound right now (only meaningful in our own namespace). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRNOTAVAIL') reject(new Error(`host ${host} is not an address of this network namespace`));
      else resolve(false);
    });
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

async function pickPort(host: string, checkable: boolean, avoid: number[]): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = randomPort();
    if (avoid.includes(p)) continue;
    if (!checkable || (await portFree(host, p))) return p;
  }
  throw new Error(`no free port found on ${host}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** GET /health; resolves true only for {"health":"true"}. */
function httpHealthy(endpoint: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${endpoint}/health`, { timeout: 1000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 && JSON.parse(body).health === 'true');
        } catch {
          resolve(false);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

/** Inside a namespace the root namespace cannot reach etcd, so ask etcdctl from within (also for TLS). */
function etcdctlHealthy(netns: string | undefined, endpoint: string, extra: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    const argv = [ETCDCTL_BIN, `--endpoints=${endpoint}`, ...extra, '--dial-timeout=1s', '--command-timeout=1s', 'endpoint', 'health'];
    const child = spawn(netns ? 'ip' : argv[0], netns ? ['netns', 'exec', netns, ...argv] : argv.slice(1), { stdio: 'ignore', env: { ...process.env, ETCDCTL_API: '3' } });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}

class EtcdProcess implements EtcdServer {
  readonly endpoint: string;
  readonly etcdctlArgs: string[];
  private child: ChildProcess | undefined;
  private stderrTail = '';
  private exited: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly opts: EtcdOptions,
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
  ) {
    this.endpoint = `${opts.tls ? 'https' : 'http'}://${urlHost(opts.host)}:${clientPort}`;
    this.etcdctlArgs = [...(opts.etcdctlArgs ?? [])];
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private args(): string[] {
    const name = this.opts.name ?? 'vxnet-etcd';
    const h = urlHost(this.opts.host);
    const peerUrl = `http://${h}:${this.peerPort}`;
    return [
      `--name=${name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.endpoint}`,
      `--advertise-client-urls=${this.endpoint}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      '--initial-cluster-state=new',
      `--initial-cluster-token=vxnet-${process.pid}-${this.clientPort}`,
      // A single member elects itself quickly with short ticks.
      '--heartbeat-interval=50',
      '--election-timeout=500',
      '--snapshot-count=5000',
      '--enable-pprof=false',
      '--logger=zap',
      '--log-level=warn',
      ...(this.opts.tls ? [`--cert-file=${this.opts.tls.certFile}`, `--key-file=${this.opts.tls.keyFile}`] : []),
      ...(this.opts.tls?.clientCaFile ? ['--client-cert-auth', `--trusted-ca-file=${this.opts.tls.clientCaFile}`] : []),
    ];
  }

  /** Spawns the process; resolves when healthy, rejects (after killing it) with etcd's stderr tail. */
  async launch(): Promise<void> {
    installExitHook();
    active.add(this);
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.ETCD_UNSUPPORTED_ARCH;
    const goArch = GO_ARCH[process.arch];
    if (goArch) env.ETCD_UNSUPPORTED_ARCH = goArch;
    for (const k of Object.keys(env)) {
      // Stray ETCD_* variables from the environment would silently override our flags.
      if (k.startsWith('ETCD_') && k !== 'ETCD_UNSUPPORTED_ARCH') delete env[k];
    }
    // `ip netns exec` execs etcd in place, so the pid we hold is etcd's own.
    const cmd = this.opts.netns ? 'ip' : ETCD_BIN;
    const argv = this.opts.netns ? ['netns', 'exec', this.opts.netns, ETCD_BIN, ...this.args()] : this.args();
    this.stderrTail = '';
    this.stopped = false;
    const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
    this.child = child;
    let spawnError: Error | undefined;
    this.exited = new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', (err) => {
        spawnError = err;
        resolve();
      });
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL);
    });

    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 20000);
    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`cannot start ${cmd}: ${spawnError.message}`);
      if (!this.running) {
        await this.exited;
        throw new Error(`etcd exited during startup (code ${child.exitCode}, signal ${child.signalCode}): ${this.stderrTail.trim()}`);
      }
      const ok = this.opts.netns || this.opts.tls ? await etcdctlHealthy(this.opts.netns, this.endpoint, this.etcdctlArgs) : await httpHealthy(this.endpoint);
      if (ok) return;
      await sleep(100);
    }
    await this.killProcess();
    throw new Error(`etcd at ${this.endpoint} not healthy after ${this.opts.startTimeoutMs ?? 20000} ms: ${this.stderrTail.trim()}`);
  }

  get stderr(): string {
    return this.stderrTail;
  }

  private async killProcess(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.killProcess();
    if (this.ownsDataDir) fs.rmSync(this.dataDir, { recursive: true, force: true });
    active.delete(this);
  }

  kill9(): void {
    if (this.child && this.running) this.child.kill('SIGKILL');
  }

  async restart(): Promise<void> {
    if (this.stopped && this.ownsDataDir) throw new Error('etcd was stopped and its data dir removed; cannot restart');
    await this.killProcess();
    await this.exited;
    await this.launch();
  }

  /** Synchronous cleanup for process exit: SIGKILL, then remove our temp dir. */
  cleanupSync(): void {
    try {
      this.kill9();
    } catch {
      // already gone
    }
    if (this.ownsDataDir) fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}

function looksLikePortClash(err: unknown): boolean {
  return err instanceof Error && /address already in use|bind:/i.test(err.message);
}

/** Starts a single-member etcd and waits until it serves requests. */
export async function startEtcd(opts: EtcdOptions): Promise<EtcdServer> {
  const fixedPorts = opts.clientPort !== undefined && opts.peerPort !== undefined;
  const attempts = fixedPorts ? 1 : 5;
  let lastErr: unknown;
  for (let attempt = 0; attempt < attempts; attempt++) {
    const checkable = !opts.netns;
    const clientPort = opts.clientPort ?? (await pickPort(opts.host, checkable, []));
    const peerPort = opts.peerPort ?? (await pickPort(opts.host, checkable, [clientPort]));
    const ownsDataDir = opts.dataDir === undefined;
    const dataDir = opts.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vxnet-etcd-'));
    const srv = new EtcdProcess(opts, clientPort, peerPort, dataDir, ownsDataDir);
    try {
      await srv.launch();
      return srv;
    } catch (err) {
      lastErr = err;
      await srv.stop();
      if (!looksLikePortClash(err)) break;
    }
  }
  throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
}

/** True when /usr/bin/etcd can be run here (lets test files skip cleanly where it is missing). */
export function etcdAvailable(): boolean {
  const r = spawnSync(ETCD_BIN, ['--version'], { stdio: 'ignore' });
  return r.status === 0;
}
