// Holds this host's subnet lease and keeps the peer set in sync with etcd: flannel's LocalManager
// (acquire, renew, watch) plus reconciliation that survives compaction, restarts and outages.
import { EventEmitter } from 'node:events';
import type { Logger } from '../log';
import { Cidr, cidrEquals, cidrOverlaps, formatCidr } from '../net/ip';
import { computePeers, type PeerComputation, type RefusedLease, type RefuseReason, type RejectReason } from './peers';
import { subnetAt, subnetCount, subnetFitsConfig } from './config';
import { decodeLeaseValue, encodeLeaseValue, leaseKey } from './lease';
import { isAccessDenied, type LeaseListing, type LeaseRecord, type LeaseRegistry, type LeaseWatch, type LeaseWatchEvent, type WriteResult } from './registry';
import type { Lease, LeaseAttrs, NetworkConfig } from './types';

export const DEFAULT_TTL_SECONDS = 24 * 60 * 60;

export { REJECT_REASONS, REFUSE_REASONS } from './peers';
export type { RejectReason, RefuseReason, RefusedLease } from './peers';

/** What a snapshot holds of the manager, and what restore() starts from. */
export interface ManagerState {
  own: { subnet: Cidr; modRevision: number; expiration: number };
  records: LeaseRecord[];
  /** etcd revision the records reflect. */
  revision: number;
}

export interface LeaseManagerOptions {
  /** TTL of our etcd lease (default 24 h, as flannel); renewed at half of it. At least 2. */
  ttlSeconds?: number;
  /** Subnet from the previous run's subnet file: reused when still free or ours. */
  previousSubnet?: Cidr;
  /** Uniform [0, 1) source for picking a free subnet (default Math.random). */
  random?: () => number;
  log?: Logger;
  /** First retry delay after an etcd failure (default 250 ms), doubled up to retryMaxMs. */
  retryInitialMs?: number;
  /** Retry delay cap (default 10 s; never more than a quarter of the TTL). */
  retryMaxMs?: number;
  /** Renew this many seconds before expiry (flanneld --subnet-lease-renew-margin); default half the TTL. */
  renewMarginSeconds?: number;
}

export interface LeaseManagerStatus {
  etcd: 'connected' | 'unreachable';
  lastError?: string;
  lastContact?: Date;
  lease?: Lease;
  /** held: etcd has our lease; lost: someone else holds our subnet; none: not acquired yet. */
  leaseState: 'none' | 'held' | 'lost';
  peers: number;
  rejected: Record<RejectReason, number>;
  renewals: number;
  /** Leases refused right now (not installed anywhere), and how many versions were refused so far. */
  refused: RefusedLease[];
  refusedTotal: Record<RefuseReason, number>;
  /** When started from a snapshot: its time, until the first listing from etcd replaced it. */
  servingSnapshotFrom?: Date;
}

export type PeersCallback = (peers: Lease[]) => void | Promise<void>;

/** No subnet left in SubnetMin..SubnetMax. */
export class SubnetsExhaustedError extends Error {
  constructor(readonly range: string) {
    super(`no free subnet left in ${range}`);
    this.name = 'SubnetsExhaustedError';
  }
}

const silent: Logger = { info() {}, warn() {}, error() {} };
const MAX_RACE_RETRIES = 50;

interface OwnLease {
  subnet: Cidr;
  key: string;
  modRevision: number;
  expiration: Date;
}


/**
 * Events: 'acquired' (Lease), 'renewed' (Lease), 'peers' (Lease[]), 'rejected' ({key, reason, detail}),
 * 'refused' ({key, reason, detail}), 'lost' ({subnet, holder}), 'etcd' ('connected' | 'unreachable'),
 * 'state' (our lease or the records changed: time to rewrite the snapshot).
 */
export class LeaseManager extends EventEmitter {
  private readonly ttl: number;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;

