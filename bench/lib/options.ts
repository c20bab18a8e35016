// `vxnet bench`'s command line: node:util parseArgs for the syntax, then one check per option with a
// message naming it. Pure code: the runner and the unit tests share it.
import * as os from 'node:os';
import { parseArgs as parseArgv } from 'node:util';
import { BACKENDS, type BackendName } from './schema';

export interface BenchOptions {
  quick: boolean;
  json?: string;
  svg?: string;
  docs: boolean;
  backends: BackendName[];
  scalingBackends: BackendName[];
  scalingPoints: number[];
  scaling: boolean;
  micro: boolean;
  direct: boolean;
  tag: string;
  seconds: number;
  /** Generator thread counts to try; each flood keeps the one that delivered most. */
  genThreads: number[];
  pings: number;
  pingInterval: number;
  /** Whole-suite repetitions (--runs). */
  runs: number;
  /** The zero-loss search: on/off, trials per backend, seconds per trial. */
  noLoss: boolean;
  noLossTrials: number;
  trialSeconds: number;
  /** --backend-option KEY=VALUE: extra net-conf Backend keys for the userspace backends (udp, vxlan). */
  userspaceOptions: Record<string, unknown>;
}

export const BENCH_USAGE = `usage: vxnet bench [options]      (also: npm run bench -- [options])
  --quick                  short measurements (a few seconds each): a smoke run
  --runs N                 run the whole suite N times; report medians and min–max spread (default 1)
  --json FILE              write the results as JSON
  --svg FILE               render the chart (default: beside --json, FILE.svg)
  --docs                   also write docs/bench/latest.{json,svg} and docs/benchmarks.md
  --backends LIST          comma-separated subset of ${BACKENDS.join(',')} (default: all)
  --scaling-backends LIST  backends for the route-table scaling runs (default: all; quick: vxlan,kernel-vxlan)
  --no-scaling             skip scaling and control-plane measurements
  --no-micro               skip the microbenchmarks
  --seconds N              seconds per throughput/flood measurement (default 10, quick 3)
  --gen-threads N          64-byte generator threads (default: try CPUs - 1 and CPUs, keep the better)
  --trials N               paced trials of the 64-byte zero-loss search per backend (default 7, quick 5)
  --trial-seconds N        seconds per zero-loss trial (default 4, quick 2; at most --seconds)
  --no-zero-loss           skip the 64-byte zero-loss search
  --backend-option K=V     add Backend key K (a JSON value, e.g. CpuLocal=true) to the userspace
                           backends' net-conf; repeatable
  --direct                 drive backends without the daemon and etcd (development aid)
  --tag TAG                namespace tag, [a-z0-9]{1,8} (default bench)`;

/** A bad command line; the message names the option. */
export class UsageError extends Error {}

function parseList(v: string, what: string): BackendName[] {
  const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (xs.length === 0) throw new UsageError(`${what}: needs at least one backend`);
  for (const x of xs) if (!(BACKENDS as readonly string[]).includes(x)) throw new UsageError(`${what}: unknown backend ${JSON.stringify(x)}`);
  return xs as BackendName[];
}

