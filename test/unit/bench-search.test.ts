// The zero-loss rate search (bench/lib/search.ts) driven by fake, deterministic trial functions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { searchNoLoss, type TrialOutcome } from '../../bench/lib/search';

/** A fake path that forwards up to `capacity` packets/s and drops the rest; the generator tops out at `genMax`. */
function fakePath(capacity: number, genMax = Infinity, seconds = 2) {
  const asked: number[] = [];
  const trial = async (pps: number): Promise<TrialOutcome> => {
    asked.push(pps);
    const offered = Math.min(pps, genMax);
    const sent = Math.round(offered * seconds);
    const delivered = Math.min(sent, Math.round(capacity * seconds));
    return { requestedPps: pps, offeredPps: offered, sent, delivered, loss: sent ? 1 - delivered / sent : 1, seconds };
  };
  return { trial, asked };
}

test('no loss at the maximum: one trial, the maximum is the answer', async () => {
  const f = fakePath(1e6);
  const r = await searchNoLoss(f.trial, { maxPps: 100_000, trials: 7 });
  assert.deepEqual(f.asked, [100_000]);
  assert.equal(r.pps, 100_000);
  assert.equal(r.trials.length, 1);
  assert.equal(r.best?.pass, true);
});

test('bisection converges on the capacity from below within maxPps / 2^(trials-1)', async () => {
  const f = fakePath(37_000);
  const r = await searchNoLoss(f.trial, { maxPps: 100_000, trials: 8 });
  assert.equal(r.trials.length, 8);
  assert.equal(f.asked[0], 100_000);
  assert.equal(f.asked[1], (1_000 + 100_000) / 2); // floor 1 % of max is the assumed-passing lower bound
  assert.ok(r.pps <= 37_000, `never above the capacity: ${r.pps}`);
  assert.ok(37_000 - r.pps <= 100_000 / 2 ** 7, `close to it: ${r.pps}`);
  // Every pass is at or below the capacity, every failure above it.
  for (const t of r.trials) assert.equal(t.pass, t.requestedPps <= 37_000, String(t.requestedPps));
  // Deterministic: the same fake gives the same sequence.
  const g = fakePath(37_000);
  await searchNoLoss(g.trial, { maxPps: 100_000, trials: 8 });
  assert.deepEqual(g.asked, f.asked);
});

test('the loss limit tolerates 0.1 % by default and can be tightened', async () => {
  // Capacity 0.05 % below the maximum: passes at the top with the default limit, not with 0.
  const f = fakePath(99_950);
  assert.equal((await searchNoLoss(f.trial, { maxPps: 100_000, trials: 5 })).pps, 100_000);
  const strict = await searchNoLoss(fakePath(99_950).trial, { maxPps: 100_000, trials: 5, lossLimit: 0 });
  assert.ok(strict.pps < 100_000 && strict.pps > 90_000, String(strict.pps));
});

test('nothing passes: the last trial checks the floor; loss there gives 0', async () => {
  const f = fakePath(10); // far below the 1 % floor
  const r = await searchNoLoss(f.trial, { maxPps: 100_000, trials: 5 });
  assert.equal(f.asked.length, 5);
  assert.equal(f.asked[4], 1_000);
  assert.equal(r.pps, 0);
  assert.equal(r.best, null);
  assert.equal(r.floorPps, 1_000);
});

test('a capacity between the floor and the first midpoint is found by the floor check', async () => {
  const f = fakePath(2_000);
  const r = await searchNoLoss(f.trial, { maxPps: 100_000, trials: 3 });
  assert.deepEqual(f.asked, [100_000, 50_500, 1_000]);
  assert.equal(r.pps, 1_000);
});

test('the result is the achieved offered rate, not the requested one', async () => {
  // The generator cannot go beyond 60k: trials above it pass at 60k offered.
  const f = fakePath(1e6, 60_000);
  const r = await searchNoLoss(f.trial, { maxPps: 100_000, trials: 4 });
  assert.equal(r.pps, 60_000);
  assert.equal(r.best?.requestedPps, 100_000);
});

test('bad arguments are refused', async () => {
  const f = fakePath(1);
  await assert.rejects(searchNoLoss(f.trial, { maxPps: 0, trials: 5 }), RangeError);
  await assert.rejects(searchNoLoss(f.trial, { maxPps: 100, trials: 1 }), RangeError);
  assert.deepEqual(f.asked, []);
});

