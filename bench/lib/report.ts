// docs/benchmarks.md from a bench result: the table with ratios, the machine, the exact command,
// scaling, control plane, microbenchmarks and how each figure is measured. Pure function.
import { BACKENDS, BenchResult, METRIC_KEYS, METRICS, REFERENCE, computeRatios, type Spread } from './schema';
import { human } from './stats';
import { renderFloors } from './floors';

function cell(key: string, v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return 'n/a';
  if (key === 'loss64' || key === 'loss') return `${(v * 100).toFixed(2)} %`;
  if (key.endsWith('Gbps')) return v.toFixed(2);
  if (key === 'cpuSecPerGB' || key === 'rssMB') return v.toFixed(v < 10 ? 2 : 1);
  return human(v);
}

const finite = (r: number | null | undefined): r is number => r !== null && r !== undefined && Number.isFinite(r);

/** " [min–max]" of a multi-run spread (nothing for one run or a degenerate spread of one value). */
function range(sp: Spread | null | undefined, f: (v: number) => string): string {
  if (!sp || sp.n < 2) return '';
  return ` [${f(sp.min)}–${f(sp.max)}]`;
}

/**
 * The metric × backend table. For a multi-run result (`--runs N`) each cell is the median with the
 * min–max over the runs in brackets, and the ratio is the median of the per-run ratios with its own
 * min–max.
 */
