// Starts test/fixtures/dp-host.js inside a bed host's namespace and talks to it over IPC.
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { NetBed, BedHost } from '../../src/testbed/netbed';
import type { DatapathStats } from '../../src/datapath';

export interface DpHostConfig {
  encap: 'udp' | 'vxlan';
  /** Open the port only (Datapath.createPort): no network of its own, localSubnet etc. unused. */
  portOnly?: boolean;
  localSubnet: string;
  network?: string;
  mtu?: number;
  vtepMac?: string;
  vni?: number;
  queues?: number;
  busyPollUs?: number;
}
export interface WireRoute {
  subnet: string;
  publicIp: string;
  vtepMac?: string;
  port?: number;
}

/** A network to add (NetworkConfig with CIDRs as strings). */
export interface DpNetworkConfig {
  vni: number;
  tunName: string;
  netns?: string;
  mtu: number;
  network: string;
  localSubnet: string;
  vtepMac: string;
  tunAddress?: string;
}

/** A request the host refused: the message and, for a DatapathConfigError, the field. */
export class DpHostError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export class DpHost {
  private seq = 0;
  private readonly waiters = new Map<number, (m: Record<string, unknown>) => void>();
  private constructor(readonly child: ChildProcess) {
    child.on('message', (m: Record<string, unknown>) => {
      const w = this.waiters.get(m.id as number);
      if (w) {
        this.waiters.delete(m.id as number);
        w(m);
      }
    });
  }

  static async start(bed: NetBed, host: BedHost, cfg: DpHostConfig): Promise<DpHost> {
    const fixture = path.resolve(__dirname, '..', 'fixtures', 'dp-host.js');
    const args = {
      tunName: 'vxnet0',
      network: cfg.network ?? '10.244.0.0/16',
      mtu: cfg.mtu ?? (cfg.encap === 'vxlan' ? 1450 : 1472),
      bindAddress: host.underlayIp,
      ...cfg,
    };
    const child = bed.spawn(host.ns, [process.execPath, fixture, JSON.stringify(args)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`dp-host in ${host.ns} did not start within 15 s`)), 15000);
      child.once('message', (m: Record<string, unknown>) => {
        clearTimeout(t);
        resolve(m);
      });
      child.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`dp-host in ${host.ns} exited with ${code}`));
      });
    });
    if (!ready.ready) throw new Error(`dp-host in ${host.ns}: ${String(ready.error)}`);
    return new DpHost(child);
  }

  private request(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`dp-host: no answer to ${String(msg.op)} within 10 s`)), 10000);
      this.waiters.set(id, (m) => {
        clearTimeout(t);
        if (m.ok) resolve(m);
        else reject(new DpHostError(String(m.error), m.field as string | undefined));
      });
      this.child.send({ ...msg, id });
    });
  }

  async setRoutes(routes: WireRoute[]): Promise<void> {
    await this.request({ op: 'routes', routes });
  }

  async stats(): Promise<DatapathStats> {
    return (await this.request({ op: 'stats' })).stats as DatapathStats;
  }

  /** Adds a network; resolves with its id once its TUN is configured. */
  async addNetwork(cfg: DpNetworkConfig): Promise<number> {
    return (await this.request({ op: 'addNetwork', network: cfg })).net as number;
  }

  async setNetworkPeers(net: number, routes: WireRoute[]): Promise<void> {
    await this.request({ op: 'netRoutes', net, routes });
  }

  async networkStats(net: number): Promise<DatapathStats> {
    return (await this.request({ op: 'netStats', net })).stats as DatapathStats;
  }

  /** Removes a network; resolves with its final counters once its TUN is gone. */
  async removeNetwork(net: number): Promise<DatapathStats> {
    return (await this.request({ op: 'removeNetwork', net })).stats as DatapathStats;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || !this.child.connected) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    await this.request({ op: 'close' }).catch(() => undefined);
    await exited;
  }
}