  private own: OwnLease | undefined;
  private leaseState: 'none' | 'held' | 'lost' = 'none';
  // Unknown counts as unreachable until the first successful call.
  private etcdState: 'connected' | 'unreachable' = 'unreachable';
  private lastError: string | undefined;
  private lastContact: Date | undefined;
  private renewals = 0;
  private readonly rejectedCounts: Record<RejectReason, number> = { malformed: 0, overlap: 0, outside: 0 };
  /** key -> "reason@modRevision" of its current rejection, so each bad version is counted once. */
  private readonly rejectedNow = new Map<string, string>();
  private readonly refusedCounts: Record<RefuseReason, number> = { public_ip_in_network: 0 };
  /** key -> refusal of its current version, counted and logged once per version. */
  private readonly refusedNow = new Map<string, RefusedLease & { mark: string }>();
  /** Set by restore(): the time of the snapshot served until etcd answers a listing. */
  private servingSnapshotFrom: Date | undefined;
  /** After restore(): renew as soon as etcd answers (attrs or TTL may be stale). */
  private renewOnContact = false;

  /** Every key under <prefix>/subnets/: the last listing plus the watch events after it. */
  private records = new Map<string, LeaseRecord>();
  /** Revision of the last listing: watch events at or below it are already in `records`. */
  private snapshotRevision = 0;
  /** Highest revision reflected in `records` (listing or event). */
  private appliedRevision = 0;
  private watch: LeaseWatch | undefined;
  private watchBroken = false;

  private started = false;
  private stopped = false;
  private onPeers: PeersCallback | undefined;
  private peerSig: string | undefined;
  private peerList: Lease[] = [];
  private readonly decoded = new Map<string, { modRevision: number; result: ReturnType<typeof decodeLeaseValue> }>();
  private publishQueued = false;
  private pendingPeers: Lease[] | undefined;
  private delivering = false;
  private delivery: Promise<void> = Promise.resolve();

  private resyncing = false;
  private resyncAgain = false;
  private resyncDelay: number;
  private resyncTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewDelay: number;
  private reclaiming = false;
  private readonly sleepers = new Set<() => void>();

  constructor(
    private readonly registry: LeaseRegistry,
    private readonly config: NetworkConfig,
    private readonly attrs: LeaseAttrs,
    private readonly opts: LeaseManagerOptions = {},
  ) {
    super();
    this.ttl = opts.ttlSeconds ?? DEFAULT_TTL_SECONDS;
    if (!Number.isInteger(this.ttl) || this.ttl < 2) throw new Error(`ttlSeconds: must be a whole number >= 2, got ${opts.ttlSeconds}`);
    this.log = opts.log ?? silent;
    this.random = opts.random ?? Math.random;
    this.retryInitialMs = opts.retryInitialMs ?? 250;
    // Retries must come several times per TTL or a short outage would cost us the lease.
    this.retryMaxMs = Math.min(opts.retryMaxMs ?? 10000, this.ttl * 250);
    this.resyncDelay = this.retryInitialMs;
    this.renewDelay = this.retryInitialMs;
  }

  /** Our lease, once acquired. */
  get lease(): Lease | undefined {
    if (!this.own) return undefined;
    return { subnet: this.own.subnet, attrs: this.attrs, expiration: this.own.expiration, revision: this.own.modRevision };
  }

  /** The peer set last handed to onPeers. */
  get peers(): Lease[] {
    return this.peerList;
  }

  status(): LeaseManagerStatus {
    return {
      etcd: this.etcdState,
      lastError: this.lastError,
      lastContact: this.lastContact,
      lease: this.lease,
      leaseState: this.leaseState,
      peers: this.peerList.length,
      rejected: { ...this.rejectedCounts },
      renewals: this.renewals,
      refused: [...this.refusedNow.values()].map(({ mark: _mark, ...r }) => r),
      refusedTotal: { ...this.refusedCounts },
      servingSnapshotFrom: this.servingSnapshotFrom,
    };
  }