test('an unpaced flood without loss is the answer: no paced trial runs', async () => {
  const f = fakePath(1e6);
  const measured = { requestedPps: 0, offeredPps: 150_000, sent: 300_000, delivered: 300_000, loss: 0, seconds: 2 };
  const r = await searchNoLoss(f.trial, { maxPps: 150_000, trials: 5, measured });
  assert.deepEqual(f.asked, []);
  assert.equal(r.pps, 150_000);
  assert.equal(r.best?.paced, false);
  assert.equal(r.generatorLimited, false);
});

test('an unpaced flood with loss is recorded, then the paced search runs as usual', async () => {
  const f = fakePath(37_000);
  const measured = { requestedPps: 0, offeredPps: 200_000, sent: 400_000, delivered: 80_000, loss: 0.8, seconds: 2 };
  const r = await searchNoLoss(f.trial, { maxPps: 40_000, trials: 4, measured });
  assert.equal(r.trials.length, 5);
  assert.deepEqual(r.trials.map((t) => t.paced), [false, true, true, true, true]);
  assert.equal(f.asked[0], 40_000);
  assert.ok(r.pps <= 37_000 && r.pps > 30_000, String(r.pps));
});

test('bounds are achieved rates: a generator stuck below the ask marks the result a lower bound', async () => {
  // Path capacity 50k, generator reaches only 30k: every trial passes at 30k offered.
  const f = fakePath(50_000, 30_000);
  const r = await searchNoLoss(f.trial, { maxPps: 80_000, trials: 6 });
  assert.equal(r.pps, 30_000);
  assert.equal(r.generatorLimited, true);
  // With the generator's maximum known, no ask exceeds it, and a fail lowers the upper bound to
  // the achieved rate.
  const g = fakePath(20_000, 30_000);
  await searchNoLoss(g.trial, { maxPps: 80_000, trials: 3, generatorMaxPps: 30_000 });
  assert.deepEqual(g.asked, [30_000, (800 + 30_000) / 2, (15_400 + 30_000) / 2]);
});

test('the search stops early once the bounds meet', async () => {
  // The generator never exceeds 10k and the path loses above 9k: after the first pass, bounds collapse.
  let calls = 0;
  const trial = async (pps: number): Promise<TrialOutcome> => {
    calls++;
    const offered = Math.min(pps, 10_000);
    const loss = offered > 9_000 ? 0.5 : 0;
    return { requestedPps: pps, offeredPps: offered, sent: offered * 2, delivered: offered * 2 * (1 - loss), loss, seconds: 2 };
  };
  const r = await searchNoLoss(trial, { maxPps: 20_000, trials: 8, generatorMaxPps: 10_000 });
  assert.ok(r.pps > 8_900 && r.pps <= 9_000, String(r.pps));
  assert.ok(calls <= 8);
});

/** A busy machine: the paced generator achieves 90 % of whatever it is asked. */
function lossyPacer(capacity: number, efficiency = 0.9, seconds = 2) {
  const asked: number[] = [];
  const trial = async (pps: number): Promise<TrialOutcome> => {
    asked.push(pps);
    const offered = pps * efficiency;
    const sent = Math.round(offered * seconds);
    const delivered = Math.min(sent, Math.round(capacity * seconds));
    return { requestedPps: pps, offeredPps: offered, sent, delivered, loss: 1 - delivered / sent, seconds };
  };
  return { trial, asked };
}

test('a generator short of its ask is compensated: the top is retried, bisection aims at achieved rates', async () => {
  // Path without loss up to 1M: the top (asked 60k, achieved 54k) passes short, the retry asks 60k / 0.9.
  const top = lossyPacer(1e6);
  const r1 = await searchNoLoss(top.trial, { maxPps: 60_000, trials: 5, generatorMaxPps: 200_000 });
  assert.equal(top.asked.length, 2);
  assert.ok(Math.abs(top.asked[1] - 60_000 / 0.9) < 1e-6);
  assert.ok(Math.abs(r1.pps - 60_000) < 1e-6);
  assert.equal(r1.generatorLimited, false);
  // Capacity 45k: converges on it from below in achieved terms.
  const mid = lossyPacer(45_000);
  const r2 = await searchNoLoss(mid.trial, { maxPps: 60_000, trials: 8, generatorMaxPps: 200_000 });
  assert.ok(r2.pps <= 45_000 && r2.pps > 45_000 - 60_000 / 2 ** 5, String(r2.pps));
  // After the first trial (no ratio known yet) every trial achieves what it aimed at.
  for (const t of r2.trials.slice(1)) assert.ok(Math.abs(t.offeredPps - (t.aimedPps ?? NaN)) < 1e-6, 'each later trial achieved its aim');
});
