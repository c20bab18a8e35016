// A real dockerd (Debian's docker.io) per namespaced host, for the Docker network tests and demo.
//
// `ip netns exec` gives each command a fresh sysfs without the cgroup hierarchies, and every dockerd
// looks for plugins in /run/docker/plugins. So each host gets an anchor process in a private mount
// namespace (`unshare -m`) inside the host's network namespace, which mounts the root's cgroup
// hierarchies again and binds the host's own directory onto /run/docker/plugins; dockerd and that
// host's vxnet daemon are started inside it (`nsenter -t ANCHOR -m -n`), so both see the same plugin
// directory and dockerd's sandbox paths. dockerd has its own data root, exec root, pid file, API
// socket, an empty config file, no default bridge (--bridge=none), and puts its containers under a
// cgroup parent of its own, which teardown empties even if dockerd died.
import { type ChildProcess, execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sleep } from './cluster';
import type { ExecResult } from './exec';
import { CommandError } from './exec';
import type { BedHost, NetBed } from './netbed';

export const DOCKERD_BIN = '/usr/sbin/dockerd';
/** Debian's docker CLI (20.10, as the daemon). */
export const DOCKER_BIN = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
export const BUSYBOX_BIN = '/bin/busybox';
/** The image every test container runs: busybox-static, imported (no registry). */
export const TEST_IMAGE = 'vxnet-busybox:1';
/** Where every dockerd looks for plugin sockets. */
export const PLUGIN_DIR = '/run/docker/plugins';

export function dockerAvailable(): boolean {
  return existsSync(DOCKERD_BIN) && existsSync(BUSYBOX_BIN);
}

const BUSYBOX_APPLETS = ['sh', 'ping', 'nc', 'sleep', 'ip', 'cat', 'echo', 'wget', 'httpd', 'hostname', 'dd', 'wc', 'head', 'seq', 'true', 'timeout', 'md5sum', 'route', 'ifconfig', 'grep', 'ls'];

/** The cgroup mounts of our own mount namespace, as `mount` lines to repeat them in a private one. */
function cgroupMountScript(): string[] {
  const lines: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!post) continue;
    const mp = pre.split(' ')[4];
    const [fstype, , superOpts] = post.split(' ');
    if (!mp || !(mp === '/sys/fs/cgroup' || mp.startsWith('/sys/fs/cgroup/'))) continue;
    const opts = (superOpts ?? '')
      .split(',')
      .filter((o) => o !== 'rw' && o !== 'ro')
      .join(',');
    if (fstype === 'tmpfs') lines.push(`mount -t tmpfs -o mode=755 cgroup-root ${mp}`);
    else if (fstype === 'cgroup') lines.push(`mkdir -p ${mp}`, `mount -t cgroup -o ${opts || 'none'} cgroup ${mp}`);
    else if (fstype === 'cgroup2') lines.push(`mkdir -p ${mp}`, `mount -t cgroup2 ${opts ? `-o ${opts} ` : ''}cgroup2 ${mp}`);
  }
  return lines;
}

/** The rootfs tar of the test image: /bin/busybox and its applets. */
export function buildImageTar(dir: string): string {
  const root = path.join(dir, 'rootfs');
  mkdirSync(path.join(root, 'bin'), { recursive: true });
  mkdirSync(path.join(root, 'tmp'), { recursive: true });
  execFileSync('cp', [BUSYBOX_BIN, path.join(root, 'bin', 'busybox')]);
  for (const a of BUSYBOX_APPLETS) execFileSync('ln', ['-sf', 'busybox', path.join(root, 'bin', a)]);
  const tar = path.join(dir, 'busybox.tar');
  execFileSync('tar', ['-C', root, '-cf', tar, '.']);
  return tar;
}

export class DockerHost {
  readonly sock: string;
  readonly pluginDir: string;
  private anchor: ChildProcess | undefined;
  private dockerd: ChildProcess | undefined;
  private dockerdExit: Promise<number> | undefined;
  readonly cgroupParent: string;

