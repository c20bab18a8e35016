// Microbenchmarks of the hot paths, with the `benchmark` package: encapsulation and decapsulation
// (udp and VXLAN), route lookup at 2 and 10,000 peers, and lease parsing. The packet kernels run in
// native loops (the test kit's benchTx/benchRx/benchLookup, vxnet_testkit.node), so each op is a batch and the reported
// time is per packet, not per N-API call.
//
//   node dist/bench/micro.js [--quick] [--json FILE]      (npm run bench:micro)
import Benchmark from 'benchmark';
import { writeFileSync } from 'node:fs';
import { PeerRoute } from '../src/datapath';
import { EncapEngine, benchChecksum, checksumVectorLoop } from '../src/datapath/engine';
import { parseCidr, parseIPv4, formatIPv4 } from '../src/net/ip';
import { decodeLeaseValue, encodeLeaseValue } from '../src/subnet/lease';
import { ipv4, vxlanFrame } from '../src/testbed/packets';

export interface MicroResult {
  name: string;
  /** Nanoseconds per packet / lookup / lease. */
  nsPerOp: number;
  opsPerSec: number;
  /** Relative margin of error of the benchmark's mean, percent. */
  rme: number;
  samples: number;
}

const OUR_MAC = '02:aa:00:00:00:01';
const PEER_MAC = '02:bb:00:00:00:02';
const NETWORK = parseCidr('10.244.0.0/16');
/** /30 subnets so 10,000 peers fit in the /16; ours is the first one. */
const LOCAL = parseCidr('10.244.0.0/30');
const SUBNET_STEP = 4;

/** Peer i: 10.244.0.0 + 4(i+1) /30 behind public IP 198.18.0.0 + i + 1. */
export function fakePeers(n: number): PeerRoute[] {
  return Array.from({ length: n }, (_, i) => ({
    subnet: { ip: (LOCAL.ip + SUBNET_STEP * (i + 1)) >>> 0, prefixLen: 30 },
    publicIp: formatIPv4((parseIPv4('198.18.0.0') + i + 1) >>> 0),
    vtepMac: PEER_MAC,
  }));
}

function engine(encap: 'udp' | 'vxlan', peers: number): EncapEngine {
  const dp = EncapEngine.create({
    encap,
    tunName: 'bench0',
    mtu: 1450,
    network: NETWORK,
    localSubnet: LOCAL,
    vtepMac: encap === 'vxlan' ? OUR_MAC : undefined,
    vni: 1,
  });
  dp.setRoutes(fakePeers(peers));
  return dp;
}

/** A 64-byte Ethernet frame's IPv4 packet: 20 IP + 8 UDP + 18 payload. */
function udpPacket(src: string, dst: string): Buffer {
  const udp = Buffer.alloc(8 + 18);
  udp.writeUInt16BE(40000, 0);
  udp.writeUInt16BE(9, 2);
  udp.writeUInt16BE(udp.length, 4);
  return ipv4({ src, dst, proto: 17, payload: udp });
}

const hostIn = (peer: PeerRoute, host: number) => formatIPv4((peer.subnet.ip + host) >>> 0);

/** Destinations spread over every peer in a fixed pseudo-random order (no locality). */
function spreadDestinations(peers: PeerRoute[], count: number): Uint32Array {
  const out = new Uint32Array(count);
  let x = 0x2545f491;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (peers[(x >>> 0) % peers.length].subnet.ip + 2) >>> 0;
  }
  return out;
}

function mustForward(what: string, r: object): void {
  const drop = (r as { drop?: string }).drop;
  if (drop) throw new Error(`${what}: the benchmark packet is dropped (${drop}); it would measure the drop path`);
}

interface Case {
  name: string;
  /** Items (packets, lookups, leases) one call of fn handles. */
  perCall: number;
  fn: () => void;
}

