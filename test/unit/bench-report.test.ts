// The bench result's JSON shape, ratios, and the SVG chart and markdown rendered from a sample result.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKENDS, BenchResult, METRIC_KEYS, computeRatios, failedBackend, validateResult } from '../../bench/lib/schema';
import { renderChart } from '../../bench/lib/svg';
import { renderMarkdown, renderTable } from '../../bench/lib/report';
import { parseBenchArgs as parseArgs } from '../../bench/lib/options';
import { summarizeRuns } from '../../bench/lib/summary';
import { backendSection } from '../../bench/lib/overlay';

function sample(): BenchResult {
  const fig = (k: number) => ({ tcp1Gbps: 3 * k, tcp4Gbps: 4 * k, rttP50Us: 50 / k, rttP99Us: 90 / k, rttLoadP50Us: 120 / k, rttLoadP99Us: 400 / k, pps64: 60000 * k, pps64NoLoss: 40000 * k, loss64: 0.1 / k, cpuSecPerGB: 1 / k, rssMB: 60 });
  return {
    machine: { cpus: 2, kernel: '6.1.0', cpuModel: 'Test CPU <x>' },
    quick: true,
    command: 'vxnet bench --quick --json out.json',
    backends: { udp: fig(0.5), vxlan: fig(0.8), 'kernel-vxlan': fig(1), 'host-gw': fig(2) },
    scaling: {
      subnetLen: 30,
      backends: { vxlan: [{ peers: 2, pps: 30000, loss: 0.5 }, { peers: 10000, pps: 28000, loss: 0.52 }], 'kernel-vxlan': [{ peers: 2, pps: 60000, loss: 0 }, { peers: 10000, pps: 40000, loss: 0 }] },
      controlPlane: { vxlan: { leases: 1000, seconds: 0.8 }, 'kernel-vxlan': { leases: 1000, seconds: 9.5 } },
      rssMB10k: { vxlan: 90, 'kernel-vxlan': 80 },
    },
    micro: [{ name: 'encap udp', nsPerOp: 8, opsPerSec: 1.25e8, rme: 2, samples: 20 }],
  };
}

test('a complete result validates and every backend has every documented key', () => {
  const r = sample();
  assert.deepEqual(validateResult(r), []);
  for (const b of BACKENDS) for (const k of METRIC_KEYS) assert.ok(k in r.backends[b], `${b}.${k}`);
});

test('validation names missing backends, bad values and unexplained nulls', () => {
  const r = sample() as unknown as { backends: Record<string, Record<string, unknown>> };
  delete r.backends['host-gw'];
  r.backends.udp.loss64 = 1.5;
  r.backends.vxlan.tcp1Gbps = null;
  r.backends['kernel-vxlan'].rssMB = 'big';
  const problems = validateResult(r);
  assert.ok(problems.includes('backends.host-gw: missing'), problems.join('\n'));
  assert.ok(problems.some((p) => p.startsWith('backends.udp.loss64')));
  assert.ok(problems.some((p) => p.startsWith('backends.vxlan.tcp1Gbps: null without an error')));
  assert.ok(problems.some((p) => p.startsWith('backends.kernel-vxlan.rssMB')));
  assert.deepEqual(validateResult([]), ['result is not a JSON object']);
});

test('a backend that could not run is all nulls with its reason, and still valid', () => {
  const r = sample();
  r.backends.udp = failedBackend('daemon exited');
  assert.deepEqual(validateResult(r), []);
  assert.equal(computeRatios(r.backends).udp.tcp1Gbps, null);
});

test('ratios are taken against kernel-vxlan', () => {
  const ratios = computeRatios(sample().backends);
  assert.equal(ratios['kernel-vxlan'].tcp1Gbps, 1);
  assert.equal(ratios['host-gw'].pps64, 2);
  assert.equal(ratios.udp.tcp4Gbps, 0.5);
});

test('the SVG chart is well-formed, escapes text and shows values with ratios', () => {
  const svg = renderChart(sample());
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.ok(svg.includes('Test CPU &lt;x&gt;'));
  assert.ok(!svg.includes('<x>'));
  for (const b of BACKENDS) assert.ok(svg.includes(`>${b}</text>`), b);
  assert.ok(svg.includes('×2.00'), 'host-gw ratio');
  assert.ok(svg.includes('10,000 peers'), 'scaling panel');
  // Balanced groups and no NaN leaking into coordinates.
  assert.equal((svg.match(/<g /g) ?? []).length, (svg.match(/<\/g>/g) ?? []).length);
  assert.ok(!/NaN|undefined/.test(svg));
  // Rendering is a pure function of the JSON.
  assert.equal(renderChart(sample()), svg);
});

