// Pure pieces of the benchmark runner: percentiles, ratios and /proc parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { percentile, ratio, sig, human } from '../../bench/lib/stats';
import { parseProcStat, parseProcStatCpu } from '../../bench/lib/proc';

test('percentile interpolates linearly between closest ranks', () => {
  const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  assert.equal(percentile(xs, 0), 1);
  assert.equal(percentile(xs, 100), 10);
  assert.equal(percentile(xs, 50), 5.5);
  assert.ok(Math.abs(percentile(xs, 99) - 9.91) < 1e-9);
  assert.equal(percentile([7], 99), 7);
});

test('percentile ignores order and non-finite values, and is NaN for no data', () => {
  assert.equal(percentile([10, 1, 5, NaN, Infinity], 50), 5);
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.throws(() => percentile([1], 101), RangeError);
});

test('p50/p99 of 400 samples pick the expected ranks', () => {
  const xs = Array.from({ length: 400 }, (_, i) => 400 - i); // 400..1, unsorted
  assert.equal(percentile(xs, 50), 200.5);
  assert.ok(Math.abs(percentile(xs, 99) - 396.01) < 1e-9);
});

test('ratio is null for missing data or a zero reference', () => {
  assert.equal(ratio(2, 4), 0.5);
  assert.equal(ratio(null, 4), null);
  assert.equal(ratio(2, 0), null);
  assert.equal(ratio(2, undefined), null);
});

test('sig and human keep figures readable', () => {
  assert.equal(sig(1234567, 3), 1230000);
  assert.equal(sig(0.000123456, 2), 0.00012);
  assert.equal(human(1234567), '1.23M');
  assert.equal(human(24800), '24.8k');
  assert.equal(human(null), '–');
});

test('/proc parsers read process and machine CPU time', () => {
  const stat = '1234 (node (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 11 0 100 1000 200 0';
  assert.equal(parseProcStatCpu(stat, 100), 3); // (250 + 50) / 100
  const m = parseProcStat('cpu  100 0 50 800 50 0 10 0 0 0\ncpu0 1 2 3 4\n', 100);
  assert.equal(m.busy, 1.6); // (100+50+10)/100
  assert.equal(m.total, 10.1);
});

// ------------------------------------------------------------------ multi-run summary (--runs N)

import { medianObject, spreadOf, summarizeRuns } from '../../bench/lib/summary';
import { BACKENDS, METRIC_KEYS, failedBackend, validateResult, type BackendResult, type BenchResult } from '../../bench/lib/schema';

test('spreadOf: median and min–max of the finite values, null for none', () => {
  assert.deepEqual(spreadOf([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(spreadOf([4, null, 2, undefined, NaN]), { median: 3, min: 2, max: 4, n: 2 });
  assert.equal(spreadOf([null, undefined]), null);
  assert.equal(spreadOf([]), null);
});

test('medianObject: numbers by median, booleans all-true, the rest from the first', () => {
  assert.deepEqual(medianObject([{ a: 1, b: true, c: 'x' }, { a: 5, b: false, c: 'y' }, { a: 3, b: true, c: 'z' }]), { a: 3, b: false, c: 'x' });
  assert.deepEqual(medianObject([{ a: null }, { a: 2 }]), { a: 2 });
});

function run(scale: Partial<Record<string, number>>, ref: number): BenchResult {
  const fig = (k: number): BackendResult => {
    const r = {} as BackendResult;
    for (const m of METRIC_KEYS) r[m] = m === 'loss64' ? 0.1 : 100 * k;
    r.daemonCpuSecPerGB = k;
    return r;
  };
  const backends = {} as BenchResult['backends'];
  for (const b of BACKENDS) backends[b] = b === 'kernel-vxlan' ? fig(ref) : scale[b] === undefined ? failedBackend('not selected') : fig(scale[b]!);
  return { machine: { cpus: 2, loadAvgAtEnd: [ref] }, backends, startedAt: `t${ref}`, durationSeconds: 10 };
}

test('summarizeRuns: medians per metric, ratios per run then summarised (not ratio of medians)', () => {
  // vxlan 2, 3, 12 against kernel 1, 3, 4: per-run ratios 2, 1, 3 → median 2; ratio of medians 3/3 = 1.
  const runs = [run({ vxlan: 2 }, 1), run({ vxlan: 3 }, 3), run({ vxlan: 12 }, 4)];
  const s = summarizeRuns(runs);
  assert.equal(s.runCount, 3);
  assert.equal(s.backends.vxlan.tcp1Gbps, 300);
  assert.equal(s.backends['kernel-vxlan'].tcp1Gbps, 300);
  assert.equal(s.ratios!.vxlan.tcp1Gbps, 2);
  assert.deepEqual(s.ratioSpread!.vxlan.tcp1Gbps, { median: 2, min: 1, max: 3, n: 3 });
  assert.deepEqual(s.spread!.vxlan.pps64NoLoss, { median: 300, min: 200, max: 1200, n: 3 });
  assert.equal(s.ratios!['kernel-vxlan'].pps64, 1);
  assert.equal(s.backends.vxlan.daemonCpuSecPerGB, 3, 'daemonCpuSecPerGB is kept, as a median');
  assert.equal(s.durationSeconds, 30);
  assert.equal(s.startedAt, 't1');
  assert.deepEqual(s.machine.loadAvgAtEnd, [4]);
  assert.equal(s.runs!.length, 3);
  // A backend never measured stays null with its reasons, and the summary is a valid result.
  assert.equal(s.backends.udp.tcp1Gbps, null);
  assert.ok(s.backends.udp.errors!.some((e) => e.startsWith('run 1: not selected')));
  assert.deepEqual(validateResult(s), []);
});

test('summarizeRuns: a metric missing in one run is the median of the others (n says how many)', () => {
  const runs = [run({ vxlan: 2 }, 1), run({ vxlan: 4 }, 1), run({ vxlan: 9 }, 1)];
  runs[2].backends.vxlan.pps64NoLoss = null;
  runs[2].backends.vxlan.errors = ['64-byte zero-loss rate: failed'];
  const s = summarizeRuns(runs);
  assert.deepEqual(s.spread!.vxlan.pps64NoLoss, { median: 300, min: 200, max: 400, n: 2 });
  assert.ok(s.backends.vxlan.errors!.includes('run 3: 64-byte zero-loss rate: failed'));
  assert.throws(() => summarizeRuns([]), RangeError);
});
