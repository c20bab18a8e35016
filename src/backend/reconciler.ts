// The peer reconcile loop of the kernel backends: the accepted peers are diffed against what is
// installed on the host, and a backend only says how to install, remove and compare peers (one at
// a time, or all of a change at once: see peer-commands.ts).
import type { Lease } from '../subnet/types';
import type { Logger } from '../log';
import { errorMessage, PeerFilter, Serial } from './common';

export interface PeerHooks<T> {
  /** Programs one peer; on failure it leaves nothing of the peer behind (it is retried at the next setPeers). */
  install(key: string, peer: T): Promise<void>;
  /** Removes one installed peer, tolerating entries already gone; a throw is logged and the peer forgotten anyway. */
  remove(key: string, peer: T): Promise<void>;
  /** Whether an installed peer is still what is wanted; if not it is removed and installed again. */
  equal(installed: T, wanted: T): boolean;
  /** Fields naming the peer in log lines besides its subnet. */
  describe?(peer: T): Record<string, unknown>;
}

/** Peers by subnet, in the order they are to be programmed. */
export type PeerList<T> = ReadonlyArray<readonly [string, T]>;

/** The hooks for backends that program many peers at once; errors are keyed by subnet. */
export interface PeerBatchHooks<T> extends Pick<PeerHooks<T>, 'equal' | 'describe'> {
  /** Programs the peers; each one that failed is left with nothing behind (it is retried at the next setPeers). */
  installAll(peers: PeerList<T>): Promise<Map<string, unknown>>;
  /** Removes installed peers, tolerating entries already gone; failures are logged and the peers forgotten anyway. */
  removeAll(peers: PeerList<T>): Promise<Map<string, unknown>>;
}

/** Per-peer hooks as batch hooks: one peer after the other, in order. */
function oneByOne<T>(hooks: PeerHooks<T>): PeerBatchHooks<T> {
  const each = (op: (key: string, peer: T) => Promise<void>) => async (peers: PeerList<T>) => {
    const errors = new Map<string, unknown>();
    for (const [key, peer] of peers) await op(key, peer).catch((e: unknown) => errors.set(key, e));
    return errors;
  };
  return {
    installAll: each((k, p) => hooks.install(k, p)),
    removeAll: each((k, p) => hooks.remove(k, p)),
    equal: (a, b) => hooks.equal(a, b),
    describe: hooks.describe && ((p) => hooks.describe!(p)),
  };
}

/**
 * Keeps the host's per-peer state equal to the accepted peers. setPeers and close run one at a
 * time in call order; a peer that failed to install is retried by the next setPeers.
 */
export class PeerReconciler<T> {
  private readonly current = new Map<string, T>();
  private failedKeys = new Set<string>();
  private readonly serial = new Serial();
  private readonly hooks: PeerBatchHooks<T>;
  private isClosed = false;

  constructor(
    /** Backend name, for errors and log lines. */
    readonly name: string,
    private readonly filter: PeerFilter<T>,
    hooks: PeerHooks<T> | PeerBatchHooks<T>,
    private readonly log: Logger,
  ) {
    this.hooks = 'installAll' in hooks ? hooks : oneByOne(hooks);
  }

  setPeers(peers: Lease[]): Promise<void> {
    return this.serial.run(async () => {
      if (this.isClosed) throw new Error(`${this.name}: setPeers after close`);
      const want = new Map([...this.filter.apply(peers)].map(([k, p]) => [k, p.value]));
      // Stale and changed peers go first, so a replacement never meets its predecessor's entries.
      await this.removePeers([...this.current].filter(([key, have]) => {
        const next = want.get(key);
        return next === undefined || !this.hooks.equal(have, next);
      }));
      const adding = [...want].filter(([key]) => !this.current.has(key));
      const errors = await settle(adding, () => this.hooks.installAll(adding));
      const failed = new Set<string>();
      for (const [key, peer] of adding) {
        if (!errors.has(key)) {
          this.current.set(key, peer);
          continue;
        }
        failed.add(key);
        this.log.error('failed to install peer', { backend: this.name, subnet: key, ...this.hooks.describe?.(peer), error: errorMessage(errors.get(key)) });
      }
      this.failedKeys = failed;
    });
  }

  /**
   * Removes every installed peer, or runs `teardown` instead when one step removes them all (a
   * deleted device takes its entries with it). Later calls do nothing; setPeers then throws.
   */
  close(teardown?: () => Promise<void>): Promise<void> {
    return this.serial.run(async () => {
      if (this.isClosed) return;
      this.isClosed = true;
      this.failedKeys = new Set();
      if (!teardown) {
        await this.removePeers([...this.current]);
        return;
      }
      try {
        await teardown();
      } finally {
        this.current.clear();
      }
    });
  }

  /** Installed peers by subnet. */
  get installed(): ReadonlyMap<string, T> {
    return this.current;
  }

  /** Subnets whose install failed at the last setPeers. */
  get failed(): string[] {
    return [...this.failedKeys];
  }

  /** Subnets the filter rejected at the last setPeers. */
  get skipped(): string[] {
    return this.filter.skipped;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  private async removePeers(peers: PeerList<T>): Promise<void> {
    if (!peers.length) return;
    const errors = await settle(peers, () => this.hooks.removeAll(peers));
    for (const [key, peer] of peers) {
      if (errors.has(key)) {
        this.log.warn('failed to remove peer', { backend: this.name, subnet: key, ...this.hooks.describe?.(peer), error: errorMessage(errors.get(key)) });
      }
      this.current.delete(key);
    }
  }
}

/** The errors of a batch hook, a throw counting against every peer of the batch. */
async function settle<T>(peers: PeerList<T>, run: () => Promise<Map<string, unknown>>): Promise<Map<string, unknown>> {
  if (!peers.length) return new Map();
  try {
    return await run();
  } catch (e) {
    return new Map(peers.map(([key]) => [key, e]));
  }
}
