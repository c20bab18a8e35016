// What the Docker networks need from the daemon's datapath, in one place: every Docker network is one
// more VXLAN network on the daemon's userspace vxlan datapath (the same UDP port as the flannel
// network, frames demultiplexed by VNI), with its own TUN inside the network's namespace, its own
// route table and counters. The daemon wires the real datapath in (src/daemon/daemon.ts); tests use a fake.
import type { Cidr } from '../net/ip';
import type { DatapathStats, NetworkConfig, PeerRoute } from '../datapath';

export interface DockerNetworkSpec {
  vni: number;
  /** TUN name inside the namespace. */
  tunName: string;
  /** nsfs path of the network's namespace: the TUN is created there. */
  netnsPath: string;
  mtu: number;
  /** The network's whole range: routed into the TUN inside the namespace. */
  network: Cidr;
  /** This host's lease of the range. */
  localSubnet: Cidr;
  /** This host's VTEP MAC in this network (published in the lease). */
  vtepMac: string;
}

/** Counters of one Docker network, as status and /metrics show them. */
export interface DockerNetworkCounters {
  counters: Record<string, number>;
  drops: Record<string, number>;
  peers: Array<{ subnet: string; publicIp: string; txPackets: number; txBytes: number; rxPackets: number; rxBytes: number }>;
}

export interface DockerNetworkDatapath {
  readonly tunName: string;
  /** Replaces the network's peer routes (every other host's lease of it). */
  setPeers(routes: PeerRoute[]): void;
  stats(): DockerNetworkCounters;
  /** Removes the TUN and the network's routes; the datapath's other networks go on. */
  close(): Promise<void>;
}

export interface DockerDatapath {
  /** The underlay MTU minus VXLAN's overhead: the most a Docker network's links may carry. */
  readonly mtu: number;
  /** UDP port of the shared VXLAN socket (peers' leases are reached there). */
  readonly port: number;
  addNetwork(spec: DockerNetworkSpec): Promise<DockerNetworkDatapath>;
}

/**
 * The datapath's multi-network face (Datapath.addNetwork of src/datapath), structurally: what the
 * adapter below needs of it.
 */
export interface MultiNetworkDatapath {
  addNetwork(cfg: NetworkConfig): Promise<{
    readonly tunName: string;
    setPeers(routes: PeerRoute[]): void;
    stats(): DatapathStats;
    close(): Promise<void>;
  }>;
}

/** Gauges and detail fields of DatapathStats that are not counters. */
const NOT_COUNTERS = new Set(['drops', 'peers', 'workers', 'offload']);

/** The Docker networks' view of the daemon's vxlan datapath (`mtu`: the underlay's minus VXLAN's 50). */
export function dockerDatapath(dp: MultiNetworkDatapath, port: number, mtu: number): DockerDatapath {
  return {
    mtu,
    port,
    async addNetwork(spec: DockerNetworkSpec): Promise<DockerNetworkDatapath> {
      const net = await dp.addNetwork({
        vni: spec.vni,
        tunName: spec.tunName,
        netns: spec.netnsPath,
        mtu: spec.mtu,
        network: spec.network,
        localSubnet: spec.localSubnet,
        vtepMac: spec.vtepMac,
      });
      return {
        get tunName() {
          return net.tunName;
        },
        setPeers: (routes) => net.setPeers(routes),
        stats: () => {
          const st = net.stats();
          const counters: Record<string, number> = {};
          for (const [k, v] of Object.entries(st)) if (!NOT_COUNTERS.has(k) && typeof v === 'number') counters[k] = v;
          return { counters, drops: { ...st.drops }, peers: st.peers };
        },
        close: () => net.close(),
      };
    },
  };
}