test('the chart renders a backend that was not measured without breaking', () => {
  const r = sample();
  r.backends.udp = failedBackend('no');
  const svg = renderChart(r);
  assert.ok(svg.includes('not measured'));
  assert.ok(!/NaN/.test(svg));
});

test('the markdown report carries the table, the command, the machine and the scaling figures', () => {
  const md = renderMarkdown(sample(), { chart: 'bench/latest.svg', json: 'bench/latest.json' });
  assert.ok(md.includes('vxnet bench --quick --json out.json'));
  assert.ok(md.includes(renderTable(sample())));
  assert.ok(md.includes('| cpus | 2 |'));
  assert.ok(md.includes('| 10,000 |'));
  assert.ok(md.includes('![bench chart](bench/latest.svg)'));
  assert.match(renderTable(sample()), /\| TCP, 1 stream \(Gbit\/s\) \| 1\.50 \(×0\.50\) \| 2\.40 \(×0\.80\) \| 3\.00 \| 6\.00 \(×2\.00\) \|/);
});

test('bench arguments: quick shortens, lists are checked, unknown flags are usage errors', () => {
  const q = parseArgs(['--quick', '--json', 'out/r.json']);
  assert.notEqual(q, 'help');
  if (q === 'help') return;
  assert.equal(q.seconds, 3);
  assert.equal(q.svg, 'out/r.svg');
  assert.ok(q.pings >= 400);
  const full = parseArgs([]);
  if (full === 'help') return;
  assert.equal(full.seconds, 10);
  assert.ok(full.pings >= 400);
  assert.deepEqual(full.backends, [...BACKENDS]);
  assert.throws(() => parseArgs(['--backends', 'udp,bogus']), /unknown backend/);
  assert.throws(() => parseArgs(['--frobnicate']), /unknown argument/);
  assert.equal(parseArgs(['--help']), 'help');
  assert.equal(q.runs, 1);
  assert.equal(q.noLoss, true);
  assert.equal(q.trialSeconds, 2);
  assert.equal(full.trialSeconds, 4);
  assert.equal(full.noLossTrials, 7);
  const m = parseArgs(['--runs', '3', '--quick', '--seconds', '1', '--no-zero-loss', '--backends', 'vxlan,kernel-vxlan']);
  if (m === 'help') return;
  assert.equal(m.runs, 3);
  assert.equal(m.noLoss, false);
  assert.equal(m.trialSeconds, 1, 'a trial is never longer than --seconds');
  assert.deepEqual(m.backends, ['vxlan', 'kernel-vxlan']);
  assert.throws(() => parseArgs(['--runs', '0']), /≥ 1/);
  assert.throws(() => parseArgs(['--trials', '1']), /≥ 2/);
});

test('--backend-option adds net-conf keys to the userspace backends only, and is recorded in the report', () => {
  const o = parseArgs(['--backend-option', 'CpuLocal=true', '--backend-option', 'Workers=2']);
  if (o === 'help') throw new Error('help');
  assert.deepEqual(o.userspaceOptions, { CpuLocal: true, Workers: 2 });
  const none = parseArgs([]);
  if (none === 'help') throw new Error('help');
  assert.deepEqual(none.userspaceOptions, {});
  assert.throws(() => parseArgs(['--backend-option', 'CpuLocal']), /--backend-option: expected KEY=VALUE/);
  assert.throws(() => parseArgs(['--backend-option', 'Type=udp']), /--backend-option: Type is chosen by --backends/);
  assert.deepEqual(backendSection('vxlan', o.userspaceOptions), { Type: 'vxlan', Datapath: 'userspace', CpuLocal: true, Workers: 2 });
  assert.deepEqual(backendSection('udp', o.userspaceOptions), { Type: 'udp', CpuLocal: true, Workers: 2 });
  assert.deepEqual(backendSection('kernel-vxlan', o.userspaceOptions), { Type: 'vxlan', Datapath: 'kernel' });
  assert.deepEqual(backendSection('host-gw', o.userspaceOptions), { Type: 'host-gw' });
  const r = { ...sample(), userspaceOptions: { CpuLocal: true } };
  assert.match(renderMarkdown(r, { chart: 'c.svg', json: 'r.json' }), /ran with the net-conf Backend keys `\{"CpuLocal":true\}` added/);
  assert.doesNotMatch(renderMarkdown(sample(), { chart: 'c.svg', json: 'r.json' }), /net-conf Backend keys/);
});