export function renderTable(result: BenchResult): string {
  const ratios = result.ratios ?? computeRatios(result.backends);
  const lines = [`| metric | ${BACKENDS.join(' | ')} |`, `|---|${BACKENDS.map(() => '---:').join('|')}|`];
  for (const k of METRIC_KEYS) {
    const m = METRICS[k];
    const cells = BACKENDS.map((b) => {
      const v = cell(k, result.backends[b]?.[k]) + range(result.spread?.[b]?.[k], (y) => cell(k, y).replace(/ %$/, ''));
      const r = ratios[b]?.[k];
      if (b === REFERENCE || !finite(r)) return v;
      return `${v} (×${r.toFixed(2)}${range(result.ratioSpread?.[b]?.[k], (y) => y.toFixed(2))})`;
    });
    lines.push(`| ${m.label} (${m.unit}) | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** The wake-up cost a run measured at its start (bench/lib/machine.ts wakeupCost), if it did. */
interface WakeupFacts {
  crossCpu?: { p50Us?: number; p99Us?: number };
  sameCpu?: { p50Us?: number };
}
const wakeupOf = (machine: Record<string, unknown> | undefined) => machine?.wakeupUs as WakeupFacts | undefined;

/** One line per run of a multi-run result: when, how long, load, and its headline ratios. */
export function renderRuns(result: BenchResult): string {
  const runs = result.runs ?? [];
  if (runs.length < 2) return '';
  const keys = ['tcp1Gbps', 'tcp4Gbps', 'pps64', 'pps64NoLoss'] as const;
  // Only the backends some run measured.
  const names = BACKENDS.filter((b) => b !== REFERENCE && runs.some((r) => METRIC_KEYS.some((k) => finite(r.backends?.[b]?.[k]))));
  const wake = (r: (typeof runs)[number]) => wakeupOf(r.machine)?.crossCpu?.p50Us;
  const withWake = runs.some((r) => finite(wake(r)));
  const head = ['run', 'started', 'took (s)', 'load at start', ...(withWake ? ['wake-up p50 (µs, other CPU)'] : []), ...keys.map((k) => `${METRICS[k].label} (× ${REFERENCE}: ${names.join(' / ')})`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  runs.forEach((r, i) => {
    const ratios = r.ratios ?? computeRatios(r.backends);
    const load = Array.isArray(r.machine?.loadAvgAtStart) ? String(r.machine.loadAvgAtStart[0]) : '?';
    const rs = keys.map((k) => names.map((b) => (finite(ratios[b]?.[k]) ? ratios[b][k]!.toFixed(2) : '–')).join(' / '));
    const w = withWake ? [finite(wake(r)) ? String(wake(r)) : '?'] : [];
    lines.push(`| ${[i + 1, r.startedAt ?? '?', r.durationSeconds ?? '?', load, ...w, ...rs].join(' | ')} |`);
  });
  return lines.join('\n');
}

export interface MarkdownOptions {
  /** Chart path relative to docs/. */
  chart: string;
  json: string;
  /** Hand-written analysis of the floors (docs/bench/notes.md), placed under the generated floors table. */
  notes?: string;
}

export function renderMarkdown(result: BenchResult, o: MarkdownOptions): string {
  const m = result.machine ?? {};
  const runs = result.runCount ?? 1;
  const out: string[] = [];
  out.push(result.userspaceOptions ? `# Benchmarks, userspace backends with \`${JSON.stringify(result.userspaceOptions)}\`` : '# Benchmarks', '');
  out.push(
    '`vxnet bench` (also `npm run bench`) builds its own namespaced bed — an underlay switch, hosts with a docker0 bridge and one',
    'container each, a local etcd in the switch namespace — runs the real daemon per host and measures every backend in one run.',
    `Every figure stands beside its ratio to **${REFERENCE}** (the kernel's vxlan device as vxnet's kernel datapath programs it),`,
    'measured in the same run on the same bed; `host-gw` (no encapsulation) is the ceiling. Absolute numbers depend on the',
    'machine and on what else it runs; compare ratios, not numbers across machines.',
    '',
  );
  out.push(runs > 1 ? `## Latest runs (${runs})` : '## Latest run', '');
  out.push('```sh', result.command ?? 'vxnet bench', '```', '');
  if (result.userspaceOptions) {
    out.push(`The userspace backends (udp, vxlan) ran with the net-conf Backend keys \`${JSON.stringify(result.userspaceOptions)}\` added (\`--backend-option\`).`, '');
  }
  if (m.cpuModel) out.push(`Machine: **${String(m.cpuModel)}**, ${m.cpus ?? '?'} CPUs, Linux ${m.kernel ?? '?'} (details below).`, '');
  if (typeof m.addon === 'string' && m.addon !== 'build/Release/vxnet_datapath.node') {
    out.push(`\`VXNET_ADDON\` pointed the daemons at \`${m.addon}\`, a copy of the build's addon taken before the run so that a concurrent rebuild of \`build/\` could not swap it mid-run (likewise \`VXNET_PKTGEN\`).`, '');
  }
  out.push(
    `${result.quick ? '**Quick (smoke) run**: every measurement shortened to a few seconds. ' : ''}Started ${result.startedAt ?? '?'}, took ${result.durationSeconds ?? '?'} s${runs > 1 ? ` for ${runs} runs of the whole suite, one after the other, each on a fresh bed` : ''}.`,
    '',
  );
  if (runs > 1) {
    out.push(
      `Each figure is the **median of the ${runs} runs** with the min–max over the runs in brackets; each ratio is the median of`,
      `the ${runs} per-run ratios (value / ${REFERENCE} of the same run) with their min–max, not the ratio of the medians.`,
      '',
    );
  }
  const load = Array.isArray(m.loadAvgAtStart) ? Number(m.loadAvgAtStart[0]) : NaN;
  if (Number.isFinite(load) && typeof m.cpus === 'number' && load > m.cpus) {
    out.push(
      `**Noisy machine**: the 1-minute load average was ${load} on ${m.cpus} CPUs when the run started (other workloads shared`,
      'the machine), so figures vary a lot from run to run, ratios too (backends are measured minutes apart): read them as',
      'indicative, not precise.',
      '',
    );
  }
  out.push(renderTable(result), '');
  out.push(`Ratios in parentheses are value / ${REFERENCE}. Raw result: [${o.json}](${o.json})${runs > 1 ? ' (the summary, with every run under `runs`)' : ''}.`, '');
  const perRun = renderRuns(result);
  if (perRun) out.push('Per run (ratios to ' + REFERENCE + ' of that run):', '', perRun, '');
  out.push(`![bench chart](${o.chart})`, '');
  const g = result.generator as Record<string, number | null | boolean> | undefined;
  if (g && g.headroom !== null && g.headroom !== undefined) {
    out.push(
      `**Generator check**: over host-gw the same generator delivered ${human(g.hostGwDeliveredPps as number)} packets/s ` +
        `(offered ${human(g.hostGwOfferedPps as number)}), ×${(g.headroom as number).toFixed(2)} the best userspace backend ` +
        `(${human(g.bestUserspaceDeliveredPps as number)}), so ${(g.headroom as number) > 1 ? 'the generator was not what limited the userspace figures' : 'the generator may have been the limit'}.`,
      '',
    );
  }
  const w = wakeupOf(m);
  if (w && finite(w.crossCpu?.p50Us) && finite(w.sameCpu?.p50Us)) {
    out.push(
      `**Wake-up cost** (\`build/Release/wakeup\`, eventfd wake-ups 10 ms apart, at the start${runs > 1 ? ' of run 1; every run\'s in the per-run table' : ''}): a thread asleep on the other, idle CPU ` +
        `ran ${w.crossCpu!.p50Us} µs (p50; p99 ${w.crossCpu!.p99Us ?? '?'}) after it was woken, one on the waker's own CPU ${w.sameCpu!.p50Us} µs. ` +
        'A vxnet round trip needs three worker wake-ups that the kernel path does not (docs/datapath.md "Latency").',
      '',
    );
  }
  const pc = g?.pacedLowRate as Record<string, number> | undefined;
  if (pc && finite(pc.requestedPps)) {
    out.push(
      `**Paced generator check** (on ${String(pc.backend ?? 'host-gw')}): asked for ${human(pc.requestedPps)} packets/s, the generator offered ` +
        `${human(pc.offeredPps)} and ${cell('loss', pc.loss)} was lost${runs > 1 ? ' (medians over the runs)' : ''}; every zero-loss trial's requested and achieved rate is in the JSON (\`noLoss64.trials\`).`,
      '',
    );
  }
  out.push('## Against the datapath v2 floors (issue 8)', '');
  out.push(
    `Computed from the run${runs > 1 ? 's' : ''} above by \`bench/lib/floors.ts\`: per floor and backend the median of the per-run values`,
    `with their min–max${runs > 1 ? ' and how many runs met it' : ''}; "met" judges the median. CPU s/GB is absolute; the scaling rows are`,
    'pps with 10,000 peers in the route table over pps with the smaller table, both from the same run.',
    '',
    renderFloors(result),
    '',
  );
  if (o.notes?.trim()) out.push(o.notes.trim(), '');
  const errs = result.errors ?? [];
  if (errs.length) {
    out.push('**Measurements that could not run:**', '', ...errs.map((e) => `- ${e}`), '');
  }
  out.push('## Machine', '');
  out.push('| | |', '|---|---|');
  const fact = (v: unknown) => (Array.isArray(v) ? v.join(', ') : v !== null && typeof v === 'object' ? `\`${JSON.stringify(v)}\`` : String(v));
  for (const [k, v] of Object.entries(m)) out.push(`| ${k} | ${fact(v)} |`);
  out.push('');
  const sc = result.scaling;
  if (sc && Object.keys(sc.backends).length) {
    out.push('## Route-table scaling and control plane', '');
    out.push(
      `Leases of /${sc.subnetLen ?? 30} (so 10,000 fit in 10.244.0.0/16). Fake peer leases are written to etcd with their public IP`,
      'on a third host without a daemon that only counts what arrives (its underlay interface); the 64-byte generator in',
      "host 1's container spreads its packets over one address in every fake subnet, so every route entry is used.",
      'With 2 peers (h2 and one fake) every datagram goes to the same peer, so runs of them leave as one UDP GSO train;',
      'from 3 peers on, consecutive datagrams go to different peers (the destinations alternate, or are shuffled), so each',
      'is its own message: compare 1,000 and 10,000 with 3 for the cost of the lookup, and 2 with 3 for the batching.',
      '',
    );
    const peers = [...new Set(Object.values(sc.backends).flatMap((ps) => ps.map((p) => p.peers)))].sort((a, b) => a - b);
    const names = Object.keys(sc.backends);
    out.push(`| peers in the route table | ${names.join(' | ')} |`, `|---|${names.map(() => '---:').join('|')}|`);
    for (const n of peers) {
      const ref = sc.backends[REFERENCE]?.find((p) => p.peers === n)?.pps;
      const cells = names.map((b) => {
        const p = sc.backends[b].find((q) => q.peers === n);
        if (!p) return 'n/a';
        const r = b !== REFERENCE && ref && p.pps !== null ? ` (×${(p.pps / ref).toFixed(2)})` : '';
        return `${human(p.pps)} pps${r}, loss ${cell('loss', p.loss)}`;
      });
      out.push(`| ${n.toLocaleString('en-US')} | ${cells.join(' | ')} |`);
    }
    out.push('');
    const two = peers.filter((n) => names.some((b) => sc.backends[b].find((q) => q.peers === n)?.ppsTwoPeers != null));
    if (two.length) {
      out.push(
        'The same tables with the traffic to the first two fake peers only (as at 3 peers), so that only the table grows: the',
        "lookup's cost per packet with the batching unchanged (ratios to the backend's own 3-peer figure).",
        '',
      );
      out.push(`| peers in the route table, traffic to two | ${names.join(' | ')} |`, `|---|${names.map(() => '---:').join('|')}|`);
      for (const n of two) {
        const cells = names.map((b) => {
          const p = sc.backends[b].find((q) => q.peers === n);
          const base = sc.backends[b].find((q) => q.peers === 3)?.ppsTwoPeers;
          if (!p || p.ppsTwoPeers == null) return 'n/a';
          const r = base ? ` (×${(p.ppsTwoPeers / base).toFixed(2)})` : '';
          return `${human(p.ppsTwoPeers)} pps${r}, loss ${cell('loss', p.lossTwoPeers)}`;
        });
        out.push(`| ${n.toLocaleString('en-US')} | ${cells.join(' | ')} |`);
      }
      out.push('');
    }
    const cp = sc.controlPlane ?? {};
    if (Object.keys(cp).length) {
      const ref = cp[REFERENCE]?.seconds;
      out.push('| control plane / memory | ' + names.join(' | ') + ' |', `|---|${names.map(() => '---:').join('|')}|`);
      out.push(
        '| 1,000 leases written → all installed (s) | ' +
          names.map((b) => (cp[b]?.seconds != null ? `${cp[b].seconds!.toFixed(2)}${b !== REFERENCE && ref ? ` (×${(cp[b].seconds! / ref).toFixed(2)})` : ''}` : 'n/a')).join(' | ') +
          ' |',
      );
      const rref = sc.rssMB10k?.[REFERENCE];
      out.push(
        '| daemon RSS with 10,000 leases (MB) | ' +
          names.map((b) => (sc.rssMB10k?.[b] != null ? `${sc.rssMB10k[b]!.toFixed(1)}${b !== REFERENCE && rref ? ` (×${(sc.rssMB10k[b]! / rref).toFixed(2)})` : ''}` : 'n/a')).join(' | ') +
          ' |',
      );
      out.push('');
    }
  }
  if (result.micro?.length) {
    out.push('## Microbenchmarks', '');
    out.push('`npm run bench:micro` (benchmark package; packet kernels loop natively, so times are per packet, not per N-API call).', '');
    out.push('| benchmark | ns/op | ops/s | ± |', '|---|---:|---:|---:|');
    for (const r of result.micro) out.push(`| ${r.name} | ${r.nsPerOp.toFixed(1)} | ${human(r.opsPerSec)} | ${r.rme.toFixed(1)} % |`);
    out.push('');
  }
  out.push('## How each figure is measured', '');
  out.push(
    '- **TCP throughput**: `iperf3` from container 1 to container 2 (host 1 → host 2), 1 stream and `-P 4`; receiver-side rate.',
    '- **RTT p50/p99**: `ping` container to container (≥ 400 samples, 5–10 ms apart), percentiles by linear interpolation.',
    '  The same pings also cross the **minimal relay** (native/tools/relay.cc, no daemon running): one thread, `poll()`,',
    '  one packet per read and send, flannel\'s udp format, no checks, batching or spinning — what the TUN + UDP design',
    '  costs with none of vxnet\'s work; its ratio is a comparison row of the floors table.',
    '- **64-byte forwarding and loss**: `build/Release/pktgen` (native, `sendmmsg` batches of 64 per thread) sends UDP',
    '  datagrams of 18 bytes (a 64-byte Ethernet frame) from container 1 to container 2 as fast as it can, with CPUs − 1 and',
    '  with CPUs threads; the run that delivered more is kept. Delivered = datagrams reaching container 2\'s UDP layer',
    '  (`/proc/net/snmp` InDatagrams + RcvbufErrors, with a bound, draining sink: `pktgen --sink`; interface packet counters',
    '  would count a GSO super-packet once), loss =',
    '  1 − delivered / sent. On veth the kernel datapaths (kernel-vxlan, host-gw) forward inside the sending thread, so where',
    '  they show 0 % loss with delivered = offered the figure is the generator+kernel ceiling of this machine: a lower bound',
    '  for the kernel path, which makes the userspace ratios to it upper bounds. The userspace backends drop what they',
    '  cannot forward (loss > 0), so their figure is their own limit (generator check above).',
    '- **64-byte zero-loss rate** (`pps64NoLoss`, RFC 2544 throughput): the highest offered rate at which at most 0.1 % of',
    '  the datagrams are lost end to end (sent by the generator vs datagrams received in container 2, as above). Found by a search',
    '  of paced trials (`pktgen --pps`: batches of at most 16 datagrams, at most ~1 ms apart, on an absolute clock_gettime',
    '  schedule; threads as in the kept flood run), each followed by 0.5 s for queues to drain. The unpaced flood above is',
    '  the first trial: if it lost ≤ 0.1 %, its offered rate stands (its bursts are harsher than pacing). Otherwise the',
    '  first paced trial aims at the max-delivered rate, then bisection between the highest passing and the lowest failing',
    '  achieved rate (floor 1 % of the maximum; if nothing passed, the last trial checks the floor). No burst exceeds one',
    '  batch: a late generator thread catches up at most at twice its rate and restarts its schedule when more than 1 ms',
    '  behind, so on a busy machine it achieves less than it is asked; each ask is therefore the aimed rate divided by the',
    '  last trial\'s achieved/asked ratio (capped at the unpaced flood\'s offered rate), and a top that passed short is tried',
    '  once more. The figure is the rate achieved in the best passing trial (`noLoss64.generatorLimited` when no trial lost',
    '  but none reached 95 % of the top: a lower bound); 0 means loss even at the floor. Generator, forwarders and receiver',
    '  share the machine\'s CPUs, as in every other measurement here.',
    '- **CPU per GB moved (CPU s/GB)**: during the 1-stream TCP test, busy CPU time of the whole machine (`/proc/stat`) per GB',
    '  delivered: the iperf3 endpoints, the daemons, kernel packet processing (softirq) on the path, and background noise.',
    '  The endpoints cannot be subtracted: kernel forwarding runs in softirq inside whichever task is current, often',
    '  iperf3 itself. Endpoint cost per GB is about the same for every backend, so the differences between backends are',
    '  the forwarding cost. `daemonCpuSecPerGB` in the JSON is the daemon processes alone (≈0 for kernel datapaths).',
    '- **Daemon RSS**: VmRSS of host 1\'s daemon after its measurements.',
    '- **Scaling**: see above; **control plane**: from the start of writing 1,000 leases to etcd (transactions of 100) until',
    "  host 1's daemon reports all of them installed (polled every 50 ms through its control socket).",
    '- **Where the cycles go**: `perf record -a -g` over a TCP transfer (`node dist/bench/datapath.js --perf FILE`), split by',
    '  `node dist/bench/profile.js FILE --gbytes N`; the profile before and after datapath v2 is in docs/datapath.md.',
    '',
  );
  return out.join('\n');
}
