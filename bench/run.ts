// `vxnet bench` / `npm run bench`: builds its own namespaced bed (three hosts with docker0 bridges
// and containers, a local etcd in the underlay switch), runs the real daemon on it and measures
// every backend in one run, against kernel-vxlan measured on the same bed in the same run.
//
//   node dist/bench/run.js [--quick] [--runs N] [--json FILE] [--svg FILE] [--docs] [--backends a,b]
//                          [--scaling-backends a,b] [--no-scaling] [--no-micro] [--direct]
//
// --runs N repeats the whole suite N times (a fresh bed each time) and reports per metric the
// median and the min–max spread; ratios to kernel-vxlan are taken per run, then summarised.
//
// Exit status: 0 when every measurement ran, 1 when one could not run, 2 for bad arguments,
// 130 on Ctrl-C. Figures are never judged here. Namespaces, daemons, etcd and temporary files are
// removed on every exit path (NetBed and the etcd launcher hook process exit and signals).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NetBed } from '../src/testbed/netbed';
import { Cluster } from '../src/testbed/cluster';
import { flood, PKTGEN, rtt, tcp, type FloodOptions, type FloodResult } from './lib/bedtools';
import { DEFAULT_LOSS_LIMIT, searchNoLoss } from './lib/search';
import { summarizeRuns } from './lib/summary';
import { processRssMB } from './lib/proc';
import { renderFloors } from './lib/floors';
import { BACKENDS, BackendName, BackendResult, BenchResult, METRIC_KEYS, METRICS, REFERENCE, type RelayResult, type Spread, computeRatios, failedBackend, validateResult } from './lib/schema';
import { human, ratio, sig } from './lib/stats';
import { renderChart } from './lib/svg';
import { renderMarkdown } from './lib/report';
import { Agent, backendSection, NETWORK, Overlay } from './lib/overlay';
import { commandLine, machineInfo } from './lib/machine';
import { runScaling } from './scaling';
import { RELAY, startRelays, type RelayPair } from './lib/relay';
import { BENCH_USAGE as USAGE, parseBenchArgs, UsageError, type BenchOptions as Options } from './lib/options';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');

// ---------------------------------------------------------------------------------------- progress

class Progress {
  private readonly t0 = Date.now();
  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  private stamp(): string {
    const s = Math.floor((Date.now() - this.t0) / 1000);
    return `[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}]`;
  }

  line(msg: string): void {
    this.out.write(`${this.stamp()} ${msg}\n`);
  }
}

// ------------------------------------------------------------------------------------- the run

class Runner {
  readonly result: BenchResult;
  readonly errors: string[] = [];
  private bed?: NetBed;
  private cluster?: Cluster;
  private control?: Agent;
  private overlay?: Overlay;
  private readonly tmp: string;
  private readonly progress = new Progress();

  constructor(
    private readonly opts: Options,
    argv: string[],
  ) {
    this.tmp = mkdtempSync(path.join(os.tmpdir(), 'vxnet-bench-'));
    this.result = {
      machine: machineInfo(opts),
      backends: {} as BenchResult['backends'],
      command: commandLine(argv),
      ...(Object.keys(opts.userspaceOptions).length ? { userspaceOptions: opts.userspaceOptions } : {}),
      quick: opts.quick,
      startedAt: new Date().toISOString(),
    };
  }

  private log(msg: string): void {
    this.progress.line(msg);
  }

  private fail(where: string, e: unknown): string {
    const msg = `${where}: ${(e as Error).message ?? String(e)}`;
    this.errors.push(msg);
    this.log(`FAILED ${msg}`);
    return msg;
  }

  removeTmp(): void {
    rmSync(this.tmp, { recursive: true, force: true });
  }

