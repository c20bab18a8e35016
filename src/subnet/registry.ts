// flannel's etcd v3 registry: the network config and one key per subnet lease, each key attached to
// its own etcd lease. Every call has a deadline so an unreachable etcd fails fast instead of hanging.
import * as fs from 'node:fs';
import { createSecureContext } from 'node:tls';
import { CompareResult, CompareTarget, Etcd3, EtcdAuthenticationFailedError, EtcdPermissionDeniedError, IKeyValue, IOptions, IWatchResponse, Range } from 'etcd3';
import type { Cidr } from '../net/ip';
import { configKey, DEFAULT_PREFIX, encodeLeaseValue, keyToSubnet, leaseKey, subnetsPrefix } from './lease';
import type { LeaseAttrs } from './types';

export interface EtcdRegistryOptions {
  /** Client URLs, e.g. ["http://127.0.0.1:2379"] (flanneld --etcd-endpoints). */
  endpoints: string[];
  /** Key prefix (flanneld --etcd-prefix), default /coreos.com/network. */
  prefix?: string;
  /** Client certificate, key and CA files (flanneld --etcd-certfile/--etcd-keyfile/--etcd-cafile). */
  certFile?: string;
  keyFile?: string;
  caFile?: string;
  username?: string;
  password?: string;
  /** Deadline for every unary call, connection setup included (default 5000 ms). */
  dialTimeoutMs?: number;
  /** Cap of the watch reconnect backoff (default 10000 ms). */
  watchBackoffMaxMs?: number;
}

/** One key under <prefix>/subnets/, undecoded (the manager decides what is valid). */
export interface LeaseRecord {
  key: string;
  /** Parsed from the key; undefined when the key is not a subnet key. */
  subnet: Cidr | undefined;
  value: string;
  createRevision: number;
  modRevision: number;
  /** etcd lease id (decimal string, "0" when the key has no lease). */
  leaseId: string;
}

export interface LeaseListing {
  records: LeaseRecord[];
  /** Store revision of the listing: watch from revision + 1. */
  revision: number;
}

/** A lease written by us: where it landed and when it runs out. */
export interface LeaseGrant {
  modRevision: number;
  leaseId: string;
  ttlSeconds: number;
  expiration: Date;
}

/** Compare-and-swap outcome: on conflict, `current` is what holds the key now (undefined if absent). */
export type WriteResult = { ok: true; grant: LeaseGrant } | { ok: false; current: LeaseRecord | undefined };

export type LeaseWatchEvent =
  | { type: 'put'; record: LeaseRecord }
  | { type: 'delete'; key: string; subnet: Cidr | undefined; revision: number };

export interface LeaseWatchHandlers {
  /** A batch of changes, in revision order. */
  onEvents(events: LeaseWatchEvent[]): void;
  /** The start revision was compacted away: this watch is over; re-list and watch again. */
  onCompacted(compactRevision: number): void;
  /** The watch is (re)established on the server. */
  onConnected?(): void;
  /** The stream broke; it is retried with backoff, resuming after the last event seen. */
  onDisconnected?(err: Error): void;
}

export interface LeaseWatch {
  cancel(): void;
}

/** What the lease manager needs from a store (EtcdRegistry, or a fake in tests). */
export interface LeaseRegistry {
  readonly prefix: string;
  getNetworkConfig(): Promise<string | undefined>;
  putNetworkConfigIfAbsent(json: string): Promise<boolean>;
  listLeases(): Promise<LeaseListing>;
  getLease(subnet: Cidr): Promise<LeaseRecord | undefined>;
  createLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number): Promise<WriteResult>;
  updateLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number, expectedModRevision: number): Promise<WriteResult>;
  deleteLease(subnet: Cidr): Promise<boolean>;
  watchLeases(fromRevision: number, handlers: LeaseWatchHandlers): LeaseWatch;
  close(): void;
}

