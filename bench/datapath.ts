// The datapath benchmark: on one two-host namespaced bed (containers behind docker0 bridges), in one
// run, TCP throughput (iperf3, 1 stream unless --streams) and ping RTT container to container through
//   kernel  - a Linux vxlan device set up as flannel's vxlan backend does (the reference),
//   vxlan   - vxnet's userspace datapath, VXLAN encapsulation,
//   udp     - vxnet's userspace datapath, flannel `udp` encapsulation,
//   relay   - (only when --modes names it) native/tools/relay.cc: the smallest userspace forwarder,
//             one thread, poll(), one packet per read and send, flannel `udp` encapsulation: what
//             the TUN + UDP design costs on this machine with none of vxnet's work,
// with routes set from TypeScript (no etcd). Modes run interleaved, round by round, so slow drift of
// a noisy machine hits them alike; the table shows medians over rounds and ratios to kernel vxlan.
//
//   node dist/bench/datapath.js [--quick] [--rounds N] [--seconds S] [--modes kernel,vxlan,udp,relay]
//                               [--pings N] [--slow-pings N] [--json FILE] [--tag TAG]
//                               [--streams N] [--perf FILE] [--dp JSON]
//
// --perf FILE: `perf record -a -g` over the first S-2 s of each round's TCP transfer, to
// FILE.<mode>.<round>; the round line then prints the GB the iperf3 server received while perf
// recorded, the figure for `node dist/bench/profile.js FILE.<mode>.<round> --gbytes N`.
//
// Every namespace it creates is deleted on every exit path (normal end, error, Ctrl-C).
import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NetBed, iperf3Tcp, ping, type BedHost } from '../src/testbed/netbed';
import { DpHost } from '../src/testbed/dp-host';
import { median, percentile } from './lib/stats';
import { processCpuSeconds } from './lib/proc';
import { startRelays } from './lib/relay';

type Mode = 'kernel' | 'vxlan' | 'udp' | 'relay';
const MODES: readonly Mode[] = ['kernel', 'vxlan', 'udp', 'relay'];
/** What runs without --modes. */
const DEFAULT_MODES: readonly Mode[] = ['kernel', 'vxlan', 'udp'];
const LABEL: Record<Mode, string> = { kernel: 'kernel vxlan', vxlan: 'vxnet vxlan', udp: 'vxnet udp', relay: 'minimal relay' };
const MTU: Record<Exclude<Mode, 'relay'>, number> = { kernel: 1450, vxlan: 1450, udp: 1472 };
const MAC = (i: number) => `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`;

interface Options {
  rounds: number;
  seconds: number;
  pings: number;
  slowPings: number;
  modes: Mode[];
  json?: string;
  tag: string;
  quick: boolean;
  /** iperf3 parallel streams. */
  streams: number;
  /** `perf record -a -g` over the TCP phase of each vxnet round, written to FILE.<mode>.<round>. */
  perf?: string;
  /** Datapath option overrides for the vxnet modes (JSON, e.g. '{"queues":2}'). */
  dp: Record<string, unknown>;
}

