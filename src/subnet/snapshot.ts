// The daemon's last known control-plane state on disk: the network config, our lease and every lease
// record with its etcd revisions, so a restart while etcd is down can keep forwarding. The file is
// checksummed and checked against what it is loaded for; anything doubtful is ignored, never trusted.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Packr } from 'msgpackr';
import { cidrEquals, formatCidr, isIPv4, parseCidr, type Cidr } from '../net/ip';
import { ConfigError, parseNetworkConfig, subnetFitsConfig } from './config';
import { keyToSubnet, leaseKey } from './lease';
import type { LeaseRecord } from './registry';
import type { LeaseAttrs, NetworkConfig } from './types';

/** Bumped whenever the body's shape changes; other versions are ignored (not migrated). */
export const SNAPSHOT_VERSION = 1;
const MAGIC = Buffer.from('VXNETSNP', 'ascii');
// magic, u32 version, u32 body length, sha256 of the body.
const HEADER_BYTES = MAGIC.length + 4 + 4 + 32;
/** A snapshot of 10,000 leases is ~2 MB; anything far larger is not ours. */
const MAX_BODY_BYTES = 256 << 20;

/** Our own lease as last written to etcd. */
export interface SnapshotOwnLease {
  subnet: Cidr;
  modRevision: number;
  /** ms since the epoch. */
  expiration: number;
  attrs: LeaseAttrs;
}

export interface Snapshot {
  version: number;
  /** ms since the epoch. */
  savedAt: number;
  /** --etcd-prefix the state was read under. */
  prefix: string;
  /** <prefix>/config exactly as read from etcd. */
  configText: string;
  /** etcd store revision every record reflects (watch from revision + 1). */
  revision: number;
  own: SnapshotOwnLease;
  /** Every key under <prefix>/subnets/, ours included. */
  records: LeaseRecord[];
}

/** Why a snapshot file was not used; `file` names it for the one warning the daemon logs. */
export class SnapshotError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`snapshot ${file}: ${reason}`);
    this.name = 'SnapshotError';
  }
}

const packr = new Packr({ useRecords: false, mapsAsObjects: true });

/** The snapshot file for a subnet file: `<state-dir>/<subnet file name>.vxnet-snapshot`. */
export function snapshotPath(stateDir: string, subnetFile: string): string {
  return path.join(stateDir, `${path.basename(subnetFile)}.vxnet-snapshot`);
}