/** An etcd call that failed; `op` names the operation. */
export class RegistryError extends Error {
  constructor(
    readonly op: string,
    readonly endpoints: string[],
    override readonly cause: unknown,
  ) {
    super(`etcd ${op} failed (${endpoints.join(',')}): ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'RegistryError';
  }
}

/** A CA, certificate or key file TLS cannot use; `option` names the registry option at fault. */
export class TlsFileError extends Error {
  constructor(
    readonly option: 'caFile' | 'certFile' | 'keyFile',
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${option}: ${file}: ${reason}`);
    this.name = 'TlsFileError';
  }
}

/** Loads the PEM files the way the TLS connection will, so a bad file fails here, by name, not at the first call. */
function checkTlsFiles(opts: EtcdRegistryOptions, ca: Buffer | undefined, cert: Buffer | undefined, key: Buffer | undefined): void {
  const why = (err: unknown) => String((err as Error).message).replace(/^error:[0-9A-F]+:/, '');
  if (ca) {
    if (!/-----BEGIN CERTIFICATE-----/.test(ca.toString('latin1'))) throw new TlsFileError('caFile', opts.caFile as string, 'not a PEM certificate');
    try {
      createSecureContext({ ca });
    } catch (err) {
      throw new TlsFileError('caFile', opts.caFile as string, why(err));
    }
  }
  if (cert && key) {
    try {
      createSecureContext({ cert });
    } catch (err) {
      throw new TlsFileError('certFile', opts.certFile as string, why(err));
    }
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      throw new TlsFileError('keyFile', opts.keyFile as string, why(err));
    }
  }
}

/** A wrong password or a missing permission: retrying cannot help. */
export function isAccessDenied(err: unknown): boolean {
  const cause = err instanceof RegistryError ? err.cause : err;
  return cause instanceof EtcdAuthenticationFailedError || cause instanceof EtcdPermissionDeniedError;
}

/** The settings an etcd failure can be blamed on, for etcdFailureField. */
export interface EtcdAccessSettings {
  endpoints: string[];
  prefix: string;
  caFile?: string;
  certFile?: string;
  username?: string;
}

/**
 * One line for an etcd call that failed at startup, naming the flag the user should look at: the
 * CA for an unverifiable server certificate, the client certificate for a refused handshake, the
 * password or the user's permissions for etcd's auth errors, else the endpoints.
 */
export function etcdFailureField(err: unknown, s: EtcdAccessSettings): { field: string; reason: string } {
  const cause = err instanceof RegistryError ? err.cause : err;
  const full = String((cause as Error)?.message ?? cause);
  // gRPC appends resolver notes and metadata after the reason; the first clause is the useful part.
  const why = full
    .split('\n')[0]
    .replace(/\.?\s*Resolution note:.*$/, '')
    .trim();
  const at = s.endpoints.join(',');
  if (cause instanceof EtcdAuthenticationFailedError) return { field: '--etcd-password', reason: `authentication failed for user ${JSON.stringify(s.username ?? '')} at ${at}` };
  if (cause instanceof EtcdPermissionDeniedError) return { field: '--etcd-username', reason: `permission denied on ${s.prefix} for user ${JSON.stringify(s.username ?? '')} at ${at}` };
  if (/self[- ]signed certificate|unable to (verify|get local issuer)|certificate verify failed|unknown authority|CERT_SIGNATURE_FAILURE|UNABLE_TO_VERIFY/i.test(full)) {
    return { field: '--etcd-cafile', reason: `cannot verify the certificate of etcd at ${at}: certificate signed by unknown authority${s.caFile ? ` (CA ${s.caFile})` : ' (no --etcd-cafile given)'}` };
  }
  if (/Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME|altnames/i.test(full)) {
    return { field: '--etcd-endpoints', reason: `the certificate of etcd at ${at} does not name that address: ${why}` };
  }
  if (/certificate required|bad certificate|alert number 116|alert number 42|handshake failure/i.test(full)) {
    // OpenSSL's error stack is noise here; the TLS alert is what etcd said.
    const alert = /alert ([a-z ]+?)(?::|$)/i.exec(full)?.[1] ?? why;
    return { field: '--etcd-certfile', reason: `etcd at ${at} refused our client certificate${s.certFile ? ` (${s.certFile})` : ' (none given: pass --etcd-certfile/--etcd-keyfile)'}: TLS alert ${alert}` };
  }
  if (s.username === undefined && /user name is empty|invalid auth token/i.test(full)) {
    return { field: '--etcd-username', reason: `etcd at ${at} has auth enabled: pass --etcd-username/--etcd-password (${why})` };
  }
  return { field: '--etcd-endpoints', reason: `cannot reach etcd at ${at}: ${why}` };
}