function usage(msg?: string): never {
  if (msg) console.error(`bench:datapath: ${msg}`);
  console.error('usage: node dist/bench/datapath.js [--quick] [--rounds N] [--seconds S] [--modes kernel,vxlan,udp,relay] [--pings N] [--slow-pings N] [--json FILE] [--tag TAG] [--streams N] [--perf FILE] [--dp JSON]');
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = { rounds: quick ? 1 : 3, seconds: quick ? 3 : 5, pings: quick ? 200 : 400, slowPings: quick ? 10 : 30, modes: [...DEFAULT_MODES], tag: 'dpbench', quick, streams: 1, dp: {} };
  const int = (v: string | undefined, name: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) usage(`${name} needs an integer >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') continue;
    else if (a === '--rounds') o.rounds = int(argv[++i], a, 1);
    else if (a === '--seconds') o.seconds = int(argv[++i], a, 1);
    else if (a === '--pings') o.pings = int(argv[++i], a, 10);
    else if (a === '--slow-pings') o.slowPings = int(argv[++i], a, 0);
    else if (a === '--json') o.json = argv[++i] ?? usage('--json needs a file');
    else if (a === '--tag') o.tag = argv[++i] ?? usage('--tag needs a value');
    else if (a === '--streams') o.streams = int(argv[++i], a, 1);
    else if (a === '--perf') o.perf = argv[++i] ?? usage('--perf needs a file');
    else if (a === '--dp') {
      try {
        o.dp = JSON.parse(argv[++i] ?? '');
      } catch {
        usage('--dp needs a JSON object of datapath options');
      }
    }
    else if (a === '--modes') {
      const ms = (argv[++i] ?? '').split(',').filter(Boolean);
      if (!ms.length || ms.some((m) => !MODES.includes(m as Mode))) usage(`--modes takes a list of ${MODES.join(',')}`);
      o.modes = ms as Mode[];
    } else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  return o;
}


interface RttStats {
  intervalS: number;
  sent: number;
  received: number;
  medianUs: number;
  p99Us: number;
  minUs: number;
  /** ping's sleeps per echo sent (see measureRtt). */
  sleepsPerEcho?: number;
}
interface Round {
  tcpGbps: number;
  /** Bytes iperf3 moved over the whole transfer. */
  tcpBytes?: number;
  /** With --perf: payload bytes the iperf3 server received while perf recorded (for profile.js --gbytes). */
  perfBytes?: number;
  /** vxnet modes: CPU seconds of both datapath processes over the whole transfer (/proc, tick accounting) per GB. */
  daemonCpuSecPerGB?: number;
  /** 1-minute load average when the round started. */
  load1?: number;
  tcpRetransmits?: number;
  rtt: RttStats;
  rttSlow?: RttStats;
  datapath?: Record<string, number>;
}

async function measureRtt(bed: NetBed, from: BedHost, to: BedHost, count: number, intervalS: number): Promise<RttStats> {
  const r = await ping(bed, from.containerNs, to.containerIp!, { count, intervalS, timeoutS: 1, countSleeps: true });
  const us = r.rttMs.map((ms) => ms * 1000);
  // Sleeps per echo: 1 when each reply is there by the time ping reads (it only sleeps out the
  // interval), 2 when ping must also wait for it (a thread wake-up in every round trip).
  const sleepsPerEcho = r.sleeps !== undefined && r.transmitted > 0 ? r.sleeps / r.transmitted : undefined;
  return { intervalS, sent: r.transmitted, received: r.received, medianUs: median(us), p99Us: percentile(us, 99), minUs: Math.min(...us), sleepsPerEcho };
}

/** A flannel-style kernel vxlan device on `h` towards `peer` (what flannel's vxlan backend programs). */
async function kernelVxlan(bed: NetBed, h: BedHost, peer: BedHost): Promise<void> {
  const gw = `10.244.${peer.index}.0`;
  await bed.ipBatch(h.ns, [
    `link add flannel.1 address ${MAC(h.index)} type vxlan id 1 local ${h.underlayIp} dev eth0 dstport 8472 nolearning`,
    'link set flannel.1 mtu 1450 up',
    `addr add 10.244.${h.index}.0/32 dev flannel.1`,
    `route add 10.244.${peer.index}.0/24 via ${gw} dev flannel.1 onlink`,
    `neigh add ${gw} lladdr ${MAC(peer.index)} dev flannel.1 nud permanent`,
  ], `kernel vxlan on ${h.name}`);
  await bed.execOk(h.ns, ['bridge', 'fdb', 'add', MAC(peer.index), 'dev', 'flannel.1', 'dst', peer.underlayIp]);
}

/** Brings `mode` up on both hosts; returns its teardown and a stats reader. */
async function bringUp(bed: NetBed, mode: Mode, h1: BedHost, h2: BedHost, dp: Record<string, unknown>) {
  if (mode === 'relay') {
    const r = await startRelays(bed, h1, h2);
    return { pids: r.pids, stats: async () => undefined, down: r.down };
  }
  for (const h of [h1, h2]) await h.setContainerSubnet(`10.244.${h.index}.1/24`, MTU[mode]);
  if (mode === 'kernel') {
    await kernelVxlan(bed, h1, h2);
    await kernelVxlan(bed, h2, h1);
    return {
      pids: [] as number[],
      stats: async () => undefined,
      down: async () => {
        for (const h of [h1, h2]) await bed.execOk(h.ns, ['ip', 'link', 'del', 'flannel.1']);
      },
    };
  }
  const dps: DpHost[] = [];
  try {
    for (const h of [h1, h2]) dps.push(await DpHost.start(bed, h, { encap: mode, localSubnet: `10.244.${h.index}.0/24`, vtepMac: MAC(h.index), mtu: MTU[mode], ...dp }));
    for (const i of [0, 1]) {
      const o = i === 0 ? h2 : h1;
      await dps[i].setRoutes([{ subnet: `10.244.${o.index}.0/24`, publicIp: o.underlayIp, vtepMac: MAC(o.index) }]);
    }
  } catch (e) {
    for (const d of dps) await d.close().catch(() => undefined);
    throw e;
  }
  return {
    pids: dps.map((d) => d.child.pid).filter((p): p is number => p !== undefined),
    stats: async () => {
      const [a, b] = await Promise.all(dps.map((d) => d.stats()));
      const pick = (s: typeof a) => ({ txPackets: s.txPackets, rxPackets: s.rxPackets, txBatches: s.txBatches, rxBatches: s.rxBatches, tunTsoReads: s.tunTsoReads, tunGroWrites: s.tunGroWrites });
      const drops = (s: typeof a) => Object.values(s.drops).reduce((x, y) => x + y, 0);
      return { ...Object.fromEntries(Object.entries(pick(a)).map(([k, v]) => [`h1.${k}`, v])), ...Object.fromEntries(Object.entries(pick(b)).map(([k, v]) => [`h2.${k}`, v])), drops: drops(a) + drops(b) };
    },
    down: async () => {
      for (const d of dps) await d.close();
    },
  };
}

/** Received payload bytes between the `@start` and `@end` `ss -ti` listings (sum of bytes_received). */
function perfWindowBytes(out: string): number | undefined {
  const start = out.indexOf('@start');
  const end = out.indexOf('@end');
  if (start < 0 || end < start) return undefined;
  const sum = (text: string) => [...text.matchAll(/bytes_received:(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
  return sum(out.slice(end)) - sum(out.slice(start, end));
}

async function runRound(bed: NetBed, mode: Mode, o: Options, round: number): Promise<Round> {
  const [h1, h2] = bed.hosts;
  const up = await bringUp(bed, mode, h1, h2, o.dp);
  try {
    // Warm-up: neighbour entries, route caches, the datapath's first batch.
    await ping(bed, h1.containerNs, h2.containerIp!, { count: 5, intervalS: 0.01, timeoutS: 2 });
    const rtt = await measureRtt(bed, h1, h2, o.pings, 0.01);
    const rttSlow = o.slowPings ? await measureRtt(bed, h1, h2, o.slowPings, 0.2) : undefined;
    // The profile covers the middle of the transfer: whole machine, call graphs (where the cycles go).
    // The recorded command reads the iperf3 server's received payload bytes (tcp_info
    // bytes_received of its sockets on port 5201, `ss -ti`) at the start and at the end of the
    // recording, so the profile's CPU seconds divide by exactly the bytes moved while it ran.
    const perfSeconds = Math.max(1, o.seconds - 2);
    const ssCmd = `ss -Htin state established '( sport = :5201 )'`;
    let perfOut = '';
    const perf = o.perf
      ? spawn('perf', ['record', '-a', '-g', '-q', '-o', `${o.perf}.${mode}.${round}`, '--', 'ip', 'netns', 'exec', h2.containerNs, 'sh', '-c', `echo @start; ${ssCmd}; sleep ${perfSeconds}; echo @end; ${ssCmd}`], { stdio: ['ignore', 'pipe', 'ignore'] })
      : undefined;
    perf?.stdout!.on('data', (b: Buffer) => (perfOut += b.toString('utf8')));
    const perfExit = perf ? new Promise((r) => (perf.exitCode !== null ? r(undefined) : perf.once('exit', r))) : undefined;
    const cpu0 = up.pids.map((p) => processCpuSeconds(p) ?? 0);
    const t = await iperf3Tcp(bed, h2.containerNs, h2.containerIp!, h1.containerNs, { seconds: o.seconds, streams: o.streams });
    const daemonCpu = up.pids.reduce((n, p, i) => n + Math.max(0, (processCpuSeconds(p) ?? cpu0[i]) - cpu0[i]), 0);
    if (perfExit) await perfExit;
    const datapath = await up.stats();
    const perfBytes = perf ? perfWindowBytes(perfOut) : undefined;
    const daemonCpuSecPerGB = up.pids.length && t.bytes > 0 ? daemonCpu / (t.bytes / 1e9) : undefined;
    return { tcpGbps: t.bitsPerSecond / 1e9, tcpBytes: t.bytes, ...(perfBytes !== undefined ? { perfBytes } : {}), ...(daemonCpuSecPerGB !== undefined ? { daemonCpuSecPerGB } : {}), tcpRetransmits: t.retransmits, rtt, rttSlow, ...(datapath ? { datapath } : {}) };
  } finally {
    await up.down();
  }
}

function gitCommit(): string | undefined {
  try {
    const root = path.resolve(__dirname, '..', '..');
    const head = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8' }).trim() ? '+dirty' : '';
    return head + dirty;
  } catch {
    return undefined;
  }
}

const fmt = (v: number | undefined, d = 2) => (v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const pad = (s: string, n: number) => s.padEnd(n);
const lpad = (s: string, n: number) => s.padStart(n);

const streamsLabel = (n: number) => `${n} stream${n === 1 ? '' : 's'}`;

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const command = `node dist/bench/datapath.js ${process.argv.slice(2).join(' ')}`.trim();
  console.log(`bench:datapath: ${o.modes.map((m) => LABEL[m]).join(', ')}; ${o.rounds} round(s); iperf3 ${streamsLabel(o.streams)} ${o.seconds} s; ping ${o.pings} x 10 ms${o.slowPings ? ` + ${o.slowPings} x 200 ms` : ''}`);
  console.log(`  machine: ${os.cpus()[0]?.model ?? '?'} x ${os.cpus().length}, load average ${os.loadavg().map((v) => v.toFixed(2)).join(' ')}`);
  const bed = await NetBed.create({ hosts: 2, tag: o.tag });
  const rounds: Record<Mode, Round[]> = { kernel: [], vxlan: [], udp: [], relay: [] };
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (const mode of o.modes) {
        const load1 = os.loadavg()[0];
        const res = await runRound(bed, mode, o, r + 1);
        res.load1 = load1;
        rounds[mode].push(res);
        console.log(
          `  round ${r + 1} ${pad(LABEL[mode], 12)}  TCP ${lpad(fmt(res.tcpGbps), 6)} Gbit/s  RTT median ${lpad(fmt(res.rtt.medianUs, 0), 4)} µs p99 ${lpad(fmt(res.rtt.p99Us, 0), 4)} µs, ${fmt(res.rtt.sleepsPerEcho)} ping sleeps/echo` +
            (res.rttSlow ? `  (200 ms: median ${fmt(res.rttSlow.medianUs, 0)} µs)` : '') +
            `  ${fmt((res.tcpBytes ?? 0) / 1e9, 2)} GB moved` +
            (res.perfBytes !== undefined ? `, ${fmt(res.perfBytes / 1e9, 3)} GB while perf recorded (profile.js --gbytes)` : '') +
            (res.daemonCpuSecPerGB !== undefined ? `  daemons ${fmt(res.daemonCpuSecPerGB, 3)} CPU s/GB (/proc)` : '') +
            `  load ${fmt(load1)}`,
        );
      }
    }
  } finally {
    await bed.destroy();
  }

  const summary = o.modes.map((mode) => {
    const rs = rounds[mode];
    const allFast = rs.map((x) => x.rtt);
    const slow = rs.flatMap((x) => (x.rttSlow ? [x.rttSlow] : []));
    return {
      mode,
      label: LABEL[mode],
      tcpGbps: median(rs.map((x) => x.tcpGbps)),
      tcpGbpsRounds: rs.map((x) => x.tcpGbps),
      rttMedianUs: median(allFast.map((x) => x.medianUs)),
      rttP99Us: median(allFast.map((x) => x.p99Us)),
      rttSlowMedianUs: slow.length ? median(slow.map((x) => x.medianUs)) : undefined,
      rttSlowP99Us: slow.length ? median(slow.map((x) => x.p99Us)) : undefined,
      lost: allFast.reduce((n, x) => n + x.sent - x.received, 0) + slow.reduce((n, x) => n + x.sent - x.received, 0),
    };
  });
  const ref = summary.find((s) => s.mode === 'kernel');
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined && b > 0 ? a / b : undefined);

  console.log('');
  console.log(`${pad('datapath', 13)} ${lpad('TCP Gbit/s', 10)} ${lpad('x kernel', 8)}   ${lpad('RTT med', 8)} ${lpad('p99', 6)} ${lpad('x kernel', 8)}   ${lpad('RTT med', 8)} ${lpad('p99', 6)}   lost`);
  console.log(`${pad('', 13)} ${lpad(`(${streamsLabel(o.streams)})`, 10)} ${lpad('', 8)}   ${lpad('µs@10ms', 8)} ${lpad('µs', 6)} ${lpad('', 8)}   ${lpad('µs@200ms', 8)} ${lpad('µs', 6)}`);
  for (const s of summary) {
    console.log(
      `${pad(s.label, 13)} ${lpad(fmt(s.tcpGbps), 10)} ${lpad(fmt(ratio(s.tcpGbps, ref?.tcpGbps)), 8)}   ${lpad(fmt(s.rttMedianUs, 0), 8)} ${lpad(fmt(s.rttP99Us, 0), 6)} ${lpad(fmt(ratio(s.rttMedianUs, ref?.rttMedianUs)), 8)}   ${lpad(fmt(s.rttSlowMedianUs, 0), 8)} ${lpad(fmt(s.rttSlowP99Us, 0), 6)}   ${lpad(String(s.lost), 4)}`,
    );
  }
  console.log(`(medians over ${o.rounds} round(s); TCP container h1 -> h2, iperf3 -t ${o.seconds} -P ${o.streams}; RTT by ping -i 0.01 -c ${o.pings}${o.slowPings ? ` and -i 0.2 -c ${o.slowPings}` : ''})`);

  if (o.json) {
    const doc = {
      benchmark: 'datapath',
      command,
      date: new Date().toISOString(),
      commit: gitCommit(),
      machine: { kernel: os.release(), cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version },
      options: { rounds: o.rounds, seconds: o.seconds, pings: o.pings, slowPings: o.slowPings, modes: o.modes, quick: o.quick },
      summary: summary.map((s) => ({ ...s, tcpRatioToKernel: ratio(s.tcpGbps, ref?.tcpGbps), rttRatioToKernel: ratio(s.rttMedianUs, ref?.rttMedianUs) })),
      rounds,
    };
    writeFileSync(o.json, JSON.stringify(doc, null, 2) + '\n');
    console.log(`wrote ${o.json}`);
  }
}

main().catch((e) => {
  console.error(`bench:datapath: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
});
