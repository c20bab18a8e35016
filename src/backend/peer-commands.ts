// Peers programmed as iproute2 command lines: all the peers of a change go through a few
// `ip -batch` / `bridge -batch` processes instead of one process per command, and every failed line
// is charged to the peer it belongs to.
import type { Logger } from '../log';
import { runBatch, type BatchTool } from '../net/iproute';
import { errorMessage, isAbsentError } from './common';
import type { PeerBatchHooks, PeerHooks, PeerList } from './reconciler';

/** One command line of `ip` or `bridge`, without the program name. */
export interface PeerCommand {
  tool: BatchTool;
  line: string;
}

/**
 * A peer's commands in steps: a step runs for every peer of the change before the next step starts
 * (so e.g. no route is added before the neighbour entries of all peers are in).
 */
export type PeerSteps = PeerCommand[][];

/** Runs command lines through one tool; resolves to the error of each failed line, by its index. */
export type BatchRunner = (tool: BatchTool, lines: string[]) => Promise<Map<number, string>>;

export const runIpBatch: BatchRunner = async (tool, lines) => (await runBatch(tool, lines)).failed;

export interface PeerCommandPlan<T> extends Pick<PeerHooks<T>, 'equal' | 'describe'> {
  /** Programs the peer; a peer whose command fails skips its later steps. */
  install(key: string, peer: T): PeerSteps;
  /**
   * Removes the peer; every step runs even if one fails. Also removes what a failed install left,
   * so it must cope with any of its entries being absent (such failures count as done).
   */
  remove(key: string, peer: T): PeerSteps;
  /** Peers that must not be installed, with why; asked once per change, before any command runs. */
  check?(peers: PeerList<T>): Promise<Map<string, unknown>>;
}

/** Batch hooks for the reconciler that run `plan`'s commands through `run`. */
export function commandHooks<T>(plan: PeerCommandPlan<T>, log: Logger, run: BatchRunner = runIpBatch): PeerBatchHooks<T> {
  return {
    equal: (a, b) => plan.equal(a, b),
    describe: plan.describe && ((p) => plan.describe!(p)),
    installAll: async (peers) => {
      const errors = new Map<string, unknown>(peers.length ? await plan.check?.(peers) : undefined);
      const steps = await runSteps(peers.filter(([key]) => !errors.has(key)), (k, p) => plan.install(k, p), run, true);
      for (const [key, e] of steps.errors) errors.set(key, e);
      // Whatever a failed peer got before its failure goes again, best effort.
      const partial = peers.filter(([key]) => steps.errors.has(key) && steps.touched.has(key));
      const undo = await runSteps(partial, (k, p) => plan.remove(k, p), run, false);
      for (const [key, e] of undo.errors) log.warn('failed to clean up after a failed peer install', { subnet: key, error: e });
      return errors;
    },
    removeAll: async (peers) => (await runSteps(peers, (k, p) => plan.remove(k, p), run, false)).errors,
  };
}

interface StepsOutcome {
  /** The first failure of each peer that had one, naming the command. */
  errors: Map<string, string>;
  /** Peers with at least one command that succeeded. */
  touched: Set<string>;
}

/**
 * Runs the peers' steps one after the other, each step as one batch per tool (the tools side by
 * side). Install steps stop at a peer's first failure; removals run on and take "already gone"
 * for done.
 */
async function runSteps<T>(peers: PeerList<T>, stepsOf: (key: string, peer: T) => PeerSteps, run: BatchRunner, install: boolean): Promise<StepsOutcome> {
  const out: StepsOutcome = { errors: new Map(), touched: new Set() };
  const plans = peers.map(([key, peer]) => ({ key, steps: stepsOf(key, peer) }));
  const depth = plans.reduce((n, p) => Math.max(n, p.steps.length), 0);
  for (let step = 0; step < depth; step++) {
    const batches = new Map<BatchTool, { lines: string[]; owners: string[] }>();
    for (const { key, steps } of plans) {
      if (install && out.errors.has(key)) continue;
      for (const { tool, line } of steps[step] ?? []) {
        const b = batches.get(tool) ?? { lines: [], owners: [] };
        batches.set(tool, b);
        b.lines.push(line);
        b.owners.push(key);
      }
    }
    await Promise.all(
      [...batches].map(async ([tool, { lines, owners }]) => {
        const failed = await run(tool, lines).catch((e: unknown) => new Map(lines.map((_, i) => [i, errorMessage(e)])));
        lines.forEach((line, i) => {
          const msg = failed.get(i);
          const key = owners[i];
          if (msg === undefined) out.touched.add(key);
          else if ((install || !isAbsentError(msg)) && !out.errors.has(key)) out.errors.set(key, `${tool} ${line}: ${msg}`);
        });
      }),
    );
  }
  return out;
}
