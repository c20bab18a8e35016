// Measurement primitives on a NetBed: iperf3 with CPU accounting, the 64-byte generator, interface
// counters, ping percentiles. Everything runs inside the bed's namespaces.
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { NetBed } from '../../src/testbed/netbed';
import { parseIperfJson, ping } from '../../src/testbed/traffic';
import { stopChild } from '../../src/testbed/children';
import { describeArgv } from '../../src/testbed/exec';
import { machineCpu, processCpuSeconds } from './proc';
import { percentile } from './stats';

/** The generator binary (node-gyp target `pktgen`); VXNET_PKTGEN overrides, like VXNET_ADDON does for the addon. */
export const PKTGEN = process.env.VXNET_PKTGEN || path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'pktgen');
/** UDP payload making a 64-byte Ethernet frame: 64 - 4 FCS - 14 Ethernet - 20 IPv4 - 8 UDP. */
export const PAYLOAD_64 = 18;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface LinkCounters {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxDropped: number;
  txDropped: number;
}

export async function linkCounters(bed: NetBed, ns: string, dev: string): Promise<LinkCounters> {
  const out = await bed.execOk(ns, ['ip', '-s', '-j', 'link', 'show', 'dev', dev], { timeoutMs: 10_000 });
  const s = (JSON.parse(out) as Array<{ stats64?: { rx: Record<string, number>; tx: Record<string, number> } }>)[0]?.stats64;
  if (!s) throw new Error(`no counters for ${dev} in ${ns}`);
  return { rxPackets: s.rx.packets, txPackets: s.tx.packets, rxBytes: s.rx.bytes, txBytes: s.tx.bytes, rxDropped: s.rx.dropped, txDropped: s.tx.dropped };
}

/** Datagrams that reached the UDP layer in `ns` (delivered to a socket, or dropped for a full buffer). */
export async function udpDatagramsIn(bed: NetBed, ns: string): Promise<number> {
  const out = await bed.execOk(ns, ['cat', '/proc/net/snmp'], { timeoutMs: 10_000 });
  const rows = out.split('\n').filter((l) => l.startsWith('Udp: '));
  if (rows.length < 2) throw new Error(`no Udp counters in ${ns}`);
  const names = rows[0].split(/\s+/).slice(1);
  const vals = rows[1].split(/\s+/).slice(1).map(Number);
  const get = (n: string) => vals[names.indexOf(n)] ?? 0;
  return get('InDatagrams') + get('RcvbufErrors');
}

/**
 * A bound UDP port in `ns` that reads nothing (pktgen --sink): the receiving stack then cuts GSO
 * super-packets into datagrams before counting them. Returns its stop function.
 */
export async function udpSink(bed: NetBed, ns: string, port: number): Promise<() => Promise<void>> {
  const child = bed.spawn(ns, [PKTGEN, '--sink', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (b: Buffer) => (err += b.toString('utf8')));
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`pktgen --sink ${port} in ${ns} exited (${code}): ${err.trim()}`)));
  });
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  };
}

export interface RttResult {
  samples: number;
  sent: number;
  p50Us: number;
  p99Us: number;
}

/** ICMP echo RTT percentiles from `count` pings at `intervalS`. */
export async function rtt(bed: NetBed, fromNs: string, toIp: string, count: number, intervalS: number): Promise<RttResult> {
  const r = await ping(bed, fromNs, toIp, { count, intervalS, timeoutS: 1 });
  if (r.rttMs.length === 0) throw new Error(`no ping replies from ${toIp} (${r.transmitted} sent)`);
  const us = r.rttMs.map((ms) => ms * 1000);
  return { samples: us.length, sent: r.transmitted, p50Us: percentile(us, 50), p99Us: percentile(us, 99) };
}

export interface TcpResult {
  gbps: number;
  bytes: number;
  retransmits?: number;
  /**
   * Busy CPU seconds of the whole machine during the transfer, endpoints included: kernel packet work
   * runs in softirq inside whichever task is current, so the endpoints' share cannot be split off.
   */
  machineCpuSeconds: number;
  /** CPU seconds of the watched (daemon) processes during the transfer. */
  daemonCpuSeconds: number;
  seconds: number;
}

async function waitTcpListening(bed: NetBed, ns: string, port: number, child: ChildProcess, errText: () => string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`iperf3 server exited early: ${errText().trim()}`);
    const r = await bed.exec(ns, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 5_000 });
    if (r.code === 0 && r.stdout.trim()) return;
    await sleep(20);
  }
  throw new Error(`iperf3 server not listening on ${port} in ${ns} within 5 s`);
}

/**
 * One iperf3 TCP test (client in clientNs sends to serverIp), with CPU accounted over the transfer:
 * all busy CPU on the machine, minus the iperf3 processes (reaped children of this process) and
 * this process itself, is the forwarding cost; `daemonPids` are also reported on their own.
 */