  private constructor(
    readonly bed: NetBed,
    readonly host: BedHost,
    readonly dir: string,
  ) {
    this.sock = path.join(dir, 'docker.sock');
    this.pluginDir = path.join(dir, 'plugins');
    this.cgroupParent = `/${bed.prefix}-${host.name}`;
  }

  /** The anchor's pid: enter its mount and network namespaces with `nsenter -t PID -m -n`. */
  get pid(): number {
    return this.anchor?.pid ?? -1;
  }

  /** Command prefix entering the host's network and private mount namespace. */
  get enter(): string[] {
    return ['nsenter', '-t', String(this.pid), '-m', '-n', '--'];
  }

  /** Starts the anchor (mounts) and dockerd, and imports the test image from `imageTar`. */
  static async start(bed: NetBed, host: BedHost, dir: string, imageTar: string): Promise<DockerHost> {
    mkdirSync(path.join(dir, 'plugins'), { recursive: true });
    // The mount point must exist; the bind mount lives only in the host's private mount namespace.
    createMountPoint();
    const d = new DockerHost(bed, host, dir);
    const script = ['set -e', ...cgroupMountScript(), `mount --bind ${d.pluginDir} ${PLUGIN_DIR}`, 'echo ready', 'exec sleep infinity'].join('\n');
    const anchor = bed.spawn(host.ns, ['unshare', '-m', '--propagation', 'private', 'bash', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    d.anchor = anchor;
    let out = '';
    anchor.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    anchor.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    const deadline = Date.now() + 10_000;
    while (!out.includes('ready')) {
      if (anchor.exitCode !== null || Date.now() > deadline) throw new Error(`${host.name}: mount namespace setup failed: ${out}`);
      await sleep(20);
    }
    await d.startDockerd();
    await d.dockerOk(['import', imageTar, TEST_IMAGE], 60_000);
    return d;
  }

  /** Runs argv inside the host's network and mount namespace. */
  run(argv: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
    return this.bed.execArgv([...this.enter, ...argv], opts);
  }

  async runOk(argv: string[], timeoutMs = 30_000): Promise<string> {
    const r = await this.run(argv, { timeoutMs });
    if (r.code !== 0) throw new CommandError([...this.enter, ...argv], r);
    return r.stdout;
  }

  private get cliEnv(): NodeJS.ProcessEnv {
    return { ...process.env, DOCKER_HOST: `unix://${this.sock}`, DOCKER_CONFIG: path.join(this.dir, 'cli') };
  }

  /** The docker CLI against this host's dockerd (from our namespace: only its socket is needed). */
  docker(args: string[], timeoutMs = 60_000): Promise<ExecResult> {
    return this.bed.execArgv([DOCKER_BIN, ...args], { timeoutMs, env: this.cliEnv });
  }

  async dockerOk(args: string[], timeoutMs = 60_000): Promise<string> {
    const r = await this.docker(args, timeoutMs);
    if (r.code !== 0) throw new CommandError([DOCKER_BIN, ...args], r);
    return r.stdout;
  }

  /** Runs `cmd` in container `name` (docker exec). */
  exec(name: string, cmd: string[], timeoutMs = 30_000): Promise<ExecResult> {
    return this.docker(['exec', name, ...cmd], timeoutMs);
  }

  async startDockerd(): Promise<void> {
    if (this.dockerd && this.dockerd.exitCode === null && this.dockerd.signalCode === null) throw new Error(`${this.host.name}: dockerd already running`);
    const cfg = path.join(this.dir, 'daemon.json');
    writeFileSync(cfg, '{}\n');
    const log = createWriteStream(path.join(this.dir, 'dockerd.log'), { flags: 'a' });
    const argv = [
      DOCKERD_BIN,
      `--data-root=${path.join(this.dir, 'data')}`,
      `--exec-root=${path.join(this.dir, 'exec')}`,
      `--pidfile=${path.join(this.dir, 'dockerd.pid')}`,
      `-H=unix://${this.sock}`,
      `--config-file=${cfg}`,
      '--bridge=none',
      `--cgroup-parent=${this.cgroupParent}`,
      '--shutdown-timeout=2',
      '--log-level=warn',
    ];
    const child = this.bed.spawnArgv([...this.enter, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    this.dockerd = child;
    this.dockerdExit = new Promise((resolve) => child.once('exit', (code, sig) => resolve(code ?? (sig ? 128 + 9 : 0))));
    const deadline = Date.now() + 60_000;
    for (;;) {
      const r = await this.docker(['version', '--format', '{{.Server.Version}}'], 10_000).catch(() => undefined);
      if (r && r.code === 0) return;
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${this.host.name}: dockerd exited: ${readFileSync(path.join(this.dir, 'dockerd.log'), 'utf8').slice(-2000)}`);
      }
      if (Date.now() > deadline) throw new Error(`${this.host.name}: dockerd not answering within 60 s`);
      await sleep(200);
    }
  }

  /** SIGTERM (dockerd stops its containers first) and waits for the exit. */
  async stopDockerd(timeoutMs = 30_000): Promise<void> {
    const child = this.dockerd;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const done = await Promise.race([this.dockerdExit, sleep(timeoutMs).then(() => undefined)]);
    if (done === undefined) {
      child.kill('SIGKILL');
      await this.dockerdExit;
    }
  }

  /** Kills whatever is left in the containers' cgroups (dockerd gone) and removes the cgroups. */
  private killCgroupLeftovers(): void {
    for (const ctrl of ['pids', 'memory', 'cpu', 'cpuacct', 'cpuset', 'devices', 'freezer', 'blkio', 'systemd', 'unified']) {
      const base = path.join('/sys/fs/cgroup', ctrl, this.cgroupParent);
      if (!existsSync(base)) continue;
      const dirs: string[] = [];
      const walk = (d: string) => {
        for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
        dirs.push(d);
      };
      try {
        walk(base);
      } catch {
        continue;
      }
      for (let round = 0; round < 20; round++) {
        let left = 0;
        for (const d of dirs) {
          let procs: string[] = [];
          try {
            procs = readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
          } catch {
            // Gone meanwhile.
          }
          for (const p of procs) {
            left++;
            try {
              process.kill(Number(p), 'SIGKILL');
            } catch {
              // Exited.
            }
          }
        }
        if (left === 0) break;
        execFileSync('sleep', ['0.05']);
      }
      for (const d of dirs) {
        try {
          rmdirSync(d);
        } catch {
          // Busy or already gone: the next run's teardown (or the kernel) deals with it.
        }
      }
    }
  }

  /** Removes every container, stops dockerd and the anchor; nothing of this host's Docker is left. */
  async destroy(): Promise<void> {
    if (this.dockerd && this.dockerd.exitCode === null && this.dockerd.signalCode === null) {
      const ids = (await this.docker(['ps', '-aq'], 20_000).catch(() => undefined))?.stdout.split('\n').filter(Boolean) ?? [];
      if (ids.length) await this.docker(['rm', '-f', ...ids], 60_000).catch(() => undefined);
      await this.stopDockerd().catch(() => undefined);
    }
    this.killCgroupLeftovers();
    this.anchor?.kill('SIGKILL');
    releaseMountPoint();
  }
}

/** Directories on the way to PLUGIN_DIR that a bed created (deepest last), and how many hosts use them. */
const created: string[] = [];
let mountPointUsers = 0;

function createMountPoint(): void {
  if (mountPointUsers++ > 0) return;
  const missing: string[] = [];
  for (let d = PLUGIN_DIR; d !== path.dirname(d) && !existsSync(d); d = path.dirname(d)) missing.unshift(d);
  mkdirSync(PLUGIN_DIR, { recursive: true });
  created.push(...missing);
}

/** When the last host is gone: removes the (empty) directories createMountPoint made, deepest first. */
function releaseMountPoint(): void {
  if (--mountPointUsers > 0) return;
  mountPointUsers = 0;
  while (created.length) {
    try {
      rmdirSync(created.pop()!);
    } catch {
      // Not empty (someone else's now) or already gone: leave it.
      created.length = 0;
    }
  }
}