let tlsWarningFiltered = false;

/**
 * gRPC hands an IP endpoint to Node's TLS as the server name, which Node answers with deprecation
 * warning DEP0123 on stderr; etcd endpoints are usually IPs (verified by SAN), so drop just that one.
 */
function filterIpServernameWarning(): void {
  if (tlsWarningFiltered) return;
  tlsWarningFiltered = true;
  const emit = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const opt = rest[0];
    const code = typeof opt === 'object' && opt !== null ? (opt as { code?: string }).code : rest[1];
    if (code === 'DEP0123') return;
    emit(warning, ...rest);
  }) as typeof process.emitWarning;
}

type Policy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;
type Backoff = NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>;

// etcd3's defaults (3 retries, a 5 s circuit breaker per host) hide a restarted etcd for seconds after
// it is back; callers here retry with their own backoff, so each call runs exactly once.
const passThrough = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal) =>
    Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal })),
} as unknown as Policy;

// Only etcd3's own Watcher would use this backoff; ours is in WatchStream, so keep it short.
const shortBackoff: Backoff = { duration: 500, next: () => shortBackoff } as unknown as Backoff;

function readFileOption(field: string, file: string | undefined): Buffer | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new Error(`${field}: cannot read ${file}: ${(err as Error).message}`);
  }
}

function toRecord(kv: IKeyValue): LeaseRecord {
  const key = kv.key.toString();
  return {
    key,
    subnet: keyToSubnet(key),
    value: kv.value.toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    leaseId: String(kv.lease),
  };
}

export class EtcdRegistry implements LeaseRegistry {
  readonly prefix: string;
  private readonly client: Etcd3;
  private readonly endpoints: string[];
  private readonly dialTimeoutMs: number;
  private readonly watchBackoffMaxMs: number;
  private readonly watches = new Set<WatchStream>();
  /** Set on registries made by withPrefix(): they share the connection and must not close it. */
  private shared = false;