  /** Our lease and every record with the revision they reflect (for the snapshot), once we hold a lease. */
  exportState(): ManagerState | undefined {
    const own = this.own;
    if (!own) return undefined;
    return {
      own: { subnet: own.subnet, modRevision: own.modRevision, expiration: own.expiration.getTime() },
      records: [...this.records.values()],
      revision: this.appliedRevision,
    };
  }

  /**
   * Starts from a snapshot instead of acquire() (etcd is unreachable): our lease and the peers as they
   * were. run() then installs them at once and reconciles when etcd answers: the watch resumes after the
   * snapshot's revision, a compaction or an older etcd means a re-list, and our lease is renewed.
   */
  restore(state: ManagerState, savedAt: Date): Lease {
    if (this.own || this.started) throw new Error('restore() must come before acquire() and run()');
    const key = leaseKey(this.registry.prefix, state.own.subnet);
    this.own = { subnet: state.own.subnet, key, modRevision: state.own.modRevision, expiration: new Date(state.own.expiration) };
    this.records = new Map(state.records.map((r) => [r.key, r]));
    this.snapshotRevision = state.revision;
    this.appliedRevision = state.revision;
    this.leaseState = 'held';
    this.servingSnapshotFrom = savedAt;
    this.renewOnContact = true;
    const lease = this.lease as Lease;
    this.log.info('serving the snapshot until etcd answers', { subnet: formatCidr(state.own.subnet), savedAt: savedAt.toISOString(), revision: state.revision });
    this.emit('acquired', lease);
    return lease;
  }

  // ---- acquiring ------------------------------------------------------------------------------