  async run(): Promise<void> {
    const t0 = Date.now();
    try {
      await this.setup();
      for (const b of this.order(this.opts.backends)) await this.measureBackend(b);
      this.result.ratios = computeRatios(this.result.backends);
      this.generatorCheck();
      await this.relayReference();
      if (this.opts.scaling) await this.scalingAll();
    } catch (e) {
      this.fail('bed', e);
    } finally {
      await this.teardown();
    }
    if (this.opts.micro) {
      this.log('microbenchmarks (encap, decap, route lookup, lease parsing)');
      try {
        const { runMicro } = await import('./micro');
        this.result.micro = runMicro({ quick: this.opts.quick, log: (l) => this.log(l.trim()) });
      } catch (e) {
        this.fail('micro', e);
      }
    }
    for (const b of BACKENDS) this.result.backends[b] ??= failedBackend(this.opts.backends.includes(b) ? 'not measured' : 'not selected (--backends)');
    this.result.ratios = computeRatios(this.result.backends);
    this.result.durationSeconds = Math.round((Date.now() - t0) / 1000);
    this.result.machine.loadAvgAtEnd = os.loadavg().map((v) => sig(v, 3));
    this.result.errors = this.errors;
  }

  /** The reference first, so every later figure can show its ratio as it is printed. */
  private order(bs: BackendName[]): BackendName[] {
    return [...bs].sort((a, b) => Number(b === REFERENCE) - Number(a === REFERENCE) || BACKENDS.indexOf(a) - BACKENDS.indexOf(b));
  }

  private async setup(): Promise<void> {
    if (!existsSync(PKTGEN)) throw new Error(`${PKTGEN} is missing: build with node-gyp (npm install)`);
    if (!this.opts.direct && !existsSync(CLI)) throw new Error(`${CLI} is missing (the daemon is not built); --direct runs the backends without it`);
    const stale = await NetBed.cleanupStale();
    if (stale.length) this.log(`removed ${stale.length} stale namespaces of dead bench/test runs`);
    this.log(`building the bed: 3 hosts with docker0 + a container each, underlay switch (tag ${this.opts.tag})`);
    this.cluster = await Cluster.create({ hosts: 3, tag: this.opts.tag });
    this.bed = this.cluster.bed;
    if (!this.opts.direct) {
      this.control = await Agent.start(this.bed, this.bed.host(1).ns);
      this.log(`etcd up at ${this.cluster.endpoint} (switch namespace); bed ${this.bed.prefix}`);
    }
    this.overlay = new Overlay(this.cluster, this.control, this.opts.direct);
  }

  private async teardown(): Promise<void> {
    try {
      await this.overlay?.stop();
    } catch {
      // the cluster teardown below kills whatever is left
    }
    await this.control?.stop().catch(() => undefined);
    if (this.cluster) {
      this.log(`removing bed ${this.cluster.bed.prefix}`);
      await this.cluster.destroy().catch((e) => this.fail('teardown', e));
    }
  }

  /**
   * The minimal relay's idle RTT on h1–h2 (bench/lib/relay.ts), measured as every backend's is, with
   * no daemon running: what the TUN + UDP design costs here with none of vxnet's work, beside the
   * RTT floors.
   */
  private async relayReference(): Promise<void> {
    const bed = this.bed!;
    const [h1, h2] = [bed.host(1), bed.host(2)];
    const rec: RelayResult = { rttP50Us: null, rttP99Us: null, errors: [] };
    this.result.relay = rec;
    let relays: RelayPair | undefined;
    try {
      await this.overlay!.stop();
      this.log(`minimal relay (${RELAY}): RTT, ${this.opts.pings} pings at ${this.opts.pingInterval * 1000} ms intervals`);
      relays = await startRelays(bed, h1, h2);
      const r = await rtt(bed, h1.containerNs, h2.containerIp!, this.opts.pings, this.opts.pingInterval);
      rec.rttP50Us = sig(r.p50Us);
      rec.rttP99Us = sig(r.p99Us);
      rec.rttSamples = r.samples;
      const rs = (v: number | null, key: string) => {
        const x = ratio(v, this.refOf(key));
        return typeof x === 'number' ? `  ×${x.toFixed(2)} ${REFERENCE}` : '';
      };
      this.log(`  minimal relay: RTT p50 = ${human(rec.rttP50Us)} µs${rs(rec.rttP50Us, 'rttP50Us')}`);
      this.log(`  minimal relay: RTT p99 = ${human(rec.rttP99Us)} µs${rs(rec.rttP99Us, 'rttP99Us')}  (${r.samples}/${r.sent} replies)`);
    } catch (e) {
      rec.errors.push(this.fail('minimal relay: RTT', e));
    } finally {
      await relays?.down().catch((e) => this.fail('minimal relay: teardown', e));
    }
  }

