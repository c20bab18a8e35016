// The bench's hosts: a control agent inside a bed namespace (IPC, bench/agent.ts) and the overlay
// of one backend at a time, run by the real daemon on the Cluster (or, with --direct, by agents).
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { stopChild } from '../../src/testbed/children';
import { RpcChild } from '../../src/testbed/rpc';
import type { Cluster } from '../../src/testbed/cluster';
import { waitReachable, type BedHost, type NetBed } from '../../src/testbed/netbed';
import { parseNetworkConfig, subnetAt } from '../../src/subnet/config';
import { configKey, DEFAULT_PREFIX } from '../../src/subnet/lease';
import { cidrHost, formatCidr, formatIPv4 } from '../../src/net/ip';
import { rmSync } from 'node:fs';
import type { AgentRequest, StatusLike, WireLease } from '../agent';
import type { BackendName } from './schema';
import { descriptorOf } from '../../src/backend/registry';

const AGENT = path.join(__dirname, '..', 'agent.js');
export const NETWORK = '10.244.0.0/16';

// ------------------------------------------------------------------------------------ agent (IPC)

/** The bench's helper inside a bed namespace (bench/agent.ts), over src/testbed/rpc.ts. */
export class Agent {
  private constructor(private readonly rpc: RpcChild<AgentRequest>) {}

  get pid(): number {
    return this.rpc.pid;
  }

  static async start(bed: NetBed, ns: string): Promise<Agent> {
    return new Agent(await RpcChild.start<AgentRequest>(bed, ns, [process.execPath, AGENT], { name: `bench agent in ${ns}`, stderr: 'pipe' }));
  }

  call<T>(req: AgentRequest): Promise<T> {
    return this.rpc.call<T>(req);
  }

  stop(): Promise<void> {
    return this.rpc.stop();
  }
}

// --------------------------------------------------------------------------------- the overlay

export interface RunningHost {
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

export interface NetConf {
  Network: string;
  SubnetLen: number;
  Backend: Record<string, unknown>;
}

/** The net-conf.json Backend section that selects backend `b` (its descriptor's). */
/** The net-conf Backend section of `b`; `userspace` keys are added for the userspace backends. */
export function backendSection(b: BackendName, userspace: Record<string, unknown> = {}): Record<string, unknown> {
  const d = descriptorOf(b);
  return { ...d.section, ...(d.datapath === 'userspace' ? userspace : {}) };
}

/**
 * One backend at a time on the bench's Cluster (src/testbed/cluster.ts: the bed, etcd and the
 * daemons, as the e2e tests and the demo use them), or with --direct on agents running the backend
 * without a daemon.
 */
export class Overlay {
  hosts: RunningHost[] = [];

  constructor(
    private readonly cluster: Cluster,
    private readonly control: Agent | undefined,
    private readonly direct: boolean,
  ) {}

  private get bed(): NetBed {
    return this.cluster.bed;
  }

  get endpoint(): string {
    return this.cluster.endpoint;
  }

  /** Starts the overlay on `hosts` with `conf`; resolves once container 1 reaches container 2. */
  async start(hosts: BedHost[], conf: NetConf): Promise<void> {
    if (this.hosts.length) await this.stop();
    if (this.direct) await this.startDirect(hosts, conf);
    else await this.startDaemons(hosts, conf);
    await this.waitConnected();
  }

  /** A clean etcd prefix with `conf`, then one daemon per host: ready, docker0 readdressed (Cluster.startDaemon). */
  private async startDaemons(hosts: BedHost[], conf: NetConf): Promise<void> {
    await this.cluster.etcdctl(['del', '--prefix', `${DEFAULT_PREFIX}/`]);
    await this.cluster.etcdctl(['put', configKey(DEFAULT_PREFIX), JSON.stringify(conf)]);
    for (const host of hosts) {
      // A new backend starts from nothing: no subnet.env of the previous one.
      rmSync(this.cluster.subnetFile(host), { force: true });
      const d = await this.cluster.startDaemon(host, { args: ['--healthz-port', '0'] });
      const env = await this.cluster.subnetEnv(host);
      this.hosts.push({
        host,
        pid: d.pid,
        subnet: `${formatIPv4(cidrHost(env.subnet, 1))}/${env.subnet.prefixLen}`,
        mtu: env.mtu,
        subnetFile: d.subnetFile,
        daemon: d.child,
        logTail: () => d.output().slice(-6000),
      });
    }
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
    if (await waitReachable(this.bed, a.host.containerNs, to, 30_000)) return;
    const logs = this.hosts.map((h) => `${h.host.name}: ${h.logTail().trim().split('\n').slice(-5).join(' | ')}`).join('; ');
    throw new Error(`container ${a.host.name} cannot reach ${to} on ${b.host.name} within 30 s${logs ? ` (${logs})` : ''}`);
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
        if (h.daemon) await this.cluster.stopDaemon(h.host, 'SIGTERM', 10_000).catch(() => stopChild(h.daemon!, 5_000));
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
