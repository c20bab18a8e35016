// A datapath host for tests and benchmarks without etcd: src/testbed/dp-host-child.ts inside a bed
// host's namespace, driven over IPC (src/testbed/rpc.ts).
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { NetBed, BedHost } from './netbed';
import type { DatapathStats } from '../datapath';
import { RpcChild, RpcError } from './rpc';
import type { DpHostRequest, WireNetwork, WireRoute } from './dp-host-child';

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
  cpuLocal?: boolean;
}
export type { WireRoute } from './dp-host-child';
/** A network to add (the datapath's NetworkConfig with CIDRs as text). */
export type DpNetworkConfig = WireNetwork;

/** A request the host refused: the message and, for a DatapathConfigError, the field. */
export const DpHostError = RpcError;
export type DpHostError = RpcError;

export class DpHost {
  private constructor(private readonly rpc: RpcChild<DpHostRequest>) {}

  get child(): ChildProcess {
    return this.rpc.child;
  }

  static async start(bed: NetBed, host: BedHost, cfg: DpHostConfig): Promise<DpHost> {
    const script = path.join(__dirname, 'dp-host-child.js');
    const args = {
      tunName: 'vxnet0',
      network: cfg.network ?? '10.244.0.0/16',
      mtu: cfg.mtu ?? (cfg.encap === 'vxlan' ? 1450 : 1472),
      bindAddress: host.underlayIp,
      ...cfg,
    };
    const rpc = await RpcChild.start<DpHostRequest>(bed, host.ns, [process.execPath, script, JSON.stringify(args)], { name: `dp-host in ${host.ns}` });
    return new DpHost(rpc);
  }

  private request<T>(req: DpHostRequest): Promise<T> {
    return this.rpc.call<T>(req, 10_000);
  }

  async setRoutes(routes: WireRoute[]): Promise<void> {
    await this.request({ op: 'routes', routes });
  }

  stats(): Promise<DatapathStats> {
    return this.request<DatapathStats>({ op: 'stats' });
  }

  /** Adds a network; resolves with its id once its TUN is configured. */
  async addNetwork(cfg: DpNetworkConfig): Promise<number> {
    return (await this.request<{ net: number }>({ op: 'addNetwork', network: cfg })).net;
  }

  async setNetworkPeers(net: number, routes: WireRoute[]): Promise<void> {
    await this.request({ op: 'netRoutes', net, routes });
  }

  networkStats(net: number): Promise<DatapathStats> {
    return this.request<DatapathStats>({ op: 'netStats', net });
  }

  /** Removes a network; resolves with its final counters once its TUN is gone. */
  removeNetwork(net: number): Promise<DatapathStats> {
    return this.request<DatapathStats>({ op: 'removeNetwork', net });
  }

  /** Closes the datapath (its TUNs go) and waits for the host process to exit. */
  async close(): Promise<void> {
    if (!this.rpc.running) return;
    await this.rpc.stop(10_000);
  }
}

/**
 * Counters once the traffic before has ended: the last packets of a closed connection (its FIN
 * exchange, a delayed ACK, data still queued in the datapath: iperf3 ends on its control
 * connection while the data connection's tail may still be crossing) may be on their way when its
 * client exits, and a stats() read is not one atomic snapshot of all counters. Reads until two
 * reads 200 ms apart agree on the packet counts (at most 5 s).
 */
export async function settled(read: () => Promise<DatapathStats>): Promise<DatapathStats> {
  let last = await read();
  for (let i = 0; i < 25; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const now = await read();
    if (now.rxPackets === last.rxPackets && now.txPackets === last.txPackets && now.tunReads === last.tunReads) return now;
    last = now;
  }
  return last;
}
