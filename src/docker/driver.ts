// vxnet as a Docker network driver and IPAM driver (libnetwork's remote protocol, src/docker/protocol.ts).
//
// IPAM: a pool is a vxnet network, identified by its range (dockerd tells the IPAM driver nothing
// else); asking for it creates the network's record in etcd if needed (VNI claimed in the same
// transaction) and leases this host a subnet of it, flannel's way (src/subnet/manager.ts). Container
// addresses come from that lease; its first address is the bridge, answered as the gateway.
//
// Driver: each Docker network gets a network namespace with a bridge and the network's TUN
// (src/docker/netns.ts, src/docker/datapath.ts); endpoints are veth pairs whose host end sits on the
// bridge. Join answers no gateway and a static route for the whole range via the bridge, so dockerd
// also attaches the container to docker_gwbridge for outbound traffic, as it does for its own overlay.
// The Docker network's name (dockerd does not tell drivers) is fetched from the Engine API after
// CreateNetwork and bound to the range in etcd: one name, one range, one VNI across all hosts.
import type { Logger } from '../backend/backend';
import { PeerFilter, Serial, stableVtepMac, vxlanPeerMac } from '../backend/common';
import type { ExternalInterface } from '../backend/backend';
import type { PeerRoute } from '../datapath';
import { type Cidr, cidrContains, cidrOverlaps, formatCidr, formatIPv4, parseCidr, parseIPv4 } from '../net/ip';
import { ConfigError, parseNetworkConfig } from '../subnet/config';
import { LeaseManager, SubnetsExhaustedError } from '../subnet/manager';
import type { Lease, LeaseAttrs, NetworkConfig } from '../subnet/types';
import type { DockerDatapath, DockerNetworkDatapath } from './datapath';
import type { EngineApi } from './engine';
import { AddressPool } from './ipam';
import { NS_TUN, type NetworkHost, vethNames } from './netns';
import {
  type Call,
  type CreateEndpointRequest,
  type CreateNetworkRequest,
  DockerRequestError,
  GATEWAY_ADDRESS_TYPE,
  type JoinRequest,
  OPT_DRIVER_MTU,
  OPT_ENABLE_IPV6,
  OPT_GENERIC,
  OPT_REQUEST_ADDRESS_TYPE,
  type ReleaseAddressRequest,
  type RequestAddressRequest,
  type RequestPoolRequest,
  ROUTE_NEXTHOP,
} from './protocol';
import { readState, type SavedState, writeState } from './state';
import { type NetworkRecord, type NetworkStore, networkKey, pickRange } from './store';
import type { DockerNetworkStatus, DockerStatus } from '../status';

/** The driver's name: `docker network create -d vxnet --ipam-driver vxnet`. */
export const DRIVER_NAME = 'vxnet';
export const LOCAL_ADDRESS_SPACE = 'vxnet-local';
export const GLOBAL_ADDRESS_SPACE = 'vxnet-global';
/** IPAM option: prefix length of each host's lease (`--ipam-opt vxnet.subnet-len=26`). */
export const OPT_SUBNET_LEN = 'vxnet.subnet-len';
const IPAM_OPTIONS = [OPT_SUBNET_LEN];
const POOL_ID_PREFIX = 'vxnet/';

export interface DriverOptions {
  store: NetworkStore;
  host: NetworkHost;
  datapath: DockerDatapath;
  /** The Engine API of the local dockerd (network names, --docker-sync-networks); may be absent. */
  engine?: EngineApi;
  iface: ExternalInterface;
  log: Logger;
  /** The local state file. */
  stateFile: string;
  /** TTL and renew margin of each network's lease (the daemon's). */
  leaseTtlSeconds: number;
  renewMarginSeconds?: number;
  /** VNIs no Docker network may take (the daemon's own flannel network). */
  reservedVnis: number[];
  /** Ranges no auto-picked range may overlap (the daemon's flannel network). */
  reservedRanges: Cidr[];
  /** Where ranges come from for networks created without --subnet, and their size. */
  defaultPool: Cidr;
  defaultPoolPrefixLen: number;
  /** Create here, through the Engine API, the Docker networks other hosts created (and remove removed ones). */
  syncNetworks: boolean;
  /** How long RequestPool waits for etcd before answering an error (default 10 s). */
  acquireTimeoutMs?: number;
  /** Period of the network sync's retry (default 5 s). */
  syncPeriodMs?: number;
}

/** One vxnet network this host holds a pool (and lease) of. */
class Pool {
  manager: LeaseManager | undefined;
  lease: Cidr | undefined;
  addresses: AddressPool | undefined;
  peers: Lease[] = [];
  readonly filter: PeerFilter<PeerRoute>;
  /** Set while the lease cannot be had (etcd down at restart): requests answer this. */
  error: string | undefined;
  /** DeleteNetwork came before ReleasePool (some libnetwork versions order them so): a user's rm. */
  networkRemoved = false;
  ready: Promise<void> = Promise.resolve();

  constructor(
    readonly key: string,
    public record: NetworkRecord,
    readonly config: NetworkConfig,
    readonly vtepMac: string,
    log: Logger,
    port: () => number,
  ) {
    this.filter = new PeerFilter<PeerRoute>(log, (l) => {
      const mac = vxlanPeerMac(l);
      return typeof mac === 'string' ? { subnet: l.subnet, publicIp: l.attrs.publicIp, port: port(), vtepMac: mac } : mac;
    });
  }

  get label(): string {
    return this.record.name ? `${this.record.name} (${formatCidr(this.record.network)})` : formatCidr(this.record.network);
  }
}

interface Endpoint {
  id: string;
  networkId: string;
  address: number;
  macAddress?: string;
  veth: { container: string; host: string };
  joined: boolean;
}

/** One Docker network on this host. */
class DockerNet {
  dp: DockerNetworkDatapath | undefined;
  readonly endpoints = new Map<string, Endpoint>();
  /** Why this network may not be used (its name belongs to another range in etcd). */
  conflict: string | undefined;

