// The peer reconcile loop of the kernel backends: the accepted peers are diffed against what is
// installed on the host, and a backend only says how to install, remove and compare one peer.
import type { Lease } from '../subnet/types';
import type { Logger } from './backend';
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

/**
 * Keeps the host's per-peer state equal to the accepted peers. setPeers and close run one at a
 * time in call order; a peer that failed to install is retried by the next setPeers.
 */
export class PeerReconciler<T> {
  private readonly current = new Map<string, T>();
  private failedKeys = new Set<string>();
  private readonly serial = new Serial();
  private isClosed = false;

  constructor(
    /** Backend name, for errors and log lines. */
    readonly name: string,
    private readonly filter: PeerFilter<T>,
    private readonly hooks: PeerHooks<T>,
    private readonly log: Logger,
  ) {}

  setPeers(peers: Lease[]): Promise<void> {
    return this.serial.run(async () => {
      if (this.isClosed) throw new Error(`${this.name}: setPeers after close`);
      const want = new Map([...this.filter.apply(peers)].map(([k, p]) => [k, p.value]));
      // Stale and changed peers go first, so a replacement never meets its predecessor's entries.
      for (const [key, have] of [...this.current]) {
        const next = want.get(key);
        if (next === undefined || !this.hooks.equal(have, next)) await this.remove(key, have);
      }
      const failed = new Set<string>();
      for (const [key, peer] of want) {
        if (this.current.has(key)) continue;
        try {
          await this.hooks.install(key, peer);
          this.current.set(key, peer);
        } catch (e) {
          failed.add(key);
          this.log.error('failed to install peer', { backend: this.name, subnet: key, ...this.hooks.describe?.(peer), error: errorMessage(e) });
        }
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
        for (const [key, peer] of [...this.current]) await this.remove(key, peer);
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

  private async remove(key: string, peer: T): Promise<void> {
    try {
      await this.hooks.remove(key, peer);
    } catch (e) {
      this.log.warn('failed to remove peer', { backend: this.name, subnet: key, ...this.hooks.describe?.(peer), error: errorMessage(e) });
    }
    this.current.delete(key);
  }
}
