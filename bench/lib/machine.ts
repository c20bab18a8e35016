// Facts about the machine a bench result was measured on, and the command line as typed.
import { execFileSync } from 'node:child_process';
import * as os from 'node:os';
import path from 'node:path';
import { PKTGEN } from './bedtools';
import type { BenchOptions } from './options';
import { DEFAULT_LOSS_LIMIT } from './search';
import { sig } from './stats';

function tryRun(cmd: string, args: string[]): string | undefined {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch {
    return undefined;
  }
}

/** lscpu's "Model name" (what the issue asks the docs to name), else what node reports. */
function cpuModel(): string | undefined {
  const line = tryRun('lscpu', [])?.split('\n').find((l) => /^Model name:/.test(l));
  return line?.replace(/^Model name:\s*/, '').trim() || os.cpus()[0]?.model?.trim();
}

/** The wake-up tool (node-gyp target `wakeup`, native/tools/wakeup.cc). */
export const WAKEUP = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'wakeup');

/**
 * What one thread wake-up costs here (µs percentiles, `samples` at 10 ms apart, so the woken CPU is
 * idle as a worker's is between pings): across CPUs and on the waker's own CPU. A vxnet round trip
 * needs three worker wake-ups the kernel path does not (docs/datapath.md "Latency").
 */
export function wakeupCost(samples: number): Record<string, unknown> | undefined {
  const run = (extra: string[]) => {
    const out = tryRun(WAKEUP, ['--count', String(samples), ...extra]);
    return out ? (JSON.parse(out) as Record<string, unknown>) : undefined;
  };
  const cross = run([]);
  const same = run(['--same-cpu']);
  return cross && same ? { crossCpu: cross, sameCpu: same } : undefined;
}

export function machineInfo(opts: BenchOptions): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpuModel(),
    memGB: sig(os.totalmem() / 2 ** 30, 3),
    kernel: os.release(),
    arch: process.arch,
    node: process.version,
    iperf3: tryRun('iperf3', ['--version'])?.split('\n')[0],
    etcd: tryRun('/usr/bin/etcd', ['--version'])?.split('\n')[0],
    loadAvgAtStart: os.loadavg().map((v) => sig(v, 3)),
    generatorThreads: opts.genThreads,
    secondsPerMeasurement: opts.seconds,
    zeroLossSearch: opts.noLoss ? `${opts.noLossTrials} trials of ${opts.trialSeconds} s, loss ≤ ${DEFAULT_LOSS_LIMIT * 100} %` : 'skipped',
    pingSamples: opts.pings,
    mode: opts.direct ? 'direct (backends without daemon)' : 'daemon',
    addon: process.env.VXNET_ADDON || 'build/Release/vxnet_datapath.node',
    generator: PKTGEN,
    wakeupUs: wakeupCost(300),
  };
}

/** The invocation as typed, with the environment overrides that change what is measured. */
export function commandLine(argv: string[]): string {
  const env = ['VXNET_ADDON', 'VXNET_PKTGEN'].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`);
  // `vxnet bench` runs this entry point as a child and says so (src/cli.ts).
  const viaCli = process.env.VXNET_BENCH_VIA_CLI === '1';
  return [...env, viaCli ? 'vxnet bench' : 'node dist/bench/run.js', ...argv].join(' ');
}
