// Traffic probes run inside bed namespaces: iputils ping and iperf3, with their output parsed.
import { stopChild } from './children';
import { describeArgv } from './exec';
import type { NetBed } from './netbed';

export interface PingOptions {
  count?: number;
  intervalS?: number;
  /** Seconds to wait for each reply (ping -W). */
  timeoutS?: number;
  /** ICMP payload bytes (ping -s). */
  size?: number;
  /** Set DF and never fragment locally (ping -M do), to probe path MTU. */
  dontFragment?: boolean;
  /**
   * Count the times ping went to sleep (its voluntary context switches, from GNU time's `%w`):
   * one per interval when every reply is already there when ping looks for it, two when ping
   * must also wait for the reply.
   */
  countSleeps?: boolean;
}

export interface PingResult {
  transmitted: number;
  received: number;
  rttMs: number[];
  /** With countSleeps: ping's voluntary context switches over the whole run. */
  sleeps?: number;
}

/** Parses iputils ping output; undefined when there is no statistics line. */
export function parsePing(stdout: string): PingResult | undefined {
  const stats = /(\d+) packets transmitted, (\d+) received/.exec(stdout);
  if (!stats) return undefined;
  const rttMs: number[] = [];
  for (const line of stdout.split('\n')) {
    // Duplicates are not extra replies: count each sequence number once.
    if (!/bytes from/.test(line) || /DUP!/.test(line)) continue;
    const t = /time=([\d.]+) ms/.exec(line);
    if (t) rttMs.push(Number(t[1]));
  }
  return { transmitted: Number(stats[1]), received: Number(stats[2]), rttMs };
}

/**
 * Pings `toIp` from inside `fromNs`. Loss is a result (received < transmitted), not an error; it
 * throws only when ping produced no statistics at all (e.g. "Network is unreachable" locally).
 */
export async function ping(bed: NetBed, fromNs: string, toIp: string, opts: PingOptions = {}): Promise<PingResult> {
  const count = opts.count ?? 3;
  const intervalS = opts.intervalS ?? 0.2;
  const timeoutS = opts.timeoutS ?? 2;
  // No -w: with a deadline ping keeps sending past `count` until it gets `count` replies.
  const deadlineS = Math.ceil(count * intervalS + timeoutS);
  const argv = ['ping', '-n', '-c', String(count), '-i', String(intervalS), '-W', String(timeoutS)];
  if (opts.size !== undefined) argv.push('-s', String(opts.size));
  if (opts.dontFragment) argv.push('-M', 'do');
  argv.push(toIp);
  // GNU time writes its line last on stderr, after whatever ping wrote there.
  const SLEEPS = 'vxnet-ping-sleeps';
  const full = opts.countSleeps ? ['/usr/bin/time', '-f', `${SLEEPS} %w`, ...argv] : argv;
  const r = await bed.exec(fromNs, full, { timeoutMs: (deadlineS + 10) * 1000 });
  const parsed = parsePing(r.stdout);
  if (!parsed) throw new Error(`ping produced no statistics (exit ${r.code}): ip netns exec ${fromNs} ${describeArgv(full)}: ${r.stderr.trim() || r.stdout.trim()}`);
  if (opts.countSleeps) {
    const m = new RegExp(`^${SLEEPS} (\\d+)$`, 'm').exec(r.stderr);
    if (!m) throw new Error(`ping: /usr/bin/time reported no context switches: ${r.stderr.trim()}`);
    parsed.sleeps = Number(m[1]);
  }
  return parsed;
}

/** Pings `toIp` from `fromNs` once, every 200 ms, until a reply comes: true, or false after `timeoutMs`. */
export async function waitReachable(bed: NetBed, fromNs: string, toIp: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await ping(bed, fromNs, toIp, { count: 1, timeoutS: 1 }).catch(() => undefined);
    if (r && r.received > 0) return true;
    if (Date.now() > deadline) return false;
    await new Promise((res) => setTimeout(res, 200));
  }
}

export interface IperfOptions {
  seconds?: number;
  streams?: number;
  /** Server sends, client receives (iperf3 -R). */
  reverse?: boolean;
  port?: number;
  /** Run the server / the client on this CPU only (taskset). */
  serverCpu?: number;
  clientCpu?: number;
}

export interface IperfResult {
  /** Receiver-side throughput, the number iperf3 itself reports as the result. */
  bitsPerSecond: number;
  bytes: number;
  retransmits?: number;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_received?: { bytes?: number; bits_per_second?: number };
    sum_sent?: { retransmits?: number };
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Parses `iperf3 -c ... -J` output of a TCP test. */
export function parseIperfJson(text: string): IperfResult {
  let j: IperfJson;
  try {
    j = JSON.parse(text) as IperfJson;
  } catch {
    throw new Error(`iperf3 printed no JSON: ${text.trim().slice(0, 500) || 'no output'}`);
  }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const recv = j.end?.sum_received;
  if (typeof recv?.bits_per_second !== 'number' || typeof recv.bytes !== 'number') throw new Error('iperf3 JSON has no end.sum_received');
  const retransmits = j.end?.sum_sent?.retransmits;
  return { bitsPerSecond: recv.bits_per_second, bytes: recv.bytes, ...(typeof retransmits === 'number' ? { retransmits } : {}) };
}

/**
 * Runs one TCP iperf3 test: a one-shot server bound to `serverIp` in `serverNs`, the client in
 * `clientNs`. The server is always stopped afterwards, whatever happened.
 */
export async function iperf3Tcp(bed: NetBed, serverNs: string, serverIp: string, clientNs: string, opts: IperfOptions = {}): Promise<IperfResult> {
  const seconds = opts.seconds ?? 3;
  const port = opts.port ?? 5201;
  const pin = (cpu: number | undefined) => (cpu === undefined ? [] : ['taskset', '-c', String(cpu)]);
  const serverArgv = [...pin(opts.serverCpu), 'iperf3', '-s', '-1', '-B', serverIp, '-p', String(port)];
  const server = bed.spawn(serverNs, serverArgv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let serverErr = '';
  server.stderr!.on('data', (b: Buffer) => (serverErr += b.toString('utf8')));
  try {
    await waitListening(bed, serverNs, port, () => (server.exitCode !== null || server.signalCode !== null ? `iperf3 server exited early: ${serverErr.trim()}` : undefined));
    const argv = [...pin(opts.clientCpu), 'iperf3', '-c', serverIp, '-p', String(port), '-t', String(seconds), '-P', String(opts.streams ?? 1), '-J', '--connect-timeout', '3000'];
    if (opts.reverse) argv.push('-R');
    const r = await bed.exec(clientNs, argv, { timeoutMs: (seconds + 20) * 1000 });
    try {
      return parseIperfJson(r.stdout);
    } catch (e) {
      throw new Error(`ip netns exec ${clientNs} ${describeArgv(argv)} (exit ${r.code}): ${(e as Error).message} ${r.stderr.trim()}`.trim());
    }
  } finally {
    await stopChild(server, 1_000);
  }
}

/** Polls `ss` in `ns` until a TCP listener on `port` exists; `failed` reports an early abort. */
async function waitListening(bed: NetBed, ns: string, port: number, failed: () => string | undefined): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const why = failed();
    if (why) throw new Error(why);
    const r = await bed.exec(ns, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 5_000 });
    if (r.code === 0 && r.stdout.trim()) return;
    await sleep(20);
  }
  throw new Error(`nothing listened on TCP port ${port} in ${ns} within 5 s`);
}