/** The file bytes: header (magic, version, length, sha256) then the msgpack body. */
export function encodeSnapshot(snap: Omit<Snapshot, 'version'>): Buffer {
  const body = packr.pack({
    version: SNAPSHOT_VERSION,
    savedAt: snap.savedAt,
    prefix: snap.prefix,
    configText: snap.configText,
    revision: snap.revision,
    own: { subnet: formatCidr(snap.own.subnet), modRevision: snap.own.modRevision, expiration: snap.own.expiration, attrs: snap.own.attrs },
    records: snap.records.map((r) => [r.key, r.value, r.createRevision, r.modRevision, r.leaseId]),
  });
  const head = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(head, 0);
  head.writeUInt32BE(SNAPSHOT_VERSION, MAGIC.length);
  head.writeUInt32BE(body.length, MAGIC.length + 4);
  createHash('sha256').update(body).digest().copy(head, MAGIC.length + 8);
  return Buffer.concat([head, body]);
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isRev = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses and checks the file bytes; throws SnapshotError (with `file`) for anything but a whole, well-formed snapshot. */
export function decodeSnapshot(buf: Buffer, file = '(buffer)'): Snapshot {
  const bad = (reason: string): never => {
    throw new SnapshotError(file, reason);
  };
  if (buf.length < HEADER_BYTES || !buf.subarray(0, MAGIC.length).equals(MAGIC)) bad('not a vxnet snapshot (bad magic)');
  const version = buf.readUInt32BE(MAGIC.length);
  if (version !== SNAPSHOT_VERSION) bad(`format version ${version}, this vxnet reads ${SNAPSHOT_VERSION}`);
  const length = buf.readUInt32BE(MAGIC.length + 4);
  if (length > MAX_BODY_BYTES) bad(`body length ${length} is implausible`);
  if (buf.length !== HEADER_BYTES + length) bad(`truncated or padded: ${buf.length - HEADER_BYTES} body bytes, header says ${length}`);
  const body = buf.subarray(HEADER_BYTES);
  if (!createHash('sha256').update(body).digest().equals(buf.subarray(MAGIC.length + 8, HEADER_BYTES))) bad('checksum mismatch');
  let doc: unknown;
  try {
    doc = packr.unpack(body);
  } catch (err) {
    bad(`undecodable body: ${(err as Error).message}`);
  }
  if (!isObj(doc)) return bad('body is not a map');
  const { savedAt, prefix, configText, revision, own, records } = doc;
  if (doc.version !== SNAPSHOT_VERSION) bad(`body version ${String(doc.version)}`);
  if (typeof savedAt !== 'number' || !Number.isFinite(savedAt)) bad('savedAt missing');
  if (typeof prefix !== 'string' || !prefix.startsWith('/')) bad('prefix missing');
  if (typeof configText !== 'string') bad('configText missing');
  if (!isRev(revision) || (revision as number) < 1) bad('revision missing');
  if (!isObj(own)) return bad('own lease missing');
  let ownSubnet: Cidr;
  try {
    ownSubnet = parseCidr(String(own.subnet), true);
  } catch {
    return bad(`own subnet ${JSON.stringify(own.subnet)} is not a CIDR`);
  }
  if (!isRev(own.modRevision) || typeof own.expiration !== 'number') bad('own lease revision/expiration missing');
  const attrs = own.attrs;
  if (!isObj(attrs) || typeof attrs.publicIp !== 'string' || !isIPv4(attrs.publicIp) || typeof attrs.backendType !== 'string') bad('own lease attrs missing');
  if (!Array.isArray(records)) return bad('records missing');
  const out: LeaseRecord[] = [];
  for (const r of records as unknown[]) {
    if (!Array.isArray(r) || r.length !== 5) return bad('a record is not [key, value, createRevision, modRevision, leaseId]');
    const [key, value, createRevision, modRevision, leaseId] = r as unknown[];
    if (typeof key !== 'string' || typeof value !== 'string' || !isRev(createRevision) || !isRev(modRevision) || typeof leaseId !== 'string') {
      return bad(`record ${JSON.stringify(key)} is malformed`);
    }
    if (!key.startsWith(`${prefix as string}/subnets/`)) bad(`record ${key} is not under ${prefix as string}/subnets/`);
    out.push({ key, subnet: keyToSubnet(key), value, createRevision, modRevision, leaseId });
  }
  return {
    version,
    savedAt: savedAt as number,
    prefix: prefix as string,
    configText: configText as string,
    revision: revision as number,
    own: { subnet: ownSubnet, modRevision: own.modRevision as number, expiration: own.expiration as number, attrs: attrs as unknown as LeaseAttrs },
    records: out,
  };
}

/** What the loader knows independently of the snapshot: a snapshot that disagrees with it is foreign. */
export interface SnapshotExpectations {
  prefix: string;
  /** The address this host publishes now. */
  publicIp: string;
  /** Network and subnet of the subnet file the same run wrote, when there is one. */
  subnetEnv?: { network: Cidr; subnet: Cidr };
}

/** Checks a decoded snapshot against this daemon's settings; returns its parsed config or throws SnapshotError. */
export function checkSnapshot(snap: Snapshot, expect: SnapshotExpectations, file = '(buffer)'): NetworkConfig {
  const bad = (reason: string): never => {
    throw new SnapshotError(file, reason);
  };
  if (snap.prefix !== expect.prefix) bad(`made for --etcd-prefix ${snap.prefix}, not ${expect.prefix}`);
  let config: NetworkConfig;
  try {
    config = parseNetworkConfig(snap.configText);
  } catch (err) {
    return bad(`its network config is invalid: ${err instanceof ConfigError ? err.message : (err as Error).message}`);
  }
  if (!subnetFitsConfig(config, snap.own.subnet)) bad(`own subnet ${formatCidr(snap.own.subnet)} does not fit its network config`);
  if (snap.own.attrs.publicIp !== expect.publicIp) bad(`made for public IP ${snap.own.attrs.publicIp}, this host publishes ${expect.publicIp}`);
  const ownKey = leaseKey(snap.prefix, snap.own.subnet);
  if (!snap.records.some((r) => r.key === ownKey)) bad(`own lease ${ownKey} is not among its records`);
  if (snap.records.some((r) => r.modRevision > snap.revision)) bad(`a record is newer than the snapshot revision ${snap.revision}`);
  const env = expect.subnetEnv;
  if (!env) bad('there is no subnet file from the run that wrote it');
  else {
    if (!cidrEquals(env.network, config.network)) bad(`network ${formatCidr(config.network)} differs from the subnet file's ${formatCidr(env.network)}`);
    if (!cidrEquals(env.subnet, snap.own.subnet)) bad(`subnet ${formatCidr(snap.own.subnet)} differs from the subnet file's ${formatCidr(env.subnet)}`);
  }
  return config;
}

/** Reads a snapshot file: undefined when absent, SnapshotError when unusable. */
export async function readSnapshot(file: string): Promise<Snapshot | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SnapshotError(file, `unreadable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return decodeSnapshot(buf, file);
}

/** Removes temp files a killed writer (kill -9 mid-write) left beside `file`; returns how many. */
export async function removeStaleTemps(file: string): Promise<number> {
  const dir = path.dirname(file);
  const base = path.basename(file).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`^\\.${base}\\.(\\d+)\\.[0-9a-f]{8}$`);
  let removed = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const m = re.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    if (await unlink(path.join(dir, name)).then(() => true, () => false)) removed++;
  }
  return removed;
}

/** Writes atomically: a temp file in the same directory, fsync, rename, fsync of the directory. */
export async function writeSnapshot(file: string, snap: Omit<Snapshot, 'version'>): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(encodeSnapshot(snap));
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  // The rename itself must survive a crash too.
  const dh = await open(dir, 'r').catch(() => undefined);
  await dh?.sync().catch(() => undefined);
  await dh?.close().catch(() => undefined);
}

/**
 * Writes the state whenever asked, coalescing bursts: at most one write in flight, and one more after
 * it when the state changed meanwhile. A failing write is logged once until a write succeeds again.
 */
export class SnapshotWriter {
  private writing = false;
  private again = false;
  private failing = false;
  private idle: Promise<void> = Promise.resolve();

  constructor(
    readonly file: string,
    private readonly state: () => Omit<Snapshot, 'version'> | undefined,
    private readonly onError: (err: Error) => void,
  ) {}

  /** Schedules a write of the current state. */
  schedule(): void {
    if (this.writing) {
      this.again = true;
      return;
    }
    this.writing = true;
    this.idle = (async () => {
      do {
        this.again = false;
        // Lets a burst of changes in this tick land in one write.
        await new Promise((r) => setImmediate(r));
        const snap = this.state();
        if (!snap) continue;
        try {
          await writeSnapshot(this.file, snap);
          this.failing = false;
        } catch (err) {
          if (!this.failing) this.onError(err as Error);
          this.failing = true;
        }
      } while (this.again);
      this.writing = false;
    })();
  }

  /** Resolves when no write is pending. */
  flush(): Promise<void> {
    return this.idle;
  }
}