test('a result from before pps64NoLoss existed still validates and renders n/a', () => {
  const r = sample();
  for (const b of BACKENDS) delete (r.backends[b] as Partial<BenchResult['backends'][typeof b]>).pps64NoLoss;
  assert.deepEqual(validateResult(r), []);
  assert.match(renderTable(r), /\| 64-byte zero-loss rate \(≤ 0\.1 % loss\) \(packets\/s\) \| n\/a \| n\/a \| n\/a \| n\/a \|/);
});

test('a multi-run result renders medians with spreads, per-run ratios, CPU model and command', () => {
  const runs = [0.9, 1, 1.2].map((f) => {
    const r = sample();
    r.command = 'vxnet bench --runs 3 --docs';
    for (const b of BACKENDS) r.backends[b].tcp1Gbps! *= b === 'vxlan' ? f * f : f;
    r.ratios = computeRatios(r.backends);
    return r;
  });
  const s = summarizeRuns(runs);
  const md = renderMarkdown(s, { chart: 'bench/latest.svg', json: 'bench/latest.json' });
  assert.ok(md.includes('## Latest runs (3)'));
  assert.ok(md.includes('vxnet bench --runs 3 --docs'));
  assert.ok(md.includes('Machine: **Test CPU <x>**, 2 CPUs'));
  assert.ok(md.includes('median of the 3 runs'));
  // vxlan TCP 1: 2.4·{0.81, 1, 1.44} → median 2.40 [1.94–3.46]; ratios 0.8·{0.9, 1, 1.2} → ×0.80 [0.72–0.96].
  assert.match(md, /\| TCP, 1 stream \(Gbit\/s\) \| [^|]+ \| 2\.40 \[1\.94–3\.46\] \(×0\.80 \[0\.72–0\.96\]\) \| 3\.00 \[2\.70–3\.60\] \|/);
  assert.match(md, /\| 3 \| [^|]+ \| [^|]+ \| [^|]+ \| [^|]*0\.96/);
  const svg = renderChart(s);
  assert.ok(svg.includes('median of 3 runs'));
  assert.ok(!/NaN|undefined/.test(svg));
  assert.deepEqual(validateResult(s), []);
});

test('the markdown report states the measured wake-up cost when the machine facts carry it, and nothing when not', () => {
  const s = sample();
  assert.doesNotMatch(renderMarkdown(s, { chart: 'c.svg', json: 'r.json' }), /Wake-up cost/);
  s.machine.wakeupUs = { crossCpu: { p50Us: 61.5, p99Us: 380 }, sameCpu: { p50Us: 22.1 } };
  const md = renderMarkdown(s, { chart: 'c.svg', json: 'r.json' });
  assert.match(md, /\*\*Wake-up cost\*\*.* ran 61\.5 µs \(p50; p99 380\) .* own CPU 22\.1 µs/);
});

test('a multi-run result lists each run\'s measured wake-up cost in the per-run table', () => {
  const runs = [55, 72, 115].map((p50) => {
    const r = sample();
    r.machine.wakeupUs = { crossCpu: { p50Us: p50, p99Us: 2 * p50 }, sameCpu: { p50Us: 20 } };
    r.ratios = computeRatios(r.backends);
    return r;
  });
  const md = renderMarkdown(summarizeRuns(runs), { chart: 'c.svg', json: 'r.json' });
  assert.match(md, /\| run \| started \| took \(s\) \| load at start \| wake-up p50 \(µs, other CPU\) \|/);
  for (const [i, p50] of [55, 72, 115].entries()) assert.match(md, new RegExp(`\\| ${i + 1} \\| [^|]+ \\| [^|]+ \\| [^|]+ \\| ${p50} \\|`));
  assert.match(md, /at the start of run 1; every run's in the per-run table/);
});
