// Simulated container hosts built from network namespaces: an underlay switch, N hosts with a
// docker0 bridge and one container each. Everything lives in namespaces named `<prefix>-*` that
// this process created, and all of them are deleted on destroy, exit, crash or SIGINT/SIGTERM.
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { ChildTracker } from './children';
import { cleanupStaleNamespaces, listNamespaces, registerBed, teardownNamespaces, teardownNamespacesSync, unregisterBed, type LiveBed } from './cleanup';
import { CommandError, describeArgv, runCommand, type ExecOptions, type ExecResult } from './exec';
import { containerNsName, extraNsName, hostNsName, makePrefix, switchNsName, validateTag } from './naming';
import * as topo from './topology';

export type { ExecOptions, ExecResult } from './exec';
export { CommandError } from './exec';
export { ping, iperf3Tcp, waitReachable, type PingOptions, type PingResult, type IperfOptions, type IperfResult } from './traffic';

export interface BedOptions {
  hosts: number;
  /** Human label appended to the prefix ([a-z0-9]{1,8}), e.g. to find a bed's namespaces. */
  tag?: string;
  /** MTU of every underlay veth (default 1500). */
  underlayMtu?: number;
}

export interface BedHost {
  index: number;
  name: string;
  ns: string;
  underlayIp: string;
  underlayDev: 'eth0';
  containerNs: string;
  bed: NetBed;
  setContainerSubnet(gatewayCidr: string, mtu: number): Promise<string>;
  containerIp?: string;
}

/** How long tracked children get between SIGTERM and SIGKILL on destroy. */
const STOP_GRACE_MS = 1_000;

class Host implements BedHost {
  readonly underlayDev = 'eth0' as const;
  readonly name: string;
  readonly ns: string;
  readonly containerNs: string;
  readonly underlayIp: string;
  containerIp?: string;

  constructor(
    readonly bed: NetBed,
    readonly index: number,
  ) {
    this.name = `h${index}`;
    this.ns = hostNsName(bed.prefix, index);
    this.containerNs = containerNsName(bed.prefix, index);
    this.underlayIp = topo.underlayIp(index);
  }

  async setContainerSubnet(gatewayCidr: string, mtu: number): Promise<string> {
    const a = topo.containerAddressing(gatewayCidr);
    await this.bed.ipBatch(this.ns, topo.hostSubnetScript(a, mtu), `readdress docker0 on ${this.name}`);
    await this.bed.ipBatch(this.containerNs, topo.containerSubnetScript(a, mtu), `address the container of ${this.name}`);
    this.containerIp = a.containerIp;
    return a.containerIp;
  }
}

export class NetBed implements LiveBed {
  readonly switchNs: string;
  readonly switchIp = topo.SWITCH_IP;
  readonly hosts: BedHost[] = [];
  private readonly children = new ChildTracker();
  /** Every namespace this bed may have created, recorded before creation so teardown sees it. */
  private readonly nsNames: string[] = [];
  /** Serialises topology changes so concurrent addHost calls get distinct indexes. */
  private building: Promise<unknown> = Promise.resolve();
  private destroying?: Promise<void>;

  private constructor(
    readonly prefix: string,
    readonly underlayMtu: number,
  ) {
    this.switchNs = switchNsName(prefix);
  }