  constructor(
    readonly id: string,
    readonly key: string,
    readonly mtu: number,
    public name: string | undefined,
  ) {}
}

export type { DockerNetworkStatus, DockerStatus } from '../status';

function poolIdOf(key: string): string {
  return `${POOL_ID_PREFIX}${key}`;
}

export class DockerDriver {
  private readonly serial = new Serial();
  private readonly pools = new Map<string, Pool>();
  private readonly nets = new Map<string, DockerNet>();
  private stopped = false;
  private watch: { cancel(): void } | undefined;
  private syncTimer: NodeJS.Timeout | undefined;
  private syncing = false;
  private syncAgain = false;
  private lastSyncError: string | undefined;
  private remote: NetworkRecord[] = [];
  /** Keys of networks the sync is creating through the Engine API right now. */
  private readonly syncCreating = new Set<string>();
  /** Keys whose sync create was refused because the network went away meanwhile. */
  private readonly syncStale = new Set<string>();
  private readonly nameLookups = new Set<string>();
  socketPath = '';

  constructor(private readonly o: DriverOptions) {}

  // ---- lifecycle -------------------------------------------------------------------------------

  /**
   * Restores what the state file holds: pools (leases re-acquired in the background, the previous
   * subnet first), namespaces (re-created if missing), the TUN of each network, and endpoints. A
   * namespace on disk that no network owns is left by a crash: it is removed.
   */
  async start(): Promise<void> {
    const saved = readState(this.o.stateFile);
    const { records, revision } = await this.o.store.list().catch(() => ({ records: [] as NetworkRecord[], revision: 0 }));
    this.remote = records;
    const restoring = new Map<string, Promise<Pool>>();
    for (const sp of saved.pools) {
      const p = this.restorePool(sp.key, parseCidr(sp.subnet), sp.addresses, records);
      p.catch((err: Error) => {
        if (!this.stopped) this.o.log.error('cannot restore the pool of a docker network', { key: sp.key, error: err.message });
      });
      restoring.set(sp.key, p);
    }
    const keep = new Set<string>();
    for (const sn of saved.networks) {
      if (!restoring.has(sn.key)) {
        this.o.log.warn('dropping docker network without its pool from the state', { id: sn.id, key: sn.key });
        continue;
      }
      const net = new DockerNet(sn.id, sn.key, sn.mtu, sn.name);
      this.nets.set(sn.id, net);
      keep.add(sn.key);
    }
    for (const se of saved.endpoints) {
      const net = this.nets.get(se.networkId);
      if (!net) continue;
      net.endpoints.set(se.id, { id: se.id, networkId: se.networkId, address: parseIPv4(se.address), macAddress: se.macAddress, veth: vethNames(se.id), joined: se.joined });
    }
    for (const key of this.o.host.listNetworks()) {
      if (!keep.has(key)) {
        this.o.log.info('removing a docker network namespace no network owns (left by a crash)', { key });
        await this.o.host.removeNetwork(key).catch((err) => this.o.log.warn('could not remove namespace', { key, error: (err as Error).message }));
      }
    }
    // Namespaces and TUNs come back once each pool has its lease again (at once when etcd answers).
    for (const net of this.nets.values()) {
      void (restoring.get(net.key) as Promise<Pool>)
        .then((pool) => this.serial.run(() => this.attach(net, pool)))
        .catch((err) => this.o.log.error('cannot restore docker network', { id: net.id.slice(0, 12), error: (err as Error).message }));
      if (!net.name) this.lookupName(net);
    }
    this.watch = this.o.store.watch(revision + 1, () => this.onStoreChange());
    if (this.o.syncNetworks) this.scheduleSync(0);
    this.o.log.info('docker driver restored', { pools: saved.pools.length, networks: this.nets.size, endpoints: saved.endpoints.length });
  }

  /**
   * A pool of the saved state: its record (made again with the same range if it went while we were
   * down: every other host left and our lease expired) and our lease, the previous subnet first.
   * Retries until etcd answers; requests meanwhile answer that the lease is not back yet.
   */
  private async restorePool(key: string, previous: Cidr, addresses: string[], listed: NetworkRecord[]): Promise<Pool> {
    const network = parseCidr(key.replace('-', '/'));
    const placeholder: NetworkRecord = { key, network, subnetLen: previous.prefixLen, options: {}, name: '', vni: 0, deleted: false, modRevision: 0 };
    const pending = new Pool(key, placeholder, this.configOf(network, previous.prefixLen, 1), '', this.o.log, () => this.o.datapath.port);
    pending.error = 'restoring the lease (waiting for etcd)';
    this.pools.set(key, pending);
    let record = listed.find((r) => r.key === key);
    for (let delay = 250; !record; delay = Math.min(delay * 2, 10_000)) {
      if (this.stopped || this.pools.get(key) !== pending) throw new Error('stopped');
      try {
        record = (await this.o.store.get(key)) ?? (await this.ensureRecord(network, previous.prefixLen, {}));
      } catch (err) {
        pending.error = `restoring the lease: ${(err as Error).message}`;
        await new Promise((r) => setTimeout(r, delay));
      }
    }
    if (this.stopped || this.pools.get(key) !== pending) throw new Error('stopped');
    const pool = this.newPool(record);
    pool.error = 'restoring the lease';
    try {
      await this.startLease(pool, previous, addresses);
    } catch (err) {
      pool.error = (err as Error).message;
      throw err;
    }
    return pool;
  }