  constructor(opts: EtcdRegistryOptions) {
    if (opts.endpoints.length === 0) throw new Error('endpoints: at least one etcd endpoint is required');
    for (const ep of opts.endpoints) {
      if (!/^https?:\/\/[^/]+\/?$/.test(ep)) throw new Error(`endpoints: ${JSON.stringify(ep)} is not an http(s)://host:port URL`);
    }
    if (Boolean(opts.certFile) !== Boolean(opts.keyFile)) throw new Error('certFile/keyFile: a client certificate needs both');
    this.endpoints = opts.endpoints.map((e) => e.replace(/\/$/, ''));
    this.prefix = (opts.prefix ?? DEFAULT_PREFIX).replace(/\/+$/, '');
    if (!this.prefix.startsWith('/')) throw new Error(`prefix: must start with "/", got ${JSON.stringify(opts.prefix)}`);
    this.dialTimeoutMs = opts.dialTimeoutMs ?? 5000;
    this.watchBackoffMaxMs = opts.watchBackoffMaxMs ?? 10000;
    const ca = readFileOption('caFile', opts.caFile);
    const cert = readFileOption('certFile', opts.certFile);
    const key = readFileOption('keyFile', opts.keyFile);
    checkTlsFiles(opts, ca, cert, key);
    const timeout = this.dialTimeoutMs;
    const options: IOptions = {
      hosts: this.endpoints,
      dialTimeout: timeout,
      // Unary calls get a deadline; the watch stream lives on and is checked by keepalive pings instead.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
      faultHandling: { global: passThrough, host: () => passThrough, watchBackoff: shortBackoff },
      grpcOptions: {
        'grpc.keepalive_time_ms': 10000,
        'grpc.keepalive_timeout_ms': 5000,
        'grpc.initial_reconnect_backoff_ms': 200,
        'grpc.max_reconnect_backoff_ms': 2000,
      },
    };
    if (ca || cert) options.credentials = { rootCertificate: ca as Buffer, privateKey: key, certChain: cert };
    if (ca || cert || this.endpoints.some((e) => e.startsWith('https:'))) filterIpServernameWarning();
    if (opts.username) {
      options.auth = {
        username: opts.username,
        password: opts.password ?? '',
        callOptions: () => ({ deadline: Date.now() + timeout }),
      };
    }
    this.client = new Etcd3(options);
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new RegistryError(op, this.endpoints, err);
    }
  }

  async getNetworkConfig(): Promise<string | undefined> {
    const res = await this.call('get config', () => this.client.kv.range({ key: Buffer.from(configKey(this.prefix)) }));
    return res.kvs.length > 0 ? res.kvs[0].value.toString() : undefined;
  }

  /** Writes the config only when the key does not exist; true when written. Never overwrites. */
  async putNetworkConfigIfAbsent(json: string): Promise<boolean> {
    const key = Buffer.from(configKey(this.prefix));
    const res = await this.call('put config', () =>
      this.client.kv.txn({
        compare: [{ key, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }],
        success: [{ request_put: { key, value: Buffer.from(json) } }],
      }),
    );
    return res.succeeded;
  }

  async listLeases(): Promise<LeaseListing> {
    const range = Range.prefix(subnetsPrefix(this.prefix));
    const res = await this.call('list leases', () => this.client.kv.range({ key: range.start, range_end: range.end }));
    return { records: res.kvs.map(toRecord), revision: Number(res.header.revision) };
  }

  async getLease(subnet: Cidr): Promise<LeaseRecord | undefined> {
    const key = Buffer.from(leaseKey(this.prefix, subnet));
    const res = await this.call('get lease', () => this.client.kv.range({ key }));
    return res.kvs.length > 0 ? toRecord(res.kvs[0]) : undefined;
  }

  /** Creates the lease key only if absent (version == 0), attached to a fresh etcd lease of ttlSeconds. */
  createLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number): Promise<WriteResult> {
    return this.writeLease('create lease', subnet, attrs, ttlSeconds, 0);
  }

  /**
   * Renews by re-writing the value attached to a freshly granted etcd lease, only if the key still has
   * `expectedModRevision` (0: only if absent). A fresh lease plus compare-and-swap (flannel re-puts
   * with a new lease too) works the same whether the old etcd lease is alive, expired, or was revoked,
   * also updates changed attrs, and can never overwrite a key someone else took meanwhile. The old etcd
   * lease is left to expire on its own: it no longer holds any key, and revoking a lease we only think is
   * ours could delete someone else's key.
   */
  updateLease(subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number, expectedModRevision: number): Promise<WriteResult> {
    return this.writeLease('renew lease', subnet, attrs, ttlSeconds, expectedModRevision);
  }

  private async writeLease(op: string, subnet: Cidr, attrs: LeaseAttrs, ttlSeconds: number, expectedModRevision: number): Promise<WriteResult> {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) throw new Error(`ttlSeconds: must be a whole number >= 1, got ${ttlSeconds}`);
    const key = Buffer.from(leaseKey(this.prefix, subnet));
    const value = Buffer.from(encodeLeaseValue(attrs));
    const grant = await this.call(`${op} (grant)`, () => this.client.leaseClient.leaseGrant({ TTL: ttlSeconds }));
    const granted = Date.now();
    const cond =
      expectedModRevision === 0
        ? { key, target: CompareTarget.Version, result: CompareResult.Equal, version: 0 }
        : { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expectedModRevision };
    let res;
    try {
      res = await this.call(op, () =>
        this.client.kv.txn({
          compare: [cond],
          success: [{ request_put: { key, value, lease: grant.ID } }],
          failure: [{ request_range: { key } }],
        }),
      );
    } catch (err) {
      this.revokeQuietly(grant.ID);
      throw err;
    }
    if (!res.succeeded) {
      // Our fresh lease holds nothing: drop it now rather than leaving it to expire.
      this.revokeQuietly(grant.ID);
      const kvs = res.responses[0]?.response_range?.kvs ?? [];
      return { ok: false, current: kvs.length > 0 ? toRecord(kvs[0]) : undefined };
    }
    const ttl = Number(grant.TTL);
    return {
      ok: true,
      grant: { modRevision: Number(res.header.revision), leaseId: String(grant.ID), ttlSeconds: ttl, expiration: new Date(granted + ttl * 1000) },
    };
  }

  private revokeQuietly(id: string): void {
    this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  async deleteLease(subnet: Cidr): Promise<boolean> {
    const key = Buffer.from(leaseKey(this.prefix, subnet));
    const res = await this.call('delete lease', () => this.client.kv.deleteRange({ key }));
    return Number(res.deleted) > 0;
  }

  /** Watches every lease key from `fromRevision` (inclusive); reconnects by itself, resuming after the last event. */
  watchLeases(fromRevision: number, handlers: LeaseWatchHandlers): LeaseWatch {
    const w = new WatchStream(this.client, subnetsPrefix(this.prefix), fromRevision, handlers, this.dialTimeoutMs, this.watchBackoffMaxMs, () =>
      this.watches.delete(w),
    );
    this.watches.add(w);
    w.open();
    return w;
  }

  /** Watches every key under `keyPrefix` (any keys, not only leases) like watchLeases does. */
  watchPrefix(keyPrefix: string, fromRevision: number, handlers: LeaseWatchHandlers): LeaseWatch {
    const w = new WatchStream(this.client, keyPrefix, fromRevision, handlers, this.dialTimeoutMs, this.watchBackoffMaxMs, () => this.watches.delete(w));
    this.watches.add(w);
    w.open();
    return w;
  }

  close(): void {
    for (const w of this.watches) w.cancel();
    if (!this.shared) this.client.close();
  }

  /**
   * The same registry for another prefix, over this registry's connection: the Docker networks keep
   * their leases as flannel networks of their own (<prefix>/docker/networks/<key>/subnets/...).
   * close() of the result cancels only its own watches.
   */
  withPrefix(prefix: string): EtcdRegistry {
    const clean = prefix.replace(/\/+$/, '');
    if (!clean.startsWith('/')) throw new Error(`prefix: must start with "/", got ${JSON.stringify(prefix)}`);
    const r = Object.create(EtcdRegistry.prototype) as EtcdRegistry;
    Object.assign(r, {
      prefix: clean,
      client: this.client,
      endpoints: this.endpoints,
      dialTimeoutMs: this.dialTimeoutMs,
      watchBackoffMaxMs: this.watchBackoffMaxMs,
      watches: new Set<WatchStream>(),
      shared: true,
    });
    return r;
  }

  /** The etcd client, for stores beside the leases (src/docker/store.ts); calls wrapped like ours. */
  get etcd(): Etcd3 {
    return this.client;
  }

  /** The endpoints, for error messages. */
  get endpointList(): readonly string[] {
    return this.endpoints;
  }

}

