// The zero-loss rate search (RFC 2544 §26.1 style throughput): the highest offered rate at which a
// trial loses at most `lossLimit` of what was sent. Pure logic around a trial function, so the unit
// tests drive it with a fake, deterministic one.

/** What one trial at a requested rate measured. */
export interface TrialOutcome {
  /** The rate asked of the generator (packets/s). */
  requestedPps: number;
  /** The rate the generator actually achieved (sent / seconds); can be below requestedPps. */
  offeredPps: number;
  sent: number;
  delivered: number;
  /** 1 − delivered / sent, clamped to 0..1. */
  loss: number;
  seconds: number;
}

export interface SearchedTrial extends TrialOutcome {
  pass: boolean;
  /** The rate the search aimed at; requestedPps is what was asked to get it (see searchNoLoss). */
  aimedPps?: number;
  /** False for the pre-measured unpaced flood (NoLossSearchOptions.measured). */
  paced: boolean;
}

export interface NoLossSearchOptions {
  /** Upper bound of the search, tried first (the max-delivered rate of the unpaced flood). */
  maxPps: number;
  /** Trials in all (≥ 2): one at maxPps, then bisection; the last one verifies the floor if nothing passed yet. */
  trials: number;
  /** Largest loss fraction that still counts as "no loss" (RFC 2544 says 0; 0.001 tolerates stray drops). */
  lossLimit?: number;
  /** Lower bound of the search as a fraction of maxPps (default 0.01). */
  floorFraction?: number;
  /**
   * A trial already run at the top (the unpaced flood, offering as fast as the generator can): if it
   * lost at most lossLimit, its offered rate is the answer and no paced trial runs (an unpaced burst
   * load without loss shows the rate is sustained without loss); if not, it is recorded and the
   * paced search runs as usual. It does not count against `trials`.
   */
  measured?: TrialOutcome;
  /** A pass achieving at least this fraction of maxPps ends the search at the top (default 0.95). */
  achievedFraction?: number;
  /** The most the generator can offer (the unpaced flood's offered rate): no ask goes above it. */
  generatorMaxPps?: number;
}

export interface NoLossSearchResult {
  /** Achieved offered rate of the best passing trial; 0 when not even the floor passed. */
  pps: number;
  /** The passing trial `pps` comes from (null when none passed). */
  best: SearchedTrial | null;
  trials: SearchedTrial[];
  lossLimit: number;
  floorPps: number;
  /**
   * No paced trial lost, yet none offered (95 % of) the top: the generator could not keep up, the
   * path may sustain more without loss, so the figure is a lower bound.
   */
  generatorLimited: boolean;
}

export const DEFAULT_LOSS_LIMIT = 0.001;

/**
 * Binary search over offered rates. The first trial aims at maxPps (if it passes, that is the
 * answer); later trials bisect between the highest passing and the lowest failing rate, starting
 * from the floor (maxPps · floorFraction) as the assumed-passing lower bound. The bounds are the
 * rates the generator achieved (what the path was actually offered). On a busy machine the paced
 * generator achieves less than it is asked, so each ask is the aimed rate divided by the last
 * trial's achieved/asked ratio (0.5..1), capped at `generatorMaxPps`; a trial that ran into that cap
 * says nothing about lower rates and leaves the ratio as it was. When the top passes short of
 * maxPps, it is tried once more with that correction. When every trial so far failed, the last one
 * aims at the floor itself, so a result of 0 means "loss even at the floor". The search stops early
 * when the bounds meet. The reported rate is the achieved rate of the best pass.
 */
export async function searchNoLoss(trial: (pps: number) => Promise<TrialOutcome>, o: NoLossSearchOptions): Promise<NoLossSearchResult> {
  if (!(o.maxPps > 0) || !Number.isFinite(o.maxPps)) throw new RangeError(`searchNoLoss: maxPps must be a positive rate, got ${o.maxPps}`);
  if (!(o.trials >= 2)) throw new RangeError(`searchNoLoss: at least 2 trials, got ${o.trials}`);
  const lossLimit = o.lossLimit ?? DEFAULT_LOSS_LIMIT;
  const floorPps = o.maxPps * (o.floorFraction ?? 0.01);
  const enough = o.achievedFraction ?? 0.95;
  const cap = o.generatorMaxPps ?? Infinity;
  const passes = (t: TrialOutcome) => t.sent > 0 && t.loss <= lossLimit;
  const trials: SearchedTrial[] = [];
  const done = (best: SearchedTrial | null): NoLossSearchResult => ({
    pps: best ? best.offeredPps : 0,
    best,
    trials,
    lossLimit,
    floorPps,
    // Never saw loss, yet never offered the top: the path may sustain more than the generator gave it.
    generatorLimited: !!best && best.paced && !trials.some((t) => t.paced && !t.pass) && best.offeredPps < enough * o.maxPps,
  });
  if (o.measured) {
    const m: SearchedTrial = { ...o.measured, pass: passes(o.measured), paced: false };
    trials.push(m);
    if (m.pass) return done(m);
  }
  let lo = floorPps; // highest achieved rate known (or assumed) to pass
  let hi = o.maxPps; // lowest achieved rate known to fail (or the untried top)
  let best: SearchedTrial | null = null;
  let efficiency = 1; // achieved / asked of the last unsaturated trial
  let topRetried = false;
  for (let i = 0; i < o.trials; i++) {
    const last = i === o.trials - 1;
    if (i > 0 && best && hi <= lo * 1.001) break; // the bounds met (or crossed, by noise)
    const topShort = i === 1 && !!best && !topRetried;
    if (topShort) topRetried = true;
    const aim = i === 0 || topShort ? o.maxPps : last && !best ? floorPps : (lo + hi) / 2;
    const ask = Math.min(cap, aim / efficiency);
    const t = await trial(ask);
    const s: SearchedTrial = { ...t, requestedPps: ask, aimedPps: aim, pass: passes(t), paced: true };
    trials.push(s);
    if (ask < 0.9 * cap && t.offeredPps > 0) efficiency = Math.min(1, Math.max(0.5, t.offeredPps / ask));
    if (s.pass) {
      if (!best || s.offeredPps > best.offeredPps) best = s;
      if (s.offeredPps >= enough * o.maxPps) break; // the top passed: nothing higher to find
      lo = Math.max(lo, s.offeredPps);
    } else {
      hi = Math.min(hi, s.offeredPps > 0 ? s.offeredPps : ask);
    }
  }
  return done(best);
}