  /** Stops leases and TUNs; keeps namespaces, etcd leases and the state (a restart picks them up). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.cancel();
    clearTimeout(this.syncTimer);
    await this.serial.run(async () => {
      for (const net of this.nets.values()) {
        await net.dp?.close().catch((err: Error) => this.o.log.warn('closing a docker network TUN failed', { id: net.id.slice(0, 12), error: err.message }));
        net.dp = undefined;
      }
      for (const pool of this.pools.values()) await pool.manager?.stop();
      this.save();
    });
  }

  // ---- dispatch --------------------------------------------------------------------------------

  handle(call: Call, body: Record<string, unknown>): Promise<unknown> {
    switch (call) {
      case 'Plugin.Activate':
        return Promise.resolve({ Implements: ['NetworkDriver', 'IpamDriver'] });
      case 'NetworkDriver.GetCapabilities':
        // "local": each host's dockerd keeps its own network object; "global" needs swarm.
        return Promise.resolve({ Scope: 'local', ConnectivityScope: 'global' });
      case 'IpamDriver.GetCapabilities':
        return Promise.resolve({ RequiresMACAddress: false, RequiresRequestReplay: false });
      case 'IpamDriver.GetDefaultAddressSpaces':
        return Promise.resolve({ LocalDefaultAddressSpace: LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: GLOBAL_ADDRESS_SPACE });
      case 'NetworkDriver.DiscoverNew':
      case 'NetworkDriver.DiscoverDelete':
      // Outbound traffic goes through docker_gwbridge, which dockerd programs itself.
      case 'NetworkDriver.ProgramExternalConnectivity':
      case 'NetworkDriver.RevokeExternalConnectivity':
        return Promise.resolve({});
      case 'NetworkDriver.AllocateNetwork':
      case 'NetworkDriver.FreeNetwork':
        throw new DockerRequestError('scope', 'vxnet is a local-scope driver; swarm network allocation is not supported');
      default:
        return this.serial.run(() => this.serialized(call, body));
    }
  }

  private async serialized(call: Call, body: Record<string, unknown>): Promise<unknown> {
    if (this.stopped) throw new DockerRequestError('vxnet', 'the daemon is stopping', 503);
    switch (call) {
      case 'IpamDriver.RequestPool':
        return this.requestPool(body as unknown as RequestPoolRequest);
      case 'IpamDriver.ReleasePool':
        return this.releasePool(String(body.PoolID ?? ''));
      case 'IpamDriver.RequestAddress':
        return this.requestAddress(body as unknown as RequestAddressRequest);
      case 'IpamDriver.ReleaseAddress':
        return this.releaseAddress(body as unknown as ReleaseAddressRequest);
      case 'NetworkDriver.CreateNetwork':
        return this.createNetwork(body as unknown as CreateNetworkRequest);
      case 'NetworkDriver.DeleteNetwork':
        return this.deleteNetwork(String(body.NetworkID ?? ''));
      case 'NetworkDriver.CreateEndpoint':
        return this.createEndpoint(body as unknown as CreateEndpointRequest);
      case 'NetworkDriver.EndpointOperInfo':
        return this.endpointOperInfo(String(body.NetworkID ?? ''), String(body.EndpointID ?? ''));
      case 'NetworkDriver.DeleteEndpoint':
        return this.deleteEndpoint(String(body.NetworkID ?? ''), String(body.EndpointID ?? ''));
      case 'NetworkDriver.Join':
        return this.join(body as unknown as JoinRequest);
      case 'NetworkDriver.Leave':
        return this.leave(String(body.NetworkID ?? ''), String(body.EndpointID ?? ''));
      default:
        throw new DockerRequestError('request', `unhandled call ${call}`, 404);
    }
  }

  // ---- IPAM ------------------------------------------------------------------------------------

  private parseSubnetLen(options: Record<string, string>, network: Cidr | undefined): number | undefined {
    const raw = options[OPT_SUBNET_LEN];
    if (raw === undefined) return undefined;
    if (!/^\d{1,2}$/.test(raw)) throw new DockerRequestError(`--ipam-opt ${OPT_SUBNET_LEN}`, `must be a prefix length such as 24, got ${JSON.stringify(raw)}`);
    const n = Number(raw);
    const min = network ? network.prefixLen + 2 : 2;
    if (n < min || n > 30) throw new DockerRequestError(`--ipam-opt ${OPT_SUBNET_LEN}`, `must be in ${min}..30${network ? ` for ${formatCidr(network)} (four host leases at least)` : ''}, got ${n}`);
    return n;
  }

  /** The network config of a record, as the lease manager takes it; errors name the option. */
  private configOf(network: Cidr, subnetLen: number | undefined, vni: number): NetworkConfig {
    try {
      return parseNetworkConfig(JSON.stringify({ Network: formatCidr(network), ...(subnetLen ? { SubnetLen: subnetLen } : {}), Backend: { Type: 'vxlan', VNI: vni } }));
    } catch (err) {
      if (err instanceof ConfigError) {
        const option = err.field === 'SubnetLen' ? `--ipam-opt ${OPT_SUBNET_LEN}` : '--subnet';
        throw new DockerRequestError(option, err.reason);
      }
      throw err;
    }
  }

  private async ensureRecord(network: Cidr, subnetLen: number | undefined, options: Record<string, string>): Promise<NetworkRecord> {
    // Validates before anything is written (VNI 0 is a placeholder for the check).
    const cfg = this.configOf(network, subnetLen, 1);
    const { record, created } = await this.o.store.ensure({ network, subnetLen: cfg.subnetLen, options }, this.o.reservedVnis);
    if (created) this.o.log.info('docker network created in etcd', { range: formatCidr(network), vni: record.vni, subnetLen: record.subnetLen });
    return record;
  }

  private newPool(record: NetworkRecord): Pool {
    const cfg = this.configOf(record.network, record.subnetLen, record.vni);
    const pool = new Pool(record.key, record, cfg, stableVtepMac(this.o.iface, record.vni), this.o.log, () => this.o.datapath.port);
    this.pools.set(record.key, pool);
    return pool;
  }

  private leaseAttrs(pool: Pool): LeaseAttrs {
    return { publicIp: this.o.iface.publicIp, backendType: 'vxlan', backendData: { VNI: pool.record.vni, VtepMAC: pool.vtepMac } };
  }