  static async create(opts: BedOptions): Promise<NetBed> {
    if (!Number.isInteger(opts.hosts) || opts.hosts < 1 || opts.hosts > topo.MAX_HOSTS) {
      throw new Error(`hosts must be an integer in 1..${topo.MAX_HOSTS}, got ${opts.hosts}`);
    }
    const mtu = opts.underlayMtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu <= 0) throw new Error(`underlayMtu must be a positive integer, got ${mtu}`);
    const bed = new NetBed(makePrefix(process.pid, opts.tag, listNamespaces), mtu);
    registerBed(bed);
    try {
      await bed.serial(async () => {
        bed.nsNames.push(bed.switchNs);
        await bed.step('create switch namespace', () => bed.ipBatch(undefined, [`netns add ${bed.switchNs}`]));
        await bed.ipBatch(bed.switchNs, topo.switchScript(), 'build underlay switch');
        await bed.buildHosts(Array.from({ length: opts.hosts }, (_, i) => i + 1));
      });
    } catch (e) {
      await bed.destroy().catch(() => undefined);
      throw e;
    }
    return bed;
  }

  /** Deletes namespaces left by earlier runs whose owning process is dead; returns their names. */
  static cleanupStale(): Promise<string[]> {
    return cleanupStaleNamespaces();
  }

  get destroyed(): boolean {
    return this.destroying !== undefined;
  }

  /** All namespaces of the bed: switch, hosts and containers. */
  namespaceNames(): readonly string[] {
    return this.nsNames;
  }

  host(index: number): BedHost {
    const h = this.hosts.find((x) => x.index === index);
    if (!h) throw new Error(`bed ${this.prefix} has no host h${index}`);
    return h;
  }

  /** Adds host h<N+1> (underlay 198.18.0.<N+1>) with its docker0 and container. */
  addHost(): Promise<BedHost> {
    return this.serial(async () => {
      const index = this.hosts.length + 1;
      if (index > topo.MAX_HOSTS) throw new Error(`bed ${this.prefix} is full (${topo.MAX_HOSTS} hosts)`);
      await this.buildHosts([index]);
      return this.host(index);
    });
  }

  /**
   * Adds an empty namespace `<prefix>-x<label>` (label [a-z0-9]{1,8}, loopback up), deleted with the
   * bed like its hosts. Returns its name; its path is /run/netns/<name>.
   */
  addNamespace(label: string): Promise<string> {
    return this.serial(async () => {
      validateTag(label);
      const name = extraNsName(this.prefix, label);
      if (this.nsNames.includes(name)) throw new Error(`bed ${this.prefix} already has namespace ${name}`);
      this.nsNames.push(name);
      await this.step(`create namespace ${name}`, () => this.ipBatch(undefined, [`netns add ${name}`]));
      await this.ipBatch(name, ['link set lo up'], `configure namespace ${name}`);
      return name;
    });
  }

  /** Runs argv inside `ns`; resolves with the exit code and output, rejects only on timeout. */
  async exec(ns: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertAlive();
    return runCommand(['ip', 'netns', 'exec', ns, ...argv], opts, (c) => this.children.add(c));
  }

  /** Like exec, but rejects with the command, exit code and stderr unless it exits 0. */
  async execOk(ns: string, argv: string[], opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(ns, argv, opts);
    if (r.code !== 0) throw new CommandError(['ip', 'netns', 'exec', ns, ...argv], r);
    return r.stdout;
  }

  /** Starts argv inside `ns` (any stdio, including 'ipc'); the child is stopped on destroy. */
  spawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertAlive();
    // `ip netns exec` execs the command in place, so the child pid and its IPC fd are the command's.
    const child = spawnChild('ip', ['netns', 'exec', ns, ...argv], opts);
    this.children.add(child);
    return child;
  }

  /**
   * Starts argv as it is (e.g. `nsenter -t PID -m -n -- ...` into a host's private mount namespace);
   * tracked like spawn(), so it is stopped on destroy. argv must enter one of the bed's namespaces.
   */
  spawnArgv(argv: string[], opts: SpawnOptions = {}): ChildProcess {
    this.assertAlive();
    const child = spawnChild(argv[0], argv.slice(1), opts);
    this.children.add(child);
    return child;
  }

  /** Runs argv as it is (see spawnArgv), bounded and tracked like exec(). */
  async execArgv(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertAlive();
    return runCommand(argv, opts, (c) => this.children.add(c));
  }

  /** Stops tracked children, kills anything left in the namespaces, deletes them. Idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  killChildrenSync(): void {
    this.children.killAllSync();
  }

  /** Runs `ip [-n ns] -batch -`; a failure names the step, the failing line and the kernel's error. */
  async ipBatch(ns: string | undefined, lines: string[], step?: string): Promise<void> {
    this.assertAlive();
    const argv = ns === undefined ? ['ip', '-batch', '-'] : ['ip', '-n', ns, '-batch', '-'];
    // Tracked so a signal mid-build kills an in-flight `ip` before it can add a namespace late.
    const r = await runCommand(argv, { input: lines.join('\n') + '\n', timeoutMs: 30_000 }, (c) => this.children.add(c));
    if (r.code === 0) return;
    const lineNo = Number(/Command failed -:(\d+)/.exec(r.stderr)?.[1] ?? 0);
    const failed = lineNo ? `: "${lines[lineNo - 1]}"` : '';
    const what = `${describeArgv(argv)}${failed} (exit ${r.code}): ${r.stderr.trim() || 'no output'}`;
    throw new Error(step ? `netbed ${this.prefix}: ${step} failed: ${what}` : what);
  }

  private async teardown(): Promise<void> {
    try {
      await this.children.stopAll(STOP_GRACE_MS);
      const left = await teardownNamespaces(this.nsNames);
      if (left.length) throw new Error(`netbed ${this.prefix}: could not delete namespaces ${left.join(', ')}`);
    } catch (e) {
      // Last resort so a failing async path still leaves nothing behind.
      this.children.killAllSync();
      teardownNamespacesSync(this.nsNames);
      throw e;
    } finally {
      unregisterBed(this);
    }
  }

  private async buildHosts(indices: number[]): Promise<void> {
    const created = indices.map((i) => new Host(this, i));
    const names = created.flatMap((h) => [h.ns, h.containerNs]);
    this.nsNames.push(...names);
    try {
      await this.step('create host namespaces', () => this.ipBatch(undefined, names.map((n) => `netns add ${n}`)));
      await this.ipBatch(
        this.switchNs,
        created.flatMap((h) => topo.wireScript(h.index, h.ns, this.underlayMtu)),
        'wire hosts to the underlay switch',
      );
      await Promise.all(
        created.map(async (h) => {
          await this.ipBatch(h.ns, topo.hostScript(h.index, h.containerNs), `configure host ${h.name}`);
          await this.ipBatch(h.containerNs, topo.containerScript(), `configure container of ${h.name}`);
          await this.step(`enable forwarding on ${h.name}`, () => this.execOk(h.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']));
        }),
      );
    } catch (e) {
      // A half-built host must not linger in an otherwise healthy bed (its switch port dies with it).
      const left = await teardownNamespaces(names).catch(() => names);
      const gone = new Set(names.filter((n) => !left.includes(n)));
      this.nsNames.splice(0, this.nsNames.length, ...this.nsNames.filter((n) => !gone.has(n)));
      throw e;
    }
    this.hosts.push(...created);
  }

  private async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw new Error(`netbed ${this.prefix}: ${name} failed: ${(e as Error).message}`, { cause: e });
    }
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.building.then(() => {
      this.assertAlive();
      return fn();
    });
    this.building = run.catch(() => undefined);
    return run;
  }

  private assertAlive(): void {
    if (this.destroying) throw new Error(`netbed ${this.prefix} is destroyed`);
  }
}