export async function tcp(
  bed: NetBed,
  serverNs: string,
  serverIp: string,
  clientNs: string,
  streams: number,
  seconds: number,
  daemonPids: number[],
  port = 5201,
): Promise<TcpResult> {
  const serverArgv = ['iperf3', '-s', '-1', '-B', serverIp, '-p', String(port)];
  const cpu0 = machineCpu();
  const daemon0 = daemonPids.map((p) => processCpuSeconds(p) ?? 0);
  const t0 = performance.now();
  const server = bed.spawn(serverNs, serverArgv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let serverErr = '';
  server.stderr!.on('data', (b: Buffer) => (serverErr += b.toString('utf8')));
  const serverExit = new Promise<void>((r) => (server.exitCode !== null || server.signalCode !== null ? r() : server.once('exit', () => r())));
  let stdout = '';
  try {
    await waitTcpListening(bed, serverNs, port, server, () => serverErr);
    const argv = ['iperf3', '-c', serverIp, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J', '--connect-timeout', '3000'];
    const r = await bed.exec(clientNs, argv, { timeoutMs: (seconds + 30) * 1000 });
    stdout = r.stdout;
    if (!stdout.trim()) throw new Error(`ip netns exec ${clientNs} ${describeArgv(argv)} (exit ${r.code}): ${r.stderr.trim()}`);
    // The one-shot server exits after the test; wait so its CPU is reaped into our counters.
    await Promise.race([serverExit, sleep(3_000)]);
  } finally {
    await stopChild(server, 1_000);
  }
  const t1 = performance.now();
  const res = parseIperfJson(stdout);
  const cpu1 = machineCpu();
  const daemon = daemonPids.reduce((s, p, i) => s + Math.max(0, (processCpuSeconds(p) ?? daemon0[i]) - daemon0[i]), 0);
  return {
    gbps: res.bitsPerSecond / 1e9,
    bytes: res.bytes,
    retransmits: res.retransmits,
    machineCpuSeconds: Math.max(0, cpu1.busy - cpu0.busy),
    daemonCpuSeconds: daemon,
    seconds: (t1 - t0) / 1000,
  };
}

export interface PktgenOutput {
  sent: number;
  errors: number;
  seconds: number;
  threads: number;
  destinations: number;
  /** --pps as given (0 = unpaced); absent from generators older than the paced mode. */
  requestedPps?: number;
  /** sent / seconds, as the generator computed it. */
  offeredPps?: number;
  batch?: number;
  /** Paced mode: times a thread fell behind its schedule and restarted it. */
  resets?: number;
}

export interface FloodResult {
  sent: number;
  delivered: number;
  seconds: number;
  offeredPps: number;
  pps: number;
  loss: number;
  genErrors: number;
  /** Paced floods: the requested rate (0 = unpaced) and the generator's schedule restarts. */
  requestedPps: number;
  resets: number;
}

export interface FloodOptions {
  fromNs: string;
  /** One destination, or a file with one per line (see pktgen --dst-file). */
  dst?: string;
  dstFile?: string;
  seconds: number;
  threads: number;
  /**
   * Where delivery is counted: datagrams reaching the UDP layer in `countNs` on `port` (a sink is
   * bound there for the flood). Interface packet counters would count a GSO super-packet once.
   */
  countNs: string;
  /** Inner destination port (default 9). */
  port?: number;
  /** The UDP port delivery is counted on in `countNs` (default: `port`). */
  countPort?: number;
  /**
   * Count rx packets of this interface in `countNs` instead (packets that are not for a local
   * socket there, e.g. plain routed traffic; only where no GSO super-packet can arrive).
   */
  countDev?: string;
  /** Offered rate in packets/s over all threads (pktgen --pps); absent = as fast as possible. */
  pps?: number;
}

/**
 * Runs the batched 64-byte generator (as fast as it can, or paced at `pps`) and counts what arrives
 * at the far end's UDP layer: loss is end to end, sent by the generator vs datagrams received.
 */
export async function flood(bed: NetBed, o: FloodOptions): Promise<FloodResult> {
  const port = o.port ?? 9;
  const argv = [PKTGEN, '--port', String(port), '--payload', String(PAYLOAD_64), '--threads', String(o.threads), '--seconds', String(o.seconds)];
  if (o.pps !== undefined) {
    if (!(o.pps > 0)) throw new Error(`flood: pps must be positive, got ${o.pps}`);
    argv.push('--pps', o.pps.toFixed(1));
  }
  if (o.dstFile) argv.push('--dst-file', o.dstFile);
  else if (o.dst) argv.push('--dst', o.dst);
  else throw new Error('flood: dst or dstFile required');
  const count = o.countDev
    ? async () => (await linkCounters(bed, o.countNs, o.countDev!)).rxPackets
    : async () => udpDatagramsIn(bed, o.countNs);
  const stopSink = o.countDev ? async () => undefined : await udpSink(bed, o.countNs, o.countPort ?? port);
  let delivered: number;
  let g: PktgenOutput;
  try {
    const before = await count();
    const r = await bed.exec(o.fromNs, argv, { timeoutMs: (o.seconds + 30) * 1000 });
    if (r.code !== 0) throw new Error(`pktgen failed (exit ${r.code}): ${r.stderr.trim()}`);
    g = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as PktgenOutput;
    if (o.pps !== undefined && g.requestedPps === undefined) throw new Error(`${PKTGEN} has no paced mode (--pps): rebuild it (node-gyp build)`);
    // Let queues (TUN, sockets, backlog) drain: late packets still count as delivered.
    await sleep(500);
    delivered = (await count()) - before;
  } finally {
    await stopSink();
  }
  return {
    sent: g.sent,
    delivered,
    seconds: g.seconds,
    offeredPps: g.sent / g.seconds,
    pps: delivered / g.seconds,
    loss: g.sent > 0 ? Math.min(1, Math.max(0, 1 - delivered / g.sent)) : 1,
    genErrors: g.errors,
    requestedPps: g.requestedPps ?? 0,
    resets: g.resets ?? 0,
  };
}