  /** Acquires (or re-acquires) this host's lease of the pool and follows its peers. */
  private async startLease(pool: Pool, previous: Cidr | undefined, addresses: string[] = []): Promise<void> {
    const manager = new LeaseManager(this.o.store.leaseRegistry(pool.key), pool.config, this.leaseAttrs(pool), {
      ttlSeconds: this.o.leaseTtlSeconds,
      renewMarginSeconds: this.o.renewMarginSeconds,
      previousSubnet: previous,
      log: this.o.log,
    });
    pool.manager = manager;
    manager.on('lost', ({ subnet }) => this.o.log.error('another host took our subnet of a docker network', { network: pool.label, subnet: formatCidr(subnet) }));
    const lease = await manager.acquire();
    pool.lease = lease.subnet;
    pool.addresses = new AddressPool(lease.subnet);
    for (const a of addresses) {
      try {
        if (!pool.addresses.restore(parseIPv4(a))) this.o.log.warn('saved address does not fit the lease; dropped', { network: pool.label, address: a });
      } catch {
        // A malformed saved address: dropped.
      }
    }
    pool.error = undefined;
    await manager.run((peers) => {
      pool.peers = peers;
      this.applyPeers(pool);
    });
  }

  private applyPeers(pool: Pool, only?: DockerNet): void {
    const routes = [...pool.filter.apply(pool.peers).values()].map((p) => p.value);
    for (const net of only ? [only] : this.nets.values()) {
      if (net.key !== pool.key || !net.dp) continue;
      try {
        net.dp.setPeers(routes);
      } catch (err) {
        this.o.log.error('docker network: setting peers failed', { network: pool.label, error: (err as Error).message });
      }
    }
  }

  private async requestPool(req: RequestPoolRequest): Promise<unknown> {
    if (req.V6) throw new DockerRequestError('--ipv6', 'vxnet networks carry IPv4 only');
    if (req.SubPool) throw new DockerRequestError('--ip-range', 'not supported: each host hands out addresses from its own lease of the range');
    const options = { ...(req.Options ?? {}) };
    for (const k of Object.keys(options)) {
      if (!IPAM_OPTIONS.includes(k)) throw new DockerRequestError(`--ipam-opt ${k}`, `unknown vxnet IPAM option (known: ${IPAM_OPTIONS.join(', ')})`);
    }
    let network: Cidr;
    if (req.Pool) {
      try {
        network = parseCidr(req.Pool, true);
      } catch (err) {
        throw new DockerRequestError('--subnet', `${(err as Error).message}`);
      }
    } else {
      const { records } = await this.o.store.list();
      const taken = [...records.map((r) => r.network), ...this.o.reservedRanges];
      const picked = pickRange(this.o.defaultPool, this.o.defaultPoolPrefixLen, taken);
      if (!picked) throw new DockerRequestError('--subnet', `no free /${this.o.defaultPoolPrefixLen} left in ${formatCidr(this.o.defaultPool)} (--docker-default-pool); give the network a --subnet`);
      network = picked;
    }
    const subnetLen = this.parseSubnetLen(options, network);
    const key = networkKey(network);
    const existing = this.pools.get(key);
    if (existing) {
      // The sync's view said dockerd has no such network: the user's rm of it is under way.
      if (this.syncCreating.has(key)) this.syncStale.add(key);
      throw new DockerRequestError('--subnet', `${formatCidr(network)} is already the range of vxnet network ${existing.label} on this host`);
    }
    const overlapsFlannel = this.o.reservedRanges.find((r) => cidrOverlaps(r, network));
    if (overlapsFlannel) throw new DockerRequestError('--subnet', `${formatCidr(network)} overlaps the daemon's flannel network ${formatCidr(overlapsFlannel)}`);
    let record = await this.ensureRecord(network, subnetLen, options).catch((err) => {
      if (err instanceof DockerRequestError) throw err;
      throw new DockerRequestError('etcd', (err as Error).message, 503);
    });
    if (subnetLen !== undefined && subnetLen !== record.subnetLen) {
      throw new DockerRequestError(`--ipam-opt ${OPT_SUBNET_LEN}`, `network ${formatCidr(network)} exists in etcd with ${OPT_SUBNET_LEN}=${record.subnetLen}; omit the option or give ${record.subnetLen}`);
    }
    if (record.deleted) {
      if (this.syncCreating.has(key)) {
        // The sync saw the network alive, then a `docker network rm` (here or on another host)
        // marked it deleted before dockerd asked for its pool: the sync must not bring it back.
        this.syncStale.add(key);
        throw new DockerRequestError('--subnet', `${formatCidr(network)} was removed (docker network rm) while the network sync created it here; not created`, 409);
      }
      // Created again by a user after a `docker network rm` elsewhere: it lives on.
      record = (await this.o.store.setDeleted(key, false).catch(() => undefined)) ?? record;
    }
    const pool = await this.acquirePool(record, undefined);
    this.o.log.info('docker pool acquired', { range: formatCidr(network), vni: record.vni, lease: formatCidr(pool.lease as Cidr) });
    return { PoolID: poolIdOf(key), Pool: formatCidr(network), Data: {} };
  }