function number(v: string | undefined, what: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < min) throw new UsageError(`${what}: must be a number ≥ ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/** `KEY=VALUE` pairs: KEY a net-conf Backend key (not Type or Datapath), VALUE JSON (a bare word is a string). */
function parseBackendOptions(pairs: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const pair of pairs) {
    const m = /^([A-Z][A-Za-z0-9]*)=(.*)$/.exec(pair);
    if (!m) throw new UsageError(`--backend-option: expected KEY=VALUE with a Backend key such as CpuLocal=true, got ${JSON.stringify(pair)}`);
    if (m[1] === 'Type' || m[1] === 'Datapath') throw new UsageError(`--backend-option: ${m[1]} is chosen by --backends`);
    let v: unknown;
    try {
      v = JSON.parse(m[2]);
    } catch {
      v = m[2];
    }
    out[m[1]] = v;
  }
  return out;
}

export function parseBenchArgs(argv: string[]): BenchOptions | 'help' {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgv({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: 'boolean', short: 'h' },
        quick: { type: 'boolean' },
        json: { type: 'string' },
        svg: { type: 'string' },
        docs: { type: 'boolean' },
        backends: { type: 'string' },
        'scaling-backends': { type: 'string' },
        'no-scaling': { type: 'boolean' },
        'no-micro': { type: 'boolean' },
        direct: { type: 'boolean' },
        tag: { type: 'string' },
        seconds: { type: 'string' },
        'gen-threads': { type: 'string' },
        runs: { type: 'string' },
        trials: { type: 'string' },
        'trial-seconds': { type: 'string' },
        'no-zero-loss': { type: 'boolean' },
        'backend-option': { type: 'string', multiple: true },
      },
    }));
  } catch (err) {
    // In our words, each naming the argument at fault.
    const e = err as Error & { code?: string };
    const named = /'(-[^' ]+)/.exec(e.message)?.[1];
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown argument ${JSON.stringify(named ?? e.message)}`);
    if (e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`unknown argument ${JSON.stringify(/'([^']*)'/.exec(e.message)?.[1] ?? e.message)}`);
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && named) throw new UsageError(`${named} needs a value`);
    throw new UsageError(e.message);
  }
  if (values.help) return 'help';
  const str = (k: string) => values[k] as string | undefined;
  const quick = values.quick === true;
  const tag = str('tag') ?? 'bench';
  if (!/^[a-z0-9]{1,8}$/.test(tag)) throw new UsageError(`--tag must match [a-z0-9]{1,8}, got ${JSON.stringify(tag)}`);
  const seconds = number(str('seconds'), '--seconds', 1) ?? (quick ? 3 : 10);
  const genThreads = number(str('gen-threads'), '--gen-threads', 1);
  const runs = number(str('runs'), '--runs', 1);
  const trials = number(str('trials'), '--trials', 2);
  const trialSeconds = number(str('trial-seconds'), '--trial-seconds', 0.5);
  const json = str('json');
  const cpus = os.cpus().length;
  return {
    quick,
    json,
    svg: str('svg') ?? (json ? json.replace(/\.json$/, '') + '.svg' : undefined),
    docs: values.docs === true,
    backends: str('backends') !== undefined ? parseList(str('backends')!, '--backends') : [...BACKENDS],
    scalingBackends: str('scaling-backends') !== undefined ? parseList(str('scaling-backends')!, '--scaling-backends') : quick ? ['vxlan', 'kernel-vxlan'] : [...BACKENDS],
    // 2 peers: one destination (GSO trains); 3: consecutive datagrams to different peers, as with 1,000 and 10,000.
    scalingPoints: [2, 3, 1000, 10000],
    scaling: values['no-scaling'] !== true,
    micro: values['no-micro'] !== true,
    direct: values.direct === true,
    tag,
    seconds,
    // A userspace forwarder needs a core the generator leaves free, while the kernel datapaths forward
    // inside the sending thread and gain from more senders: try both and keep the better one.
    genThreads: genThreads !== undefined ? [Math.floor(genThreads)] : [...new Set([Math.max(1, cpus - 1), Math.min(4, cpus)])],
    pings: quick ? 400 : 1000,
    pingInterval: quick ? 0.005 : 0.01,
    runs: runs !== undefined ? Math.floor(runs) : 1,
    noLoss: values['no-zero-loss'] !== true,
    noLossTrials: trials !== undefined ? Math.floor(trials) : quick ? 5 : 7,
    trialSeconds: trialSeconds ?? Math.min(seconds, quick ? 2 : 4),
    userspaceOptions: parseBackendOptions((values['backend-option'] as string[] | undefined) ?? []),
  };
}