  private refOf(key: string): number | null {
    const ref = this.result.backends[REFERENCE];
    return ref ? ((ref as Record<string, unknown>)[key] as number | null) : null;
  }

  private show(b: BackendName, key: (typeof METRIC_KEYS)[number], v: number | null, extra = ''): void {
    const r = b === REFERENCE ? '(reference)' : ratio(v, this.refOf(key));
    const rs = typeof r === 'number' ? `×${r.toFixed(2)} kernel-vxlan` : r ?? '';
    const shown = key === 'loss64' && v !== null ? `${(v * 100).toFixed(2)}%` : human(v);
    const unit = key === 'loss64' ? '' : ` ${METRICS[key].unit}`;
    this.log(`  ${b}: ${METRICS[key].label} = ${shown}${unit}  ${rs}${extra}`);
  }

  private async measureBackend(b: BackendName): Promise<void> {
    const bed = this.bed!;
    const overlay = this.overlay!;
    const res = failedBackend('') as BackendResult;
    res.errors = [];
    this.result.backends[b] = res;
    const [h1, h2] = [bed.host(1), bed.host(2)];
    this.log(`${b}: starting ${this.opts.direct ? 'backends' : 'daemons'} on ${h1.name}, ${h2.name} (${JSON.stringify(backendSection(b, this.opts.userspaceOptions))})`);
    try {
      await overlay.start([h1, h2], { Network: NETWORK, SubnetLen: 24, Backend: backendSection(b, this.opts.userspaceOptions) });
    } catch (e) {
      res.errors.push(this.fail(`${b}: start`, e));
      await overlay.stop().catch(() => undefined);
      return;
    }
    const [r1, r2] = overlay.hosts;
    res.mtu = r1.mtu;
    const dst = h2.containerIp!;
    const pids = overlay.hosts.map((h) => h.pid);
    this.log(`  ${b}: up: ${h1.name} ${r1.subnet} ↔ ${h2.name} ${r2.subnet}, MTU ${r1.mtu}`);
    const step = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
      } catch (e) {
        res.errors!.push(this.fail(`${b}: ${name}`, e));
      }
    };
    this.lastFlood = undefined;
    await step('RTT', async () => {
      this.log(`  ${b}: RTT, ${this.opts.pings} pings at ${this.opts.pingInterval * 1000} ms intervals`);
      const r = await rtt(bed, h1.containerNs, dst, this.opts.pings, this.opts.pingInterval);
      res.rttP50Us = sig(r.p50Us);
      res.rttP99Us = sig(r.p99Us);
      res.rttSamples = r.samples;
      this.show(b, 'rttP50Us', res.rttP50Us);
      this.show(b, 'rttP99Us', res.rttP99Us, `  (${r.samples}/${r.sent} replies)`);
    });
    await step('TCP 1 stream', async () => {
      this.log(`  ${b}: TCP, 1 stream, ${this.opts.seconds} s (iperf3)`);
      const r = await tcp(bed, h2.containerNs, dst, h1.containerNs, 1, this.opts.seconds, pids);
      res.tcp1Gbps = sig(r.gbps);
      const gb = r.bytes / 1e9;
      res.cpuSecPerGB = gb > 0 ? sig(r.machineCpuSeconds / gb) : null;
      res.daemonCpuSecPerGB = gb > 0 ? sig(r.daemonCpuSeconds / gb) : null;
      this.show(b, 'tcp1Gbps', res.tcp1Gbps, r.retransmits !== undefined ? `  (${r.retransmits} retransmits)` : '');
      this.show(b, 'cpuSecPerGB', res.cpuSecPerGB, `  (daemons alone ${human(res.daemonCpuSecPerGB)} s/GB)`);
    });
    await step('TCP 4 streams', async () => {
      // Pings at 10 ms beside the streams, same direction, from 1 s in to 1 s before the end: the
      // round trip of a light flow while bulk flows fill the path (docs/datapath.md, "Under bulk load").
      const loadPings = Math.max(10, Math.floor((this.opts.seconds - 2) * 100));
      this.log(`  ${b}: TCP, 4 streams, ${this.opts.seconds} s (iperf3 -P 4), beside them ${loadPings} pings at 10 ms`);
      const pinged = new Promise((r) => setTimeout(r, 1000)).then(() => rtt(bed, h1.containerNs, dst, loadPings, 0.01));
      pinged.catch(() => undefined);  // awaited below, after the transfer
      const r = await tcp(bed, h2.containerNs, dst, h1.containerNs, 4, this.opts.seconds, pids);
      res.tcp4Gbps = sig(r.gbps);
      this.show(b, 'tcp4Gbps', res.tcp4Gbps, r.retransmits !== undefined ? `  (${r.retransmits} retransmits)` : '');
      const l = await pinged;
      res.rttLoadP50Us = sig(l.p50Us);
      res.rttLoadP99Us = sig(l.p99Us);
      this.show(b, 'rttLoadP50Us', res.rttLoadP50Us);
      this.show(b, 'rttLoadP99Us', res.rttLoadP99Us, `  (${l.samples}/${l.sent} replies)`);
    });
    await step('64-byte flood', async () => {
      this.log(`  ${b}: 64-byte UDP flood, ${this.opts.genThreads.join(' and ')} generator threads, ${this.opts.seconds} s each`);
      const r = await this.bestFlood({ fromNs: h1.containerNs, dst, countNs: h2.containerNs });
      this.lastFlood = r;
      res.genThreads = r.threads;
      res.pps64 = sig(r.pps);
      res.loss64 = sig(r.loss);
      res.genPps64 = sig(r.offeredPps);
      this.show(b, 'pps64', res.pps64, `  (offered ${human(r.offeredPps)} pps by ${r.threads} thread${r.threads > 1 ? 's' : ''})`);
      this.show(b, 'loss64', res.loss64);
    });
    if (this.opts.noLoss) {
      await step('64-byte zero-loss rate', async () => {
        if (res.pps64 === null || !(res.pps64 > 0)) throw new Error('needs the max-delivered rate of the 64-byte flood (it did not run)');
        await this.zeroLoss(b, res, { fromNs: h1.containerNs, dst, countNs: h2.containerNs });
      });
      if (b === 'host-gw') {
        await step('paced generator check', async () => {
          const want = 1000;
          const r = await flood(bed, { fromNs: h1.containerNs, dst, countNs: h2.containerNs, seconds: this.opts.trialSeconds, threads: 1, pps: want });
          this.pacingCheck = { backend: b, requestedPps: want, offeredPps: sig(r.offeredPps), sent: r.sent, delivered: r.delivered, loss: sig(r.loss), resets: r.resets };
          this.log(`  ${b}: paced generator check: asked ${want} pps, offered ${human(r.offeredPps)} pps, ${r.delivered}/${r.sent} delivered, loss ${(r.loss * 100).toFixed(2)}%`);
        });
      }
    } else {
      (res.errors ??= []).push('64-byte zero-loss rate: skipped (--no-zero-loss)');
    }
    await step('RSS', async () => {
      const rss = processRssMB(r1.pid);
      if (rss === undefined) throw new Error(`forwarder process ${r1.pid} on ${h1.name} is gone`);
      res.rssMB = sig(rss, 3);
      this.show(b, 'rssMB', res.rssMB);
    });
    if (!this.opts.direct) {
      await step('daemon status', async () => {
        const st = await overlay.status(r1);
        if (typeof st.pid === 'number' && st.pid !== r1.pid) this.log(`  ${b}: note: status pid ${st.pid} differs from spawned pid ${r1.pid}`);
      });
    }
    await overlay.stop().catch((e) => res.errors!.push(this.fail(`${b}: stop`, e)));
  }

  private pacingCheck?: Record<string, unknown>;
  /** The kept 64-byte flood of the backend being measured (the zero-loss search's first trial). */
  private lastFlood?: FloodResult & { threads: number };

  /**
   * pps64NoLoss: paced trials searching the highest offered rate with loss ≤ 0.1 % (lib/search.ts),
   * from the flood's max-delivered rate down, with the thread count of the flood's kept run.
   */
  private async zeroLoss(b: BackendName, res: BackendResult, o: Omit<FloodOptions, 'seconds' | 'threads' | 'pps'>): Promise<void> {
    const threads = res.genThreads ?? this.opts.genThreads[0];
    const maxPps = res.pps64!;
    const seconds = this.opts.trialSeconds;
    const resets: number[] = [];
    // The unpaced flood is the first trial: if it lost ≤ 0.1 %, its offered rate stands.
    const f = this.lastFlood;
    const measured = f ? { requestedPps: 0, offeredPps: f.offeredPps, sent: f.sent, delivered: f.delivered, loss: f.loss, seconds: f.seconds } : undefined;
    if (measured && measured.loss > DEFAULT_LOSS_LIMIT) {
      this.log(`  ${b}: 64-byte zero-loss search: up to ${this.opts.noLossTrials} paced trials of ${seconds} s, ${threads} thread${threads > 1 ? 's' : ''}, from ${human(maxPps)} pps down`);
    }
    const s = await searchNoLoss(
      async (pps) => {
        const r = await flood(this.bed!, { ...o, seconds, threads, pps });
        resets.push(r.resets);
        this.log(
          `    asked ${human(pps)} pps, offered ${human(r.offeredPps)} (${((r.offeredPps / pps) * 100).toFixed(1)} %), ` +
            `delivered ${human(r.pps)}, loss ${(r.loss * 100).toFixed(3)}% ${r.loss <= DEFAULT_LOSS_LIMIT ? 'pass' : 'FAIL'}`,
        );
        return { requestedPps: pps, offeredPps: r.offeredPps, sent: r.sent, delivered: r.delivered, loss: r.loss, seconds: r.seconds };
      },
      { maxPps, trials: this.opts.noLossTrials, lossLimit: DEFAULT_LOSS_LIMIT, measured, generatorMaxPps: f?.offeredPps },
    );
    if (s.generatorLimited) this.log(`    note: no trial lost, but the generator never offered 95 % of ${human(maxPps)} pps: a lower bound`);
    res.pps64NoLoss = sig(s.pps);
    let pacedIndex = 0;
    res.noLoss64 = {
      lossLimit: s.lossLimit,
      maxPps,
      floorPps: sig(s.floorPps),
      threads,
      trialSeconds: seconds,
      generatorLimited: s.generatorLimited,
      trials: s.trials.map((t) => ({
        ...(t.aimedPps !== undefined ? { aimedPps: sig(t.aimedPps) } : {}),
        requestedPps: sig(t.requestedPps),
        offeredPps: sig(t.offeredPps),
        sent: t.sent,
        delivered: t.delivered,
        loss: sig(t.loss),
        seconds: sig(t.seconds),
        pass: t.pass,
        paced: t.paced,
        ...(t.paced ? { resets: resets[pacedIndex++] } : {}),
      })),
    };
    const how = !s.best
      ? `  (loss > 0.1 % even at ${human(s.floorPps)} pps)`
      : s.best.paced
        ? `  (asked ${human(s.best.requestedPps)}, loss ${(s.best.loss * 100).toFixed(3)}%${s.generatorLimited ? ', generator-limited: a lower bound' : ''})`
        : `  (the unpaced flood lost ${(s.best.loss * 100).toFixed(3)}%: its offered rate stands)`;
    this.show(b, 'pps64NoLoss', res.pps64NoLoss, how);
  }

  /** Floods with each configured generator thread count; keeps the run that delivered most. */
  private async bestFlood(o: Omit<FloodOptions, 'seconds' | 'threads'>): Promise<FloodResult & { threads: number }> {
    let best: (FloodResult & { threads: number }) | undefined;
    for (const threads of this.opts.genThreads) {
      const r = await flood(this.bed!, { ...o, seconds: this.opts.seconds, threads });
      if (!best || r.pps > best.pps) best = { ...r, threads };
    }
    return best!;
  }

  private generatorCheck(): void {
    const bs = this.result.backends;
    const hostGw = bs['host-gw']?.pps64 ?? null;
    const userspace = (['udp', 'vxlan'] as const).map((b) => bs[b]?.pps64 ?? null).filter((v): v is number => v !== null);
    const best = userspace.length ? Math.max(...userspace) : null;
    const headroom = ratio(hostGw, best);
    this.result.generator = {
      payloadBytes: 18,
      frameBytes: 64,
      threads: this.opts.genThreads,
      hostGwDeliveredPps: hostGw,
      hostGwOfferedPps: bs['host-gw']?.genPps64 ?? null,
      bestUserspaceDeliveredPps: best,
      headroom,
      notBottleneck: headroom !== null ? headroom > 1 : null,
      ...(this.pacingCheck ? { pacedLowRate: this.pacingCheck } : {}),
    };
    if (headroom !== null) {
      this.log(`generator check: host-gw delivered ${human(hostGw)} pps vs best userspace ${human(best)} pps: ×${headroom.toFixed(2)} ${headroom > 1 ? '(the generator was not the limit for the userspace backends)' : '(generator may be the limit!)'}`);
    }
  }

  // ---------------------------------------------------------------------------- scaling

  private async scalingAll(): Promise<void> {
    const sc = await runScaling({
      bed: this.bed!,
      overlay: this.overlay!,
      control: this.control,
      opts: this.opts,
      tmp: this.tmp,
      log: (m) => this.log(m),
      fail: (where, e) => this.fail(where, e),
      bestFlood: (o) => this.bestFlood(o),
      order: (bs) => this.order(bs),
    });
    this.result.scaling = sc;
  }
}

