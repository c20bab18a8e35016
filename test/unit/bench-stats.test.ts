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