function cases(): Case[] {
  const out: Case[] = [];
  const BATCH = 1000;
  for (const encap of ['udp', 'vxlan'] as const) {
    const dp = engine(encap, 2);
    const peer = dp.peers[0];
    const tx = udpPacket('10.244.0.2', hostIn(peer, 2));
    mustForward(`encap ${encap}`, dp.encap(tx));
    out.push({ name: `encap ${encap} (64-byte frame)`, perCall: BATCH, fn: () => dp.bench.encap(tx, BATCH) });
    const inner = udpPacket(hostIn(peer, 2), '10.244.0.2');
    const dgram = encap === 'udp' ? inner : vxlanFrame(1, OUR_MAC, PEER_MAC, inner);
    mustForward(`decap ${encap}`, dp.decap(peer.publicIp, dgram));
    out.push({ name: `decap ${encap} (64-byte frame)`, perCall: BATCH, fn: () => dp.bench.decap(peer.publicIp, dgram, BATCH) });
  }
  const big = engine('vxlan', 10_000);
  const far = big.peers[7777];
  const txFar = udpPacket('10.244.0.2', hostIn(far, 2));
  mustForward('encap vxlan 10k', big.encap(txFar));
  out.push({ name: 'encap vxlan, 10,000 peers', perCall: BATCH, fn: () => big.bench.encap(txFar, BATCH) });
  for (const n of [2, 10_000]) {
    const dp = n === 10_000 ? big : engine('vxlan', n);
    const dsts = spreadDestinations(dp.peers as PeerRoute[], 4096);
    out.push({ name: `route lookup, ${n.toLocaleString('en-US')} peers`, perCall: dsts.length, fn: () => dp.bench.lookup(dsts, 1) });
  }
  // The checksum loop: a full-sized TCP segment (segmentation, coalescing) and a whole TSO packet.
  const vector = checksumVectorLoop();
  for (const [bytes, per] of [[1448, 1000], [65536, 50]] as const) {
    for (const loop of vector ? (['scalar', 'vector'] as const) : (['scalar'] as const)) {
      const label = loop === 'vector' ? `vector loop (${vector})` : 'scalar loop';
      out.push({ name: `checksum ${bytes.toLocaleString('en-US')} B, ${label}`, perCall: per, fn: () => benchChecksum(bytes, per, loop) });
    }
  }
  const lease = encodeLeaseValue({ publicIp: '198.18.0.2', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: PEER_MAC } });
  if (!decodeLeaseValue(lease).ok) throw new Error('lease parsing: sample lease rejected');
  out.push({ name: 'lease parse (vxlan JSON)', perCall: 1, fn: () => decodeLeaseValue(lease) });
  return out;
}

export interface MicroOptions {
  quick?: boolean;
  log?: (line: string) => void;
}

export function runMicro(opts: MicroOptions = {}): MicroResult[] {
  const log = opts.log ?? ((l: string) => console.log(l));
  const results: MicroResult[] = [];
  const suite = new Benchmark.Suite('vxnet micro');
  const perCall = new Map<string, number>();
  for (const c of cases()) {
    suite.add(c.name, c.fn, { minSamples: opts.quick ? 5 : 20, maxTime: opts.quick ? 0.5 : 3, initCount: 1 });
    perCall.set(c.name, c.perCall);
  }
  suite.on('cycle', (ev: Benchmark.Event) => {
    const b = ev.target as unknown as Benchmark;
    if (b.error) throw b.error;
    const opsPerSec = (b.hz ?? 0) * (perCall.get(String(b.name)) ?? 1);
    const r: MicroResult = {
      name: String(b.name),
      nsPerOp: 1e9 / opsPerSec,
      opsPerSec,
      rme: b.stats.rme,
      samples: b.stats.sample.length,
    };
    results.push(r);
    log(`  ${r.name.padEnd(38)} ${r.nsPerOp.toFixed(1).padStart(9)} ns/op  ${(r.opsPerSec / 1e6).toFixed(2).padStart(8)} M ops/s  ±${r.rme.toFixed(1)}%  (${r.samples} samples)`);
  });
  suite.run({ async: false });
  return results;
}

function main(argv: string[]): number {
  let quick = false;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') quick = true;
    else if (argv[i] === '--json' && argv[i + 1]) json = argv[++i];
    else {
      console.error(`usage: micro [--quick] [--json FILE] (unknown argument ${argv[i]})`);
      return 2;
    }
  }
  console.log(`vxnet microbenchmarks (benchmark ${Benchmark.version}, node ${process.version})`);
  const results = runMicro({ quick });
  if (json) writeFileSync(json, JSON.stringify({ node: process.version, results }, null, 2) + '\n');
  return 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));