type Duplex = Awaited<ReturnType<Etcd3['watchClient']['watch']>>;

/**
 * One etcd watch over a raw gRPC stream (rather than etcd3's Watcher) so compaction is visible:
 * etcd answers a watch on a compacted revision with compact_revision, which the caller must turn into a re-list.
 */
class WatchStream implements LeaseWatch {
  private stream: Duplex | undefined;
  private next: number;
  private stopped = false;
  private backoffMs = 100;
  private createTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly range: Range;
  /** etcd rejected the stream's auth token (tokens do not survive an etcd restart): get a new one first. */
  private staleToken = false;

  constructor(
    private readonly client: Etcd3,
    prefix: string,
    fromRevision: number,
    private readonly handlers: LeaseWatchHandlers,
    private readonly createTimeoutMs: number,
    private readonly backoffMaxMs: number,
    private readonly onDone: () => void,
  ) {
    this.next = fromRevision;
    this.range = Range.prefix(prefix);
  }

  open(): void {
    if (this.stopped) return;
    if (this.staleToken) {
      this.staleToken = false;
      // A unary call that meets an invalid token makes etcd3 authenticate again; the stream then uses the new one.
      void this.client.kv
        .range({ key: this.range.start, range_end: this.range.end, count_only: true, limit: 1 })
        .catch(() => undefined)
        .then(() => this.open());
      return;
    }
    this.client.watchClient.watch().then(
      (stream) => {
        if (this.stopped) {
          this.closeStream(stream);
          return;
        }
        this.stream = stream;
        stream.on('data', (res: IWatchResponse) => this.onData(stream, res));
        stream.on('error', (err: Error) => this.broken(stream, err));
        stream.on('end', () => this.broken(stream, new Error('watch stream ended')));
        stream.write({
          create_request: { key: this.range.start, range_end: this.range.end, start_revision: this.next, progress_notify: true },
        });
        // A watch that is never confirmed (server unreachable mid-connect) must not look alive forever.
        this.createTimer = setTimeout(() => this.broken(stream, new Error(`watch not confirmed within ${this.createTimeoutMs} ms`)), this.createTimeoutMs);
      },
      (err: Error) => this.broken(undefined, err),
    );
  }

