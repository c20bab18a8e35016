// The minimal relay (native/tools/relay.cc, node-gyp target `relay`) between two bed hosts: the
// smallest userspace forwarder a TUN and a UDP socket allow, one thread, poll(), flannel's udp
// format. The benchmarks run it beside the kernel vxlan reference as what the TUN + UDP design costs
// on the machine with none of vxnet's work (checks, steering, batching, spinning): `bench/datapath.ts` (mode relay) and `vxnet bench` (its RTT, each run).
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { BedHost, NetBed } from '../../src/testbed/netbed';

export const RELAY = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'relay');
export const RELAY_PORT = 8285;
export const RELAY_TUN = 'relay0';

export interface RelayPair {
  pids: number[];
  down(): Promise<void>;
}

/**
 * On each of `a` and `b`: a TUN device routing the other's `subnets` entry, and the relay sending
 * what it reads to the other's underlay address. Everything is removed by down(), and on failure.
 */
export async function startRelays(bed: NetBed, a: BedHost, b: BedHost, subnets: Map<BedHost, string>, mtu: number): Promise<RelayPair> {
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
    for (const [h, peer] of [[a, b], [b, a]] as const) {
      const route = subnets.get(peer);
      if (!route) throw new Error(`no subnet given for ${peer.name}`);
      made.push(h);
      await bed.ipBatch(h.ns, [`tuntap add dev ${RELAY_TUN} mode tun`, `link set ${RELAY_TUN} mtu ${mtu} up`, `route add ${route} dev ${RELAY_TUN}`], `relay TUN on ${h.name}`);
      const p = bed.spawn(h.ns, [RELAY, RELAY_TUN, peer.underlayIp, String(RELAY_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
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
  } catch (e) {
    await down().catch(() => undefined);
    throw e;
  }
  return { pids: procs.map((p) => p.pid).filter((x): x is number => x !== undefined), down };
}