  /**
   * Takes a subnet: the previous one if still free or ours, else an existing lease with our PublicIP,
   * else a random free one. Every write is a compare-and-swap, so racing hosts never share a subnet.
   * Retries etcd failures with backoff until it succeeds or stop() is called.
   */
  async acquire(): Promise<Lease> {
    if (this.own) return this.lease as Lease;
    let races = 0;
    let delay = this.retryInitialMs;
    while (!this.stopped) {
      let got: Lease | undefined;
      try {
        got = await this.tryAcquire();
      } catch (err) {
        // Retrying cannot fix a wrong password or a missing permission.
        if (err instanceof SubnetsExhaustedError || isAccessDenied(err)) throw err;
        this.noteFailure('acquire', err);
        this.log.warn('acquiring a lease failed, retrying', { error: String((err as Error).message), retryMs: delay });
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.retryMaxMs);
        continue;
      }
      if (got) return got;
      if (++races >= MAX_RACE_RETRIES) throw new Error(`lost the race for a subnet ${races} times in a row`);
      // Someone took the subnet between our list and our write: list again after a short jitter.
      await this.sleep(Math.floor(this.random() * 50));
    }
    throw new Error('lease manager stopped before a lease was acquired');
  }

  private isOurs(rec: LeaseRecord): boolean {
    const d = decodeLeaseValue(rec.value);
    return d.ok && d.attrs.publicIp === this.attrs.publicIp;
  }

  private async tryAcquire(): Promise<Lease | undefined> {
    const listing = await this.registry.listLeases();
    this.noteContact();
    const keyed = listing.records.filter((r): r is LeaseRecord & { subnet: Cidr } => r.subnet !== undefined);

    const prev = this.opts.previousSubnet;
    if (prev && !subnetFitsConfig(this.config, prev)) {
      this.log.warn('previous subnet does not fit the network config, ignoring it', { subnet: formatCidr(prev) });
    } else if (prev) {
      const holder = keyed.find((r) => cidrEquals(r.subnet, prev));
      if (holder && this.isOurs(holder)) return this.claim(prev, holder.modRevision, 'previous subnet, still ours');
      if (!holder && !keyed.some((r) => cidrOverlaps(r.subnet, prev))) return this.claim(prev, 0, 'previous subnet, still free');
      this.log.info('previous subnet is taken by another host', { subnet: formatCidr(prev) });
    }

    const mine = keyed.find((r) => this.isOurs(r) && subnetFitsConfig(this.config, r.subnet));
    if (mine) return this.claim(mine.subnet, mine.modRevision, 'existing lease for our PublicIP');

    return this.claim(this.pickFree(keyed.map((r) => r.subnet)), 0, 'new subnet');
  }

  /** A random subnet in SubnetMin..SubnetMax overlapping none of `taken`. */
  private pickFree(taken: Cidr[]): Cidr {
    const cfg = this.config;
    const count = subnetCount(cfg);
    const exact = new Set<number>();
    const odd: Cidr[] = [];
    for (const t of taken) {
      if (t.prefixLen === cfg.subnetLen) exact.add(t.ip);
      else odd.push(t);
    }
    const free = (sn: Cidr) => !exact.has(sn.ip) && !odd.some((o) => cidrOverlaps(o, sn));
    // Random probes spread racing hosts over the whole range; the scan finds the last few holes.
    for (let i = 0; i < 32; i++) {
      const sn = subnetAt(cfg, Math.floor(this.random() * count));
      if (free(sn)) return sn;
    }
    const start = Math.floor(this.random() * count);
    for (let k = 0; k < count; k++) {
      const sn = subnetAt(cfg, (start + k) % count);
      if (free(sn)) return sn;
    }
    throw new SubnetsExhaustedError(`${formatCidr(subnetAt(cfg, 0))} .. ${formatCidr(subnetAt(cfg, count - 1))}`);
  }

  private async claim(subnet: Cidr, expectedModRevision: number, why: string): Promise<Lease | undefined> {
    const res =
      expectedModRevision === 0
        ? await this.registry.createLease(subnet, this.attrs, this.ttl)
        : await this.registry.updateLease(subnet, this.attrs, this.ttl, expectedModRevision);
    this.noteContact();
    if (!res.ok) {
      this.log.info('subnet was taken concurrently, trying again', { subnet: formatCidr(subnet) });
      return undefined;
    }
    this.own = {
      subnet,
      key: leaseKey(this.registry.prefix, subnet),
      modRevision: res.grant.modRevision,
      expiration: res.grant.expiration,
    };
    this.leaseState = 'held';
    this.changed();
    const lease = this.lease as Lease;
    this.log.info('acquired lease', { subnet: formatCidr(subnet), reason: why, ttlSeconds: this.ttl });
    this.emit('acquired', lease);
    return lease;
  }

  // ---- running --------------------------------------------------------------------------------

  /**
   * Starts renewing our lease and watching the others; `onPeers` gets the whole peer set (every valid
   * lease but ours) first once and then whenever it changes, one call at a time. Resolves after the
   * first sync attempt; if etcd is down then, it keeps retrying in the background.
   */
  async run(onPeers: PeersCallback): Promise<void> {
    if (!this.own) throw new Error('run() needs a lease: call acquire() first');
    if (this.started) throw new Error('run() was already called');
    if (this.stopped) throw new Error('lease manager is stopped');
    this.started = true;
    this.onPeers = onPeers;
    this.scheduleRenew(this.renewDue());
    if (this.servingSnapshotFrom) {
      // From a snapshot: install its peers now, reconcile with etcd in the background.
      this.publish();
      this.startWatch(this.appliedRevision + 1);
      void this.resync();
      await this.delivery;
      return;
    }
    await this.resync();
  }

  /** Stops timers and the watch. The etcd lease stays, so a restart with the same subnet reuses it. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.renewTimer);
    clearTimeout(this.resyncTimer);
    this.watch?.cancel();
    this.watch = undefined;
    for (const wake of this.sleepers) wake();
    this.sleepers.clear();
  }

  /** Lists everything, replaces our view, (re)starts the watch, checks our own key and publishes. */
  private async resync(): Promise<void> {
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    clearTimeout(this.resyncTimer);
    try {
      do {
        this.resyncAgain = false;
        const listing = await this.registry.listLeases();
        if (this.stopped) return;
        this.noteContact();
        if (!this.applySnapshot(listing)) {
          this.resyncAgain = true;
          continue;
        }
        if (!this.watch) this.startWatch(listing.revision + 1);
        await this.checkOwn();
        this.publish();
        if (this.servingSnapshotFrom) {
          this.log.info('etcd answered: snapshot replaced by the listing', { revision: listing.revision, leases: listing.records.length });
          this.servingSnapshotFrom = undefined;
        }
        if (this.renewOnContact) {
          this.renewOnContact = false;
          this.scheduleRenew(0);
        }
      } while (this.resyncAgain && !this.stopped);
      this.resyncDelay = this.retryInitialMs;
    } catch (err) {
      this.noteFailure('sync', err);
      this.log.warn('syncing leases from etcd failed, retrying', { error: (err as Error).message, retryMs: this.resyncDelay });
      this.scheduleResync();
    } finally {
      this.resyncing = false;
    }
  }

  private scheduleResync(): void {
    if (this.stopped) return;
    clearTimeout(this.resyncTimer);
    this.resyncTimer = setTimeout(() => void this.resync(), this.resyncDelay);
    this.resyncDelay = Math.min(this.resyncDelay * 2, this.retryMaxMs);
  }

  /** False (and nothing changed) when the listing is older than watch events already applied. */
  private applySnapshot(listing: LeaseListing): boolean {
    if (listing.revision < this.appliedRevision) {
      if (!this.servingSnapshotFrom) return false;
      // etcd is older than our snapshot (restored from backup, or replaced): its revisions are not
      // ours, so the watch from the snapshot revision would miss everything; watch from this listing.
      this.log.warn('etcd is behind the snapshot revision; trusting the listing', { snapshotRevision: this.appliedRevision, revision: listing.revision });
      this.watch?.cancel();
      this.watch = undefined;
    }
    this.records = new Map(listing.records.map((r) => [r.key, r]));
    this.snapshotRevision = listing.revision;
    this.appliedRevision = listing.revision;
    this.changed();
    return true;
  }

  private startWatch(fromRevision: number): void {
    this.watch = this.registry.watchLeases(fromRevision, {
      onEvents: (events) => this.onWatchEvents(events),
      onCompacted: (rev) => {
        this.log.warn('lease watch fell behind etcd compaction, re-listing', { compactRevision: rev });
        this.watch = undefined;
        void this.resync();
      },
      onConnected: () => {
        this.noteContact();
        if (this.watchBroken) {
          // Events are resumed exactly, but a re-list also heals an etcd restored from backup.
          this.watchBroken = false;
          void this.resync();
        }
      },
      onDisconnected: (err) => {
        this.watchBroken = true;
        this.noteFailure('watch', err);
      },
    });
  }

  private onWatchEvents(events: LeaseWatchEvent[]): void {
    if (this.stopped) return;
    this.noteContact();
    let ownTouched = false;
    for (const ev of events) {
      const rev = ev.type === 'put' ? ev.record.modRevision : ev.revision;
      // Already part of the listing we hold (the watch may lag behind a re-list).
      if (rev <= this.snapshotRevision) continue;
      this.appliedRevision = Math.max(this.appliedRevision, rev);
      const key = ev.type === 'put' ? ev.record.key : ev.key;
      if (ev.type === 'put') this.records.set(key, ev.record);
      else this.records.delete(key);
      if (key === this.own?.key) ownTouched = true;
    }
    this.changed();
    if (ownTouched) void this.checkOwn();
    this.schedulePublish();
  }

  /** Our key must exist and be ours: re-create it when it vanished, flag it when someone else took it. */
  private async checkOwn(): Promise<void> {
    const own = this.own;
    if (!own || this.stopped) return;
    const rec = this.records.get(own.key);
    if (rec) {
      this.adoptOrLose(rec);
      return;
    }
    if (this.reclaiming) return;
    this.reclaiming = true;
    try {
      this.log.warn('our lease disappeared from etcd, re-creating it', { subnet: formatCidr(own.subnet) });
      const res = await this.registry.createLease(own.subnet, this.attrs, this.ttl);
      this.noteContact();
      this.afterWrite(res, 're-created');
    } catch (err) {
      this.noteFailure('re-create lease', err);
      this.scheduleResync();
    } finally {
      this.reclaiming = false;
    }
  }

  /** Someone wrote our key: fine if it still names our PublicIP, otherwise we lost the subnet. */
  private adoptOrLose(rec: LeaseRecord): void {
    const own = this.own as OwnLease;
    if (this.isOurs(rec)) {
      if (rec.modRevision > own.modRevision) this.changed();
      own.modRevision = Math.max(own.modRevision, rec.modRevision);
      if (this.leaseState === 'lost') this.log.info('our subnet is ours again', { subnet: formatCidr(own.subnet) });
      this.leaseState = 'held';
      return;
    }
    if (this.leaseState !== 'lost') {
      this.leaseState = 'lost';
      this.log.error('another host holds our subnet', { subnet: formatCidr(own.subnet), value: rec.value });
      this.emit('lost', { subnet: own.subnet, holder: rec.value });
    }
  }

  private afterWrite(res: WriteResult, what: 'renewed' | 're-created'): boolean {
    const own = this.own as OwnLease;
    if (res.ok) {
      own.modRevision = res.grant.modRevision;
      own.expiration = res.grant.expiration;
      this.leaseState = 'held';
      this.changed();
      if (what === 'renewed') this.renewals++;
      this.log.info(`lease ${what}`, { subnet: formatCidr(own.subnet), expiration: own.expiration.toISOString() });
      this.emit('renewed', this.lease);
      return true;
    }
    if (res.current) this.adoptOrLose(res.current);
    return false;
  }

  /** Milliseconds until the renew margin before our etcd lease's expiry (half the TTL by default). */
  private renewDue(): number {
    const expires = this.own ? this.own.expiration.getTime() : Date.now();
    const margin = Math.min(this.opts.renewMarginSeconds ?? this.ttl / 2, this.ttl - 1);
    return Math.max(0, expires - margin * 1000 - Date.now());
  }

  private scheduleRenew(ms: number): void {
    if (this.stopped) return;
    clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), ms);
  }

  /** Re-writes our lease with a fresh TTL; on conflict adopts our own newer write or re-creates a vanished key. */
  private async renew(): Promise<void> {
    const own = this.own;
    if (!own || this.stopped) return;
    try {
      let res = await this.registry.updateLease(own.subnet, this.attrs, this.ttl, own.modRevision);
      if (!res.ok && res.current === undefined) {
        res = await this.registry.createLease(own.subnet, this.attrs, this.ttl);
      } else if (!res.ok && res.current && this.isOurs(res.current)) {
        res = await this.registry.updateLease(own.subnet, this.attrs, this.ttl, res.current.modRevision);
      }
      this.noteContact();
      const ok = this.afterWrite(res, 'renewed');
      this.renewDelay = this.retryInitialMs;
      // While someone else holds our subnet keep checking at the retry cap, in case it frees up.
      this.scheduleRenew(ok ? this.renewDue() : this.retryMaxMs);
    } catch (err) {
      this.noteFailure('renew', err);
      this.log.warn('renewing our lease failed, retrying', { error: (err as Error).message, retryMs: this.renewDelay });
      this.scheduleRenew(this.renewDelay);
      this.renewDelay = Math.min(this.renewDelay * 2, this.retryMaxMs);
    }
  }

  // ---- peers ----------------------------------------------------------------------------------

  /** Valid leases other than ours (see computePeers), parsing only records that changed. */
  private computePeers(): PeerComputation {
    const result = computePeers(this.records.values(), this.config, this.own, (rec) => this.decode(rec));
    for (const key of this.decoded.keys()) if (!this.records.has(key)) this.decoded.delete(key);
    return result;
  }

  /** Decoded lease value, reused while the key's modRevision is unchanged (10,000 leases, one event: one parse). */
  private decode(rec: LeaseRecord): ReturnType<typeof decodeLeaseValue> {
    const hit = this.decoded.get(rec.key);
    if (hit && hit.modRevision === rec.modRevision) return hit.result;
    const result = decodeLeaseValue(rec.value);
    this.decoded.set(rec.key, { modRevision: rec.modRevision, result });
    return result;
  }

  /** Publishes once per burst of watch events instead of once per event. */
  private schedulePublish(): void {
    if (this.publishQueued) return;
    this.publishQueued = true;
    setImmediate(() => {
      this.publishQueued = false;
      this.publish();
    });
  }

  private publish(): void {
    if (this.stopped || !this.started) return;
    const { peers, rejected, refused } = this.computePeers();
    for (const [key, r] of rejected) {
      const mark = `${r.reason}@${r.rec.modRevision}`;
      if (this.rejectedNow.get(key) === mark) continue;
      this.rejectedNow.set(key, mark);
      this.rejectedCounts[r.reason]++;
      this.log.warn('rejected lease', { key, reason: r.reason, detail: r.detail });
      this.emit('rejected', { key, reason: r.reason, detail: r.detail });
    }
    for (const key of this.rejectedNow.keys()) if (!rejected.has(key)) this.rejectedNow.delete(key);
    for (const [key, r] of refused) {
      if (this.refusedNow.get(key)?.mark === r.mark) continue;
      this.refusedNow.set(key, r);
      this.refusedCounts[r.reason]++;
      this.log.warn('refused lease (not installed)', { key, reason: r.reason, detail: r.detail });
      this.emit('refused', { key, reason: r.reason, detail: r.detail });
    }
    for (const key of this.refusedNow.keys()) if (!refused.has(key)) this.refusedNow.delete(key);

    const sig = peers.map((p) => `${formatCidr(p.subnet)}=${this.records.get(leaseKey(this.registry.prefix, p.subnet))?.value ?? encodeLeaseValue(p.attrs)}`).join('\n');
    if (sig === this.peerSig) return;
    this.peerSig = sig;
    this.peerList = peers;
    this.deliver(peers);
  }

  /** Hands peer sets to the callback one at a time, skipping sets superseded while it was busy. */
  private deliver(peers: Lease[]): void {
    this.pendingPeers = peers;
    if (this.delivering) return;
    this.delivering = true;
    this.delivery = (async () => {
      while (this.pendingPeers && !this.stopped) {
        const next = this.pendingPeers;
        this.pendingPeers = undefined;
        this.emit('peers', next);
        try {
          await this.onPeers?.(next);
        } catch (err) {
          this.log.error('applying the peer set failed', { error: (err as Error).message, peers: next.length });
        }
      }
      this.delivering = false;
    })();
  }

  /** Our lease or the records changed: the daemon rewrites its snapshot. */
  private changed(): void {
    this.emit('state');
  }

  // ---- etcd health ----------------------------------------------------------------------------

  private noteContact(): void {
    this.lastContact = new Date();
    if (this.etcdState === 'connected') return;
    this.etcdState = 'connected';
    if (this.lastError !== undefined) this.log.info('etcd is reachable again');
    this.emit('etcd', 'connected');
  }

  private noteFailure(what: string, err: unknown): void {
    this.lastError = `${what}: ${err instanceof Error ? err.message : String(err)}`;
    if (this.etcdState === 'unreachable') return;
    this.etcdState = 'unreachable';
    this.log.warn('etcd is unreachable; keeping the last known peers', { error: this.lastError });
    this.emit('etcd', 'unreachable');
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.sleepers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }
}