  private onData(stream: Duplex, res: IWatchResponse): void {
    if (stream !== this.stream) return;
    if (Number(res.compact_revision) > 0) {
      this.finish();
      this.handlers.onCompacted(Number(res.compact_revision));
      return;
    }
    if (res.canceled) {
      this.broken(stream, new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`));
      return;
    }
    if (res.created) {
      clearTimeout(this.createTimer);
      this.backoffMs = 100;
      this.handlers.onConnected?.();
    }
    const events: LeaseWatchEvent[] = [];
    for (const ev of res.events ?? []) {
      const rev = Number(ev.kv.mod_revision);
      this.next = Math.max(this.next, rev + 1);
      if (String(ev.type).toUpperCase() === 'DELETE') {
        const key = ev.kv.key.toString();
        events.push({ type: 'delete', key, subnet: keyToSubnet(key), revision: rev });
      } else {
        events.push({ type: 'put', record: toRecord(ev.kv) });
      }
    }
    // Progress notifications (no events) are only sent to caught-up watchers: safe to move past them.
    if (events.length === 0 && !res.created) this.next = Math.max(this.next, Number(res.header.revision) + 1);
    if (events.length > 0) this.handlers.onEvents(events);
  }

  private broken(stream: Duplex | undefined, err: Error): void {
    if (this.stopped || stream !== this.stream) return;
    if (/invalid auth token/i.test(err.message)) this.staleToken = true;
    this.stream = undefined;
    clearTimeout(this.createTimer);
    if (stream) this.closeStream(stream);
    this.handlers.onDisconnected?.(err);
    this.retryTimer = setTimeout(() => this.open(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, this.backoffMaxMs);
  }

  private closeStream(stream: Duplex): void {
    // Half-close first: etcd3 only marks the connection failed for errors on still-writable streams,
    // and our own cancel must not tear down the channel other calls are using.
    (stream as unknown as NodeJS.EventEmitter).on('error', () => undefined);
    try {
      stream.end();
      stream.cancel();
    } catch {
      // already closed
    }
  }

  private finish(): void {
    this.stopped = true;
    clearTimeout(this.createTimer);
    clearTimeout(this.retryTimer);
    const s = this.stream;
    this.stream = undefined;
    if (s) this.closeStream(s);
    this.onDone();
  }

  cancel(): void {
    if (!this.stopped) this.finish();
  }
}
