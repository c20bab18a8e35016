// The child of src/testbed/dp-host.ts: runs one Datapath in the current network namespace,
// configured from argv (JSON), driven over IPC (src/testbed/rpc.ts). With
// `portOnly` it opens the port without a network of its own (Datapath.createPort); networks are
// added, given peers, read and removed by their id.
import { Datapath, DatapathConfig, DatapathNetwork, NetworkConfig, PeerRoute, PortConfig } from '../datapath';
import { parseCidr } from '../net/ip';
import { failRpc, serveRpc } from './rpc';

interface HostArgs extends Omit<DatapathConfig, 'network' | 'localSubnet'> {
  network: string;
  localSubnet: string;
  portOnly?: boolean;
}
/** A peer route as it crosses the IPC channel (the subnet as text). */
export type WireRoute = Omit<PeerRoute, 'subnet'> & { subnet: string };
/** A network to add (NetworkConfig with CIDRs as text). */
export type WireNetwork = Omit<NetworkConfig, 'network' | 'localSubnet'> & { network: string; localSubnet: string };
export type DpHostRequest =
  | { op: 'routes'; routes: WireRoute[] }
  | { op: 'stats' }
  | { op: 'addNetwork'; network: WireNetwork }
  | { op: 'netRoutes'; net: number; routes: WireRoute[] }
  | { op: 'netStats'; net: number }
  | { op: 'removeNetwork'; net: number };

function toRoutes(routes: WireRoute[]): PeerRoute[] {
  return routes.map((r) => ({ ...r, subnet: parseCidr(r.subnet, true) }));
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as HostArgs;
  const dp = args.portOnly
    ? await Datapath.createPort(args as PortConfig)
    : await Datapath.create({ ...args, network: parseCidr(args.network), localSubnet: parseCidr(args.localSubnet) });
  const nets = new Map<number, DatapathNetwork>();
  const net = (id: number): DatapathNetwork => {
    const n = nets.get(id);
    if (!n) throw new Error(`no network ${id}`);
    return n;
  };
  const handle = async (req: DpHostRequest): Promise<unknown> => {
    switch (req.op) {
      case 'routes':
        dp.setRoutes(toRoutes(req.routes));
        return { routeCount: dp.routeCount };
      case 'stats':
        return dp.stats();
      case 'addNetwork': {
        const w = req.network;
        const n = await dp.addNetwork({ ...w, network: parseCidr(w.network), localSubnet: parseCidr(w.localSubnet) });
        nets.set(n.id, n);
        return { net: n.id, tunName: n.tunName };
      }
      case 'netRoutes':
        net(req.net).setPeers(toRoutes(req.routes));
        return { routeCount: net(req.net).routeCount };
      case 'netStats':
        return net(req.net).stats();
      case 'removeNetwork': {
        const n = net(req.net);
        await n.close();
        return n.stats();
      }
    }
    throw new Error(`unknown op ${(req as { op: string }).op}`);
  };
  // The parent closing the channel (DpHost.close) or a signal: the datapath goes, with its TUNs.
  serveRpc(handle, { tunName: dp.tunName }, () => dp.close());
}

main().catch((e) => failRpc(e, 'dp-host'));