// ----------------------------------------------------------------------------------- entry

function printTable(result: BenchResult, out: (l: string) => void): void {
  const ratios = result.ratios ?? computeRatios(result.backends);
  const runs = result.runCount ?? 1;
  const range = (sp: Spread | null | undefined, f: (v: number) => string) => (runs > 1 && sp ? ` [${f(sp.min)}–${f(sp.max)}]` : '');
  const head = ['metric', ...BACKENDS];
  const rows = METRIC_KEYS.map((k) => [
    `${METRICS[k].label} (${METRICS[k].unit})`,
    ...BACKENDS.map((b) => {
      const v = result.backends[b]?.[k] ?? null;
      const fmt = (x: number) => (k === 'loss64' ? `${(x * 100).toFixed(2)}%` : human(x));
      const shown = (v === null ? human(v) : fmt(v)) + range(result.spread?.[b]?.[k], fmt);
      const r = ratios[b]?.[k];
      return b === REFERENCE || r === null || r === undefined ? shown : `${shown} (×${r.toFixed(2)}${range(result.ratioSpread?.[b]?.[k], (x) => x.toFixed(2))})`;
    }),
  ]);
  const all = [head, ...rows];
  const w = head.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  if (runs > 1) out(`median of ${runs} runs [min–max]; ratios: median of the per-run ratios [min–max]`);
  for (const r of all) out(r.map((c, i) => c.padEnd(w[i])).join('  '));
}