  /** A pool for `record` with this host's lease, within the acquire timeout; nothing left on failure. */
  private async acquirePool(record: NetworkRecord, previous: Cidr | undefined): Promise<Pool> {
    const pool = this.newPool(record);
    const timeoutMs = this.o.acquireTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.startLease(pool, previous),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new DockerRequestError('etcd', `no lease of ${formatCidr(record.network)} within ${timeoutMs} ms: etcd unreachable`, 503)), timeoutMs))),
      ]);
    } catch (err) {
      await pool.manager?.stop();
      this.pools.delete(record.key);
      await this.o.store.removeIfUnused(record.key).catch(() => undefined);
      if (err instanceof SubnetsExhaustedError) throw new DockerRequestError('--subnet', `every host lease of ${formatCidr(record.network)} is taken (${err.message}); use a larger range or a longer ${OPT_SUBNET_LEN}`);
      if (err instanceof DockerRequestError) throw err;
      throw new DockerRequestError('etcd', (err as Error).message, 503);
    } finally {
      clearTimeout(timer);
    }
    this.save();
    return pool;
  }

  /**
   * The pool of `poolId`. dockerd keeps its networks across reboots but never asks again for their
   * pools; if this host's state is gone (a reboot emptied /run, the state file was removed), a pool
   * whose network is still in etcd is taken up again: the lease is the one etcd still has for our
   * public IP (so addresses dockerd holds stay valid), or a new one.
   */
  private async poolFor(poolId: string): Promise<Pool> {
    const key = poolId.startsWith(POOL_ID_PREFIX) ? poolId.slice(POOL_ID_PREFIX.length) : '';
    if (!this.pools.has(key) && key !== '') {
      const record = await this.o.store.get(key).catch(() => undefined);
      if (record) {
        this.o.log.warn('taking up a docker pool dockerd still uses but this host had no state for', { key, vni: record.vni });
        await this.acquirePool(record, undefined);
      }
    }
    return this.poolOf(poolId);
  }

  private poolOf(poolId: string): Pool {
    const key = poolId.startsWith(POOL_ID_PREFIX) ? poolId.slice(POOL_ID_PREFIX.length) : '';
    const pool = this.pools.get(key);
    if (!pool) throw new DockerRequestError('PoolID', `unknown vxnet pool ${JSON.stringify(poolId)}`, 404);
    if (!pool.addresses) throw new DockerRequestError('etcd', `the lease of ${pool.label} is not back yet (${pool.error ?? 'etcd unreachable'})`, 503);
    return pool;
  }

  private async releasePool(poolId: string): Promise<unknown> {
    const key = poolId.startsWith(POOL_ID_PREFIX) ? poolId.slice(POOL_ID_PREFIX.length) : '';
    const pool = this.pools.get(key);
    if (!pool) return {};
    await pool.manager?.stop();
    this.pools.delete(key);
    // The rm of a network that exists here (not an aborted create): with network sync, every host
    // removes it. Debian's dockerd 20.10 releases the pool before DeleteNetwork, some libnetwork
    // versions after it (networkRemoved).
    const removedByUser = pool.networkRemoved || [...this.nets.values()].some((n) => n.key === key);
    if (pool.lease) {
      await this.o.store
        .leaseRegistry(key)
        .deleteLease(pool.lease)
        .catch((err) => this.o.log.warn('could not delete our lease of a docker network; it expires by itself', { network: pool.label, error: (err as Error).message }));
    }
    if (removedByUser && this.o.syncNetworks && pool.record.name) {
      await this.o.store.setDeleted(key, true).catch(() => undefined);
    }
    const gone = await this.o.store.removeIfUnused(key).catch(() => false);
    this.o.log.info('docker pool released', { network: pool.label, lastHost: gone });
    this.save();
    return {};
  }

  private async requestAddress(req: RequestAddressRequest): Promise<unknown> {
    const pool = await this.poolFor(req.PoolID);
    const addrs = pool.addresses as AddressPool;
    if (req.Options?.[OPT_REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS_TYPE) {
      if (req.Address && req.Address.replace(/\/\d+$/, '') !== formatIPv4(addrs.gateway)) {
        throw new DockerRequestError(
          '--gateway',
          `vxnet's gateway on this host is the first address of its lease, ${formatIPv4(addrs.gateway)} (every host has its own); omit --gateway`,
        );
      }
      return { Address: addrs.withLen(addrs.gateway), Data: {} };
    }
    const ip = addrs.allocate(req.Address || undefined, pool.label);
    this.save();
    return { Address: addrs.withLen(ip), Data: {} };
  }

  private async releaseAddress(req: ReleaseAddressRequest): Promise<unknown> {
    const key = req.PoolID.startsWith(POOL_ID_PREFIX) ? req.PoolID.slice(POOL_ID_PREFIX.length) : '';
    const pool = this.pools.get(key);
    if (!pool?.addresses) return {};
    let ip: number;
    try {
      ip = parseIPv4(String(req.Address).replace(/\/\d+$/, ''));
    } catch {
      throw new DockerRequestError('Address', `${JSON.stringify(req.Address)} is not an IPv4 address`);
    }
    if (pool.addresses.release(ip)) this.save();
    return {};
  }

  // ---- NetworkDriver ---------------------------------------------------------------------------

  private async createNetwork(req: CreateNetworkRequest): Promise<unknown> {
    const id = String(req.NetworkID ?? '');
    if (!/^[0-9a-f]{12,64}$/i.test(id)) throw new DockerRequestError('NetworkID', `not a network id: ${JSON.stringify(id)}`);
    const opts = req.Options ?? {};
    if (opts[OPT_ENABLE_IPV6] === true || (req.IPv6Data?.length ?? 0) > 0) throw new DockerRequestError('--ipv6', 'vxnet networks carry IPv4 only');
    const v4 = req.IPv4Data ?? [];
    if (v4.length !== 1) throw new DockerRequestError('--subnet', `a vxnet network has exactly one IPv4 range, got ${v4.length}`);
    let range: Cidr;
    try {
      range = parseCidr(v4[0].Pool, true);
    } catch (err) {
      throw new DockerRequestError('--subnet', (err as Error).message);
    }
    const pool = this.pools.get(networkKey(range));
    if (!pool || !pool.addresses) {
      throw new DockerRequestError('--ipam-driver', `vxnet networks take their addresses from the vxnet IPAM driver: docker network create -d ${DRIVER_NAME} --ipam-driver ${DRIVER_NAME} ...`);
    }
    const gw = v4[0].Gateway ? v4[0].Gateway.replace(/\/\d+$/, '') : undefined;
    if (gw !== undefined && gw !== formatIPv4(pool.addresses.gateway)) {
      throw new DockerRequestError('--gateway', `must be this host's bridge address ${formatIPv4(pool.addresses.gateway)}, got ${gw}`);
    }
    const generic = (opts[OPT_GENERIC] ?? {}) as Record<string, unknown>;
    let mtu = this.o.datapath.mtu;
    for (const [k, v] of Object.entries(generic)) {
      if (k === OPT_DRIVER_MTU) {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 576 || n > this.o.datapath.mtu) {
          throw new DockerRequestError(`-o ${OPT_DRIVER_MTU}`, `must be a whole number in 576..${this.o.datapath.mtu} (the underlay MTU minus VXLAN's 50 bytes), got ${JSON.stringify(v)}`);
        }
        mtu = n;
      } else {
        throw new DockerRequestError(`-o ${k}`, `unknown vxnet driver option (known: ${OPT_DRIVER_MTU})`);
      }
    }
    for (const n of this.nets.values()) {
      if (n.key === pool.key) throw new DockerRequestError('--subnet', `${formatCidr(range)} is already Docker network ${n.name ?? n.id} on this host`);
    }
    const net = new DockerNet(id, pool.key, mtu, undefined);
    try {
      await this.attach(net, pool);
    } catch (err) {
      await net.dp?.close().catch(() => undefined);
      await this.o.host.removeNetwork(pool.key).catch(() => undefined);
      throw new DockerRequestError('vxnet', `cannot set up network ${formatCidr(range)}: ${(err as Error).message}`, 500);
    }
    this.nets.set(id, net);
    this.save();
    this.o.log.info('docker network up', { id: id.slice(0, 12), range: formatCidr(range), vni: pool.record.vni, lease: formatCidr(pool.lease as Cidr), mtu });
    this.lookupName(net);
    return {};
  }

  /** Namespace with bridge (created if missing) and the network's TUN on the datapath. */
  private async attach(net: DockerNet, pool: Pool): Promise<void> {
    if (this.stopped || net.dp) return;
    const lease = pool.lease as Cidr;
    await this.o.host.createNetwork(pool.key, `${formatIPv4(pool.addresses?.gateway ?? 0)}/${lease.prefixLen}`, net.mtu);
    net.dp = await this.o.datapath.addNetwork({
      vni: pool.record.vni,
      tunName: NS_TUN,
      netnsPath: this.o.host.nsPath(pool.key),
      mtu: net.mtu,
      network: pool.record.network,
      localSubnet: lease,
      vtepMac: pool.vtepMac,
    });
    this.applyPeers(pool, net);
  }

  private async deleteNetwork(id: string): Promise<unknown> {
    const net = this.nets.get(id);
    if (!net) return {};
    await net.dp?.close().catch((err: Error) => this.o.log.warn('closing a docker network TUN failed', { id: id.slice(0, 12), error: err.message }));
    net.dp = undefined;
    for (const ep of net.endpoints.values()) await this.o.host.deleteEndpoint(net.key, ep.id).catch(() => undefined);
    await this.o.host.removeNetwork(net.key);
    this.nets.delete(id);
    this.save();
    const pool = this.pools.get(net.key);
    if (pool) pool.networkRemoved = true;
    // ReleasePool came first; if it could not remove the record then (a lease left), try again.
    else await this.o.store.removeIfUnused(net.key).catch(() => false);
    this.o.log.info('docker network removed', { id: id.slice(0, 12), name: net.name });
    return {};
  }

  private netOf(networkId: string): DockerNet {
    const net = this.nets.get(networkId);
    if (!net) throw new DockerRequestError('NetworkID', `unknown vxnet network ${JSON.stringify(networkId)}`, 404);
    return net;
  }

  /**
   * A network dockerd has but this host has no state for (see poolFor): its namespace and TUN made
   * again for the pool that holds the endpoint's address.
   */
  private async adoptNetwork(networkId: string, address: string | undefined): Promise<DockerNet | undefined> {
    if (!/^[0-9a-f]{12,64}$/i.test(networkId) || !address) return undefined;
    let ip: number;
    try {
      ip = parseIPv4(address.replace(/\/\d+$/, ''));
    } catch {
      return undefined;
    }
    const pool = [...this.pools.values()].find((p) => p.lease && cidrContains(p.lease, ip));
    if (!pool || [...this.nets.values()].some((n) => n.key === pool.key)) return undefined;
    const net = new DockerNet(networkId, pool.key, this.o.datapath.mtu, undefined);
    try {
      await this.attach(net, pool);
    } catch (err) {
      await net.dp?.close().catch(() => undefined);
      throw new DockerRequestError('vxnet', `cannot set up network ${formatCidr(pool.record.network)} again: ${(err as Error).message}`, 500);
    }
    this.nets.set(networkId, net);
    this.save();
    this.o.log.warn('took up a docker network this host had no state for', { id: networkId.slice(0, 12), range: formatCidr(pool.record.network) });
    this.lookupName(net);
    return net;
  }

  private async createEndpoint(req: CreateEndpointRequest): Promise<unknown> {
    const networkId = String(req.NetworkID ?? '');
    const net = this.nets.get(networkId) ?? (await this.adoptNetwork(networkId, req.Interface?.Address)) ?? this.netOf(networkId);
    if (net.conflict) throw new DockerRequestError('network', net.conflict, 409);
    const id = String(req.EndpointID ?? '');
    if (!/^[0-9a-f]{10,64}$/i.test(id)) throw new DockerRequestError('EndpointID', `not an endpoint id: ${JSON.stringify(id)}`);
    const pool = this.pools.get(net.key);
    if (!pool?.lease) throw new DockerRequestError('etcd', 'the network has no lease on this host right now (etcd unreachable?)', 503);
    const ifc = req.Interface ?? {};
    if (ifc.AddressIPv6) throw new DockerRequestError('--ip6', 'vxnet networks carry IPv4 only');
    if (!ifc.Address) throw new DockerRequestError('--ipam-driver', `the endpoint has no IPv4 address: create the network with --ipam-driver ${DRIVER_NAME}`);
    let address: number;
    try {
      address = parseIPv4(ifc.Address.replace(/\/\d+$/, ''));
    } catch (err) {
      throw new DockerRequestError('--ip', (err as Error).message);
    }
    if (!cidrContains(pool.lease, address)) throw new DockerRequestError('--ip', `${formatIPv4(address)} is not in this host's lease ${formatCidr(pool.lease)}`);
    const mac = ifc.MacAddress || undefined;
    if (mac !== undefined && !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new DockerRequestError('--mac-address', `not a MAC address: ${JSON.stringify(mac)}`);
    if (net.endpoints.has(id)) await this.o.host.deleteEndpoint(net.key, id).catch(() => undefined);
    const veth = await this.o.host.createEndpoint(net.key, id, net.mtu);
    if (mac) {
      const { ip } = await import('../net/iproute');
      await ip('link', 'set', 'dev', veth.container, 'address', mac).catch(async (err: Error) => {
        await this.o.host.deleteEndpoint(net.key, id).catch(() => undefined);
        throw new DockerRequestError('--mac-address', err.message);
      });
    }
    net.endpoints.set(id, { id, networkId: net.id, address, macAddress: mac, veth, joined: false });
    this.save();
    return { Interface: {} };
  }

  private endpointOf(net: DockerNet, endpointId: string): Endpoint {
    const ep = net.endpoints.get(endpointId);
    if (!ep) throw new DockerRequestError('EndpointID', `unknown endpoint ${JSON.stringify(endpointId)} in network ${net.name ?? net.id}`, 404);
    return ep;
  }

  private async endpointOperInfo(networkId: string, endpointId: string): Promise<unknown> {
    const net = this.netOf(networkId);
    const ep = this.endpointOf(net, endpointId);
    return { Value: { 'vxnet.address': formatIPv4(ep.address), 'vxnet.veth': ep.veth.host, 'vxnet.joined': ep.joined } };
  }

  private async deleteEndpoint(networkId: string, endpointId: string): Promise<unknown> {
    const net = this.nets.get(networkId);
    if (!net) return {};
    await this.o.host.deleteEndpoint(net.key, endpointId);
    if (net.endpoints.delete(endpointId)) this.save();
    return {};
  }

  private async join(req: JoinRequest): Promise<unknown> {
    const net = this.netOf(String(req.NetworkID ?? ''));
    if (net.conflict) throw new DockerRequestError('network', net.conflict, 409);
    const ep = this.endpointOf(net, String(req.EndpointID ?? ''));
    const pool = this.pools.get(net.key) as Pool;
    ep.joined = true;
    this.save();
    return {
      InterfaceName: { SrcName: ep.veth.container, DstPrefix: 'eth' },
      // No Gateway: the default route stays Docker's (docker_gwbridge); the whole range goes via our bridge.
      StaticRoutes: [{ Destination: formatCidr(pool.record.network), RouteType: ROUTE_NEXTHOP, NextHop: formatIPv4(pool.addresses?.gateway ?? 0) }],
      DisableGatewayService: false,
    };
  }

  private async leave(networkId: string, endpointId: string): Promise<unknown> {
    // Unknown: nothing of it here to leave (dockerd cleans up after a restart with what it has).
    const ep = this.nets.get(networkId)?.endpoints.get(endpointId);
    if (ep) {
      ep.joined = false;
      this.save();
    }
    return {};
  }

  // ---- names and sync --------------------------------------------------------------------------

  /**
   * dockerd stores the network only after CreateNetwork returns, so its name is fetched afterwards
   * (a few tries), then claimed in etcd for the range. A name another range holds marks the network
   * as conflicting: its endpoints are refused with the reason.
   */
  private lookupName(net: DockerNet): void {
    const engine = this.o.engine;
    if (!engine || this.nameLookups.has(net.id)) return;
    this.nameLookups.add(net.id);
    void (async () => {
      for (let attempt = 0; attempt < 60 && !this.stopped && this.nets.get(net.id) === net; attempt++) {
        try {
          const info = await engine.getNetwork(net.id);
          if (info) {
            await this.serial.run(() => this.bindName(net, info.Name));
            return;
          }
        } catch (err) {
          if (attempt === 0) this.o.log.warn('docker network name lookup failed, retrying', { id: net.id.slice(0, 12), error: (err as Error).message });
        }
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 2000)));
      }
    })().finally(() => this.nameLookups.delete(net.id));
  }

  private async bindName(net: DockerNet, name: string): Promise<void> {
    if (this.nets.get(net.id) !== net) return;
    const pool = this.pools.get(net.key);
    const r = await this.o.store.bindName(net.key, name);
    if (r.ok) {
      net.name = name;
      if (pool) pool.record = r.record;
      net.conflict = undefined;
      this.o.log.info('docker network named', { name, range: formatCidr(r.record.network), vni: r.record.vni });
    } else {
      const holder = r.holder.replace(/\/config$/, '');
      net.name = name;
      net.conflict = `the name ${JSON.stringify(name)} belongs to vxnet network ${holder.replace('-', '/')} on other hosts, not to ${pool ? formatCidr(pool.record.network) : net.key}: remove this network and create it with --subnet ${holder.replace('-', '/')} (or give it another name)`;
      this.o.log.error('docker network name conflict', { name, error: net.conflict });
    }
    this.save();
  }

  private onStoreChange(): void {
    if (this.stopped) return;
    void this.o.store.list().then(
      ({ records }) => {
        this.remote = records;
        for (const rec of records) {
          const pool = this.pools.get(rec.key);
          if (pool && rec.vni === pool.record.vni) pool.record = rec;
        }
      },
      () => undefined,
    );
    if (this.o.syncNetworks) this.scheduleSync(200);
  }

  private scheduleSync(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.syncTimer);
    this.syncTimer = setTimeout(() => void this.sync(), delayMs);
  }

  /**
   * --docker-sync-networks: every named network in etcd exists in the local dockerd (created through
   * the Engine API, which then calls this driver as for a user's create), and every network removed
   * elsewhere is removed here once no container uses it. Runs outside the request queue: the Engine
   * API calls it makes come back to this driver.
   */
  private async sync(): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    const engine = this.o.engine;
    if (!engine) return;
    this.syncing = true;
    try {
      do {
        this.syncAgain = false;
        const { records } = await this.o.store.list();
        this.remote = records;
        const local = await engine.listNetworks(DRIVER_NAME);
        const problems: string[] = [];
        for (const rec of records) {
          if (!rec.name) continue;
          const mine = local.find((n) => n.Name === rec.name);
          if (rec.deleted) {
            if (mine) {
              await engine.deleteNetwork(mine.Id).then(
                () => this.o.log.info('docker network removed on another host; removed here too', { name: rec.name }),
                (err: Error) => problems.push(`remove ${rec.name}: ${err.message}`),
              );
            }
            continue;
          }
          if (mine) continue;
          const range = formatCidr(rec.network);
          if (local.some((n) => n.IPAM?.Config?.some((c) => c.Subnet === range))) continue;
          this.syncCreating.add(rec.key);
          const failed = await engine.createNetwork({ name: rec.name, driver: DRIVER_NAME, subnet: range, ipamOptions: { ...rec.options } }).then(
            () => undefined,
            (err: Error) => err,
          );
          this.syncCreating.delete(rec.key);
          if (this.syncStale.delete(rec.key)) {
            this.o.log.info('docker network removed while the sync created it here; not created', { name: rec.name, range });
            this.syncAgain = true;
          } else if (failed) {
            problems.push(`create ${rec.name}: ${failed.message}`);
          } else {
            this.o.log.info('docker network created here from etcd', { name: rec.name, range, vni: rec.vni });
          }
        }
        if (problems.length) {
          const msg = problems.join('; ');
          if (msg !== this.lastSyncError) this.o.log.warn('docker network sync incomplete; retrying', { error: msg });
          this.lastSyncError = msg;
        } else {
          this.lastSyncError = undefined;
        }
      } while (this.syncAgain && !this.stopped);
    } catch (err) {
      const msg = (err as Error).message;
      if (msg !== this.lastSyncError) this.o.log.warn('docker network sync failed; retrying', { error: msg });
      this.lastSyncError = msg;
    } finally {
      this.syncing = false;
      if (!this.stopped) this.scheduleSync(this.o.syncPeriodMs ?? 5000);
    }
  }

  // ---- state and status ------------------------------------------------------------------------

  private save(): void {
    const state: SavedState = {
      version: 1,
      pools: [...this.pools.values()]
        .filter((p) => p.lease)
        .map((p) => ({ key: p.key, subnet: formatCidr(p.lease as Cidr), addresses: (p.addresses?.allocated ?? []).map(formatIPv4) })),
      networks: [...this.nets.values()].map((n) => ({ id: n.id, key: n.key, mtu: n.mtu, ...(n.name ? { name: n.name } : {}) })),
      endpoints: [...this.nets.values()].flatMap((n) =>
        [...n.endpoints.values()].map((e) => ({ id: e.id, networkId: n.id, address: formatIPv4(e.address), ...(e.macAddress ? { macAddress: e.macAddress } : {}), joined: e.joined })),
      ),
    };
    try {
      writeState(this.o.stateFile, state);
    } catch (err) {
      this.o.log.error('cannot write the docker state file', { file: this.o.stateFile, error: (err as Error).message });
    }
  }

  status(): DockerStatus {
    const networks: DockerNetworkStatus[] = [];
    for (const net of this.nets.values()) {
      const pool = this.pools.get(net.key);
      const st = net.dp?.stats();
      const perPeer = new Map((st?.peers ?? []).map((p) => [p.subnet, p]));
      const installed = new Set(pool ? [...pool.filter.apply(pool.peers).keys()] : []);
      networks.push({
        name: net.name ?? pool?.record.name ?? '',
        id: net.id,
        range: pool ? formatCidr(pool.record.network) : net.key.replace('-', '/'),
        vni: pool?.record.vni ?? 0,
        lease: pool?.lease ? formatCidr(pool.lease) : '',
        leaseState: pool?.manager?.status().leaseState ?? 'none',
        gateway: pool?.addresses ? formatIPv4(pool.addresses.gateway) : '',
        namespace: this.o.host.nsPath(net.key),
        tun: net.dp?.tunName,
        mtu: net.mtu,
        endpoints: [...net.endpoints.values()].map((e) => ({ id: e.id, address: formatIPv4(e.address), joined: e.joined })),
        peers: (pool?.peers ?? []).map((l) => {
          const subnet = formatCidr(l.subnet);
          const c = perPeer.get(subnet);
          const mac = (l.attrs.backendData as { VtepMAC?: unknown } | undefined)?.VtepMAC;
          return {
            subnet,
            publicIp: l.attrs.publicIp,
            ...(typeof mac === 'string' ? { vtepMac: mac } : {}),
            installed: !!net.dp && installed.has(subnet),
            ...(c ? { txPackets: c.txPackets, txBytes: c.txBytes, rxPackets: c.rxPackets, rxBytes: c.rxBytes } : {}),
          };
        }),
        counters: st?.counters ?? {},
        drops: st?.drops ?? {},
        ...(net.conflict ? { conflict: net.conflict } : {}),
        ...(pool?.error ? { error: pool.error } : {}),
      });
    }
    const localKeys = new Set([...this.nets.values()].map((n) => n.key));
    return {
      socket: this.socketPath,
      syncNetworks: this.o.syncNetworks,
      networks,
      remoteNetworks: this.remote.filter((r) => !localKeys.has(r.key)).map((r) => ({ name: r.name, range: formatCidr(r.network), vni: r.vni, deleted: r.deleted })),
      ...(this.lastSyncError ? { lastSyncError: this.lastSyncError } : {}),
    };
  }

  /** For tests: the pools this host holds, by key. */
  poolKeys(): string[] {
    return [...this.pools.keys()];
  }
}
