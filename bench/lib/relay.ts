// The minimal relay (native/tools/relay.cc, node-gyp target `relay`) between two bed hosts: the
// smallest userspace forwarder a TUN and a UDP socket allow, one thread, poll(), flannel's udp
// format. The benchmarks run it beside the kernel vxlan reference as what the TUN + UDP design costs
// on the machine with none of vxnet's work (checks, steering, batching, spinning):
// `bench/datapath.ts` (mode relay) and `vxnet bench` (its RTT, each run).
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { waitReachable, type BedHost, type NetBed } from '../../src/testbed/netbed';
import { DEFAULT_PORT, ENCAP_OVERHEAD } from '../../src/net/wire';

export const RELAY = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'relay');
export const RELAY_TUN = 'relay0';

export interface RelayPair {
  pids: number[];
  /** The containers' and TUNs' MTU: the underlay's minus flannel udp's outer headers. */
  mtu: number;
  down(): Promise<void>;
}

const subnetOf = (h: BedHost) => `10.244.${h.index}.0/24`;

/**
 * Addresses the containers of `a` and `b` in 10.244.<index>.0/24; on each host a TUN routes the
 * other's subnet and the relay sends what it reads to the other's underlay address. Resolves once
 * a's container reaches b's. Everything is removed by down(), and on failure.
 */
export async function startRelays(bed: NetBed, a: BedHost, b: BedHost): Promise<RelayPair> {
  const mtu = bed.underlayMtu - ENCAP_OVERHEAD.udp;
  const procs: ChildProcess[] = [];
  const made: BedHost[] = [];
  const down = async () => {
    for (const p of procs) {
      if (p.exitCode === null && p.signalCode === null) {
        const gone = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await gone;
      }
    }
    for (const h of made) await bed.exec(h.ns, ['ip', 'link', 'del', RELAY_TUN]);
  };
  try {
    for (const h of [a, b]) await h.setContainerSubnet(`10.244.${h.index}.1/24`, mtu);
    for (const [h, peer] of [[a, b], [b, a]] as const) {
      made.push(h);
      await bed.ipBatch(h.ns, [`tuntap add dev ${RELAY_TUN} mode tun`, `link set ${RELAY_TUN} mtu ${mtu} up`, `route add ${subnetOf(peer)} dev ${RELAY_TUN}`], `relay TUN on ${h.name}`);
      const p = bed.spawn(h.ns, [RELAY, RELAY_TUN, peer.underlayIp, String(DEFAULT_PORT.udp)], { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.push(p);
      await new Promise<void>((resolve, reject) => {
        let out = '';
        p.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('ready')) resolve();
        });
        p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        p.once('error', reject);
        p.once('exit', (code) => reject(new Error(`relay on ${h.name} exited with ${code}: ${out.trim()} (built? ${RELAY})`)));
      });
    }
    // As a backend's start does: the first reply (neighbour entries) before anything is measured.
    if (!(await waitReachable(bed, a.containerNs, b.containerIp!, 10_000))) throw new Error(`${b.containerIp} not reached through the relays within 10 s`);
  } catch (e) {
    await down().catch(() => undefined);
    throw e;
  }
  return { pids: procs.map((p) => p.pid).filter((x): x is number => x !== undefined), mtu, down };
}