export async function runBench(argv: string[]): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseBenchArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vxnet bench: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  if (opts === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('vxnet bench: needs root (it builds network namespaces)\n');
    return 1;
  }
  let runner: Runner | undefined;
  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\nvxnet bench: ${sig}: stopping daemons and removing namespaces\n`);
    runner?.removeTmp();
    // NetBed's and etcd's exit hooks kill every process of the bed and delete its namespaces.
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', () => runner?.removeTmp());
  const runs: BenchResult[] = [];
  const errors: string[] = [];
  const writeJson = (result: BenchResult) => {
    if (!opts.json) return;
    mkdirSync(path.dirname(path.resolve(opts.json)), { recursive: true });
    writeFileSync(opts.json, JSON.stringify(result, null, 2) + '\n');
  };
  try {
    for (let i = 1; i <= opts.runs; i++) {
      if (opts.runs > 1) process.stderr.write(`\n==== vxnet bench: run ${i} of ${opts.runs} ====\n`);
      runner = new Runner(opts, argv);
      try {
        await runner.run();
      } finally {
        runner.removeTmp();
      }
      runs.push(runner.result);
      errors.push(...runner.errors.map((e) => (opts.runs > 1 ? `run ${i}: ${e}` : e)));
      if (opts.runs > 1) {
        process.stdout.write(`\nrun ${i} of ${opts.runs}:\n`);
        printTable(runner.result, (l) => process.stdout.write(`${l}\n`));
        // Keep what has been measured so far, should a later run be interrupted.
        if (i < opts.runs) writeJson(summarizeRuns(runs));
      }
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    runner?.removeTmp();
  }
  const result = runs.length > 1 ? summarizeRuns(runs) : runs[0];
  process.stdout.write('\n');
  printTable(result, (l) => process.stdout.write(`${l}\n`));
  process.stdout.write(`\ndatapath v2 floors (issue 8):\n${renderFloors(result)}\n`);
  const problems = validateResult(result);
  if (problems.length) process.stderr.write(`result shape problems: ${problems.join('; ')}\n`);
  if (opts.json) {
    writeJson(result);
    process.stderr.write(`wrote ${opts.json}\n`);
  }
  if (opts.svg) {
    mkdirSync(path.dirname(path.resolve(opts.svg)), { recursive: true });
    writeFileSync(opts.svg, renderChart(result));
    process.stderr.write(`wrote ${opts.svg}\n`);
  }
  if (opts.docs) {
    const dir = path.join(ROOT, 'docs', 'bench');
    mkdirSync(dir, { recursive: true });
    writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(result, null, 2) + '\n');
    writeFileSync(path.join(dir, 'latest.svg'), renderChart(result));
    const notesFile = path.join(dir, 'notes.md');
    const notes = existsSync(notesFile) ? readFileSync(notesFile, 'utf8') : undefined;
    writeFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), renderMarkdown(result, { chart: 'bench/latest.svg', json: 'bench/latest.json', notes }));
    process.stderr.write('wrote docs/bench/latest.json, docs/bench/latest.svg, docs/benchmarks.md\n');
  }
  if (errors.length) {
    process.stderr.write(`\n${errors.length} measurement(s) could not run:\n${errors.map((e) => `  - ${e}`).join('\n')}\n`);
    return 1;
  }
  return 0;
}

if (require.main === module) {
  runBench(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`vxnet bench: ${(e as Error).stack ?? e}\n`);
      process.exit(1);
    },
  );
}
