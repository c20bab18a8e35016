// `vxnet daemon`: flanneld's job on one host. etcd → lease manager → backend → datapath, one way.
// Everything that can be checked is checked before the first thing is created on the host.
import { readFileSync } from 'node:fs';
import type { Backend, BackendNetwork, ExternalInterface } from '../backend/backend';
import { backendKind, checkBackendConfig, createBackend } from '../backend/registry';
import { FieldError } from '../errors';
import { ControlServer } from '../control/socket';
import type { DaemonOptions } from './options';
import type { DaemonStatus, PeerStatus } from './status';
import { readSubnetEnv, writeSubnetEnv } from '../host/subnet-env';
import { forwardChain } from '../host/forward';
import { checkIptables, ChainKeeper, type IptablesInfo, type OwnedChain } from '../host/iptables';
import { masqChain, useRandomFully } from '../host/ipmasq';
import type { LevelLogger } from '../log';
import { MetricsServer } from '../metrics/server';
import { renderMetrics, RuntimeMetrics } from '../metrics/prometheus';
import { cidrEquals, formatCidr, isIPv4 } from '../net/ip';
import { defaultRouteInterface, interfaceNames, interfacesIPv4, interfaceWithAddress, linkInfo, linkIPv4, routeGet } from '../net/iproute';
import { ConfigError, parseNetworkConfig } from '../subnet/config';
import { configKey } from '../subnet/lease';
import { LeaseManager } from '../subnet/manager';
import { EtcdRegistry, etcdFailureField, TlsFileError } from '../subnet/registry';
import type { SnapshotWriter } from '../subnet/snapshot';
import { checkConfigWhenEtcdAnswers, configOrSnapshot, loadUsableSnapshot, startSnapshotWriter } from './snapshot-boot';
import type { Lease, NetworkConfig } from '../subnet/types';
import { UserspaceNetwork } from '../backend/udp';
import { readVxlanOptions } from '../backend/common';
import { DockerDriver } from '../docker/driver';
import { dockerDatapath, type MultiNetworkDatapath } from '../docker/datapath';
import { EngineClient } from '../docker/engine';
import { NamespaceHost } from '../docker/netns';
import { PluginServer } from '../docker/server';
import { EtcdNetworkStore } from '../docker/store';
import { parseCidr } from '../net/ip';
import type { Datapath } from '../datapath';
import { DEFAULT_PORT } from '../net/wire';

/** UDP port of the Docker networks when the daemon's backend is not userspace vxlan (flannel's vxlan default). */
/** The Docker networks' userspace VXLAN port: flannel's (the kernel's) VXLAN port. */
const DOCKER_VXLAN_PORT = DEFAULT_PORT.vxlan;
/** Outer IPv4 + UDP + VXLAN + inner Ethernet. */
const DOCKER_VXLAN_OVERHEAD = 50;
import path from 'node:path';

export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(`${__dirname}/../../../package.json`, 'utf8')) as { version: string }).version;
  } catch {
    return '0.0.0';
  }
})();

/** A startup failure the user can fix; `field` names the flag or setting at fault. */
export class StartupError extends FieldError {}

/** The interface `name` as the backend needs it, or why it cannot be used. */
async function describeInterface(name: string, address: string | undefined, publicIp: string | undefined): Promise<ExternalInterface | string> {
  let mtu: number;
  try {
    mtu = (await linkInfo(name)).mtu;
  } catch {
    return `no interface named ${name}`;
  }
  const addr = address ?? (await linkIPv4(name).catch(() => undefined));
  if (!addr) return `${name} has no IPv4 address`;
  return { name, address: addr, publicIp: publicIp ?? addr, mtu };
}

/**
 * flanneld's interface choice: --iface entries in order (name or address), then each --iface-regex
 * (matched against every interface's addresses first, then against the names: the first matching
 * name with an IPv4 address), then the interface
 * `ip route get <--iface-can-reach>` picks; with none of them, the default route's interface.
 */
export async function resolveInterface(opts: Pick<DaemonOptions, 'iface' | 'publicIp'> & Partial<Pick<DaemonOptions, 'ifaceRegex' | 'ifaceCanReach'>>): Promise<ExternalInterface> {
  const regexes = opts.ifaceRegex ?? [];
  const given = [
    ...(opts.iface.length > 0 ? ['--iface'] : []),
    ...(regexes.length > 0 ? ['--iface-regex'] : []),
    ...(opts.ifaceCanReach !== undefined ? ['--iface-can-reach'] : []),
  ];
  const problems: string[] = [];
  const use = async (name: string, address?: string): Promise<ExternalInterface | undefined> => {
    const r = await describeInterface(name, address, opts.publicIp);
    if (typeof r === 'string') problems.push(r);
    return typeof r === 'string' ? undefined : r;
  };
  if (given.length === 0) {
    const dev = await defaultRouteInterface().catch(() => undefined);
    if (!dev) throw new StartupError('--iface', 'no default route in this namespace to pick an interface from; name the underlay interface with --iface');
    const found = await use(dev);
    if (found) return found;
    throw new StartupError('--iface', problems.join('; '));
  }
  for (const c of opts.iface) {
    const name = isIPv4(c) ? await interfaceWithAddress(c).catch(() => undefined) : c;
    if (!name) {
      problems.push(`no interface has address ${c}`);
      continue;
    }
    const found = await use(name, isIPv4(c) ? c : undefined);
    if (found) return found;
  }
  for (const source of regexes) {
    const re = new RegExp(source);
    const ifaces = await interfacesIPv4().catch(() => []);
    const byAddress = ifaces.flatMap((i) => i.addresses.filter((a) => re.test(a)).map((a) => ({ name: i.ifname, address: a })))[0];
    if (byAddress) {
      const found = await use(byAddress.name, byAddress.address);
      if (found) return found;
      continue;
    }
    // Names next; an interface without an IPv4 address is skipped for the next one that matches.
    const names = (await interfaceNames().catch(() => [])).filter((n) => re.test(n));
    if (names.length === 0) {
      problems.push(`/${source}/ matches no interface address or name (${ifaces.map((i) => `${i.ifname}:[${i.addresses.join(' ')}]`).join(', ')})`);
      continue;
    }
    for (const name of names) {
      const found = await use(name);
      if (found) return found;
    }
  }
  if (opts.ifaceCanReach !== undefined) {
    const route = await routeGet(opts.ifaceCanReach).catch((err: Error) => err);
    if (route instanceof Error || !route.dev) {
      problems.push(`no route to ${opts.ifaceCanReach}${route instanceof Error ? `: ${route.message.split('\n')[0]}` : ''}`);
    } else {
      const found = await use(route.dev, route.prefsrc);
      if (found) return found;
    }
  }
  throw new StartupError(given.join(', '), problems.join('; '));
}

function rssBytes(): number {
  return process.memoryUsage.rss();
}

/** Subnets a backend holds forwarding state for, read from its stats (peers[] or routes[] with .subnet). */
export class Daemon {
  private readonly startedAt = new Date();
  private network: BackendNetwork | undefined;
  private manager: LeaseManager | undefined;
  private registry: EtcdRegistry | undefined;
  private control: ControlServer | undefined;
  private metrics: MetricsServer | undefined;
  private runtimeMetrics: RuntimeMetrics | undefined;
  /** vxnet's iptables chains (forward rules, ip-masq), re-checked every --iptables-resync seconds. */
  private iptables: ChainKeeper | undefined;
  private iptablesInfo: IptablesInfo | undefined;
  private stopping: Promise<void> | undefined;
  private kind = '';
  private backend: Backend | undefined;
  private config: NetworkConfig | undefined;
  private iface: ExternalInterface | undefined;
  private snapshotWriter: SnapshotWriter | undefined;
  /** The Docker network/IPAM driver and its socket (--docker-plugin). */
  private docker: DockerDriver | undefined;
  private plugin: PluginServer | undefined;
  /** The Docker networks' own VXLAN port when the daemon's backend is not userspace vxlan. */
  private dockerPort: Datapath | undefined;
  /** Resolves when the daemon has stopped (signal, fatal error, or stop()). */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  private booting: Promise<void> = Promise.resolve();
  /** Set once stop() was called (signal or fatal error). */
  stopRequested = false;
  /** Set when start() failed because stop() was requested (a signal) while it was still starting. */
  interrupted = false;
  /** Set once startup completed: subnet.env written, ip-masq installed, peers synced once. */
  private running = false;

  constructor(
    private readonly opts: DaemonOptions,
    private readonly log: LevelLogger,
  ) {
    this.done = new Promise((r) => (this.resolveDone = r));
  }

  /**
   * Validates everything (flags, interface, etcd, network config, backend options), then acquires
   * the lease and creates host state. On any failure, whatever was created is removed again.
   */
  async start(): Promise<void> {
    this.booting = this.boot();
    try {
      await this.booting;
    } catch (err) {
      // A signal during startup is a clean stop; any other failure is reported by the caller in one line.
      this.interrupted = this.stopRequested;
      await this.stop('startup failed', { quiet: !this.interrupted });
      throw err;
    }
  }

  private async boot(): Promise<void> {
    const { opts, log } = this;
    // 1. Checks that create nothing on the host.
    for (const notice of opts.notices) log.warn(notice);
    const iface = await resolveInterface(opts);
    this.iface = iface;
    // iptables must work before anything is created, when rules are wanted (read-only check).
    if (opts.iptablesForwardRules) {
      this.iptablesInfo = await checkIptables('filter', 'FORWARD').catch((err: Error) => {
        throw new StartupError('--iptables-forward-rules', `iptables does not work here (${err.message.split('\n')[0]}); run with --iptables-forward-rules=false to go without forward rules`);
      });
      if (this.iptablesInfo.legacyTablesPresent) {
        // A DROP policy in the legacy tables drops what our nf_tables rules accept.
        log.warn('iptables-legacy tables exist beside the nf_tables ones vxnet writes to; if dockerd uses iptables-legacy, point the iptables alternative to iptables-legacy');
      }
    }
    if (opts.ipMasq) {
      this.iptablesInfo = await checkIptables('nat', 'POSTROUTING').catch((err: Error) => {
        throw new StartupError('--ip-masq', `iptables does not work here (${err.message.split('\n')[0]})`);
      });
    }
    try {
      this.control = await ControlServer.listen(opts.controlSocket, (req) => this.handleControl(req.op));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StartupError(
        '--control-socket',
        code === 'EADDRINUSE' ? `another vxnet daemon already runs for ${opts.subnetFile} in this network namespace (@${opts.controlSocket})` : (err as Error).message,
      );
    }
    if (opts.healthzPort > 0) {
      try {
        const runtime = (this.runtimeMetrics = new RuntimeMetrics());
        this.metrics = await MetricsServer.listen(opts.healthzIp, opts.healthzPort, async () => {
          await this.network?.refreshStats?.();
          return renderMetrics(this.status()) + (await runtime.text());
        }, () => this.health());
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        throw new StartupError('--healthz-port', code === 'EADDRINUSE' ? `${opts.healthzIp}:${opts.healthzPort} is already in use` : (err as Error).message);
      }
    }

    let netConfText: string | undefined;
    if (opts.netConfigFile) {
      netConfText = readFileSync(opts.netConfigFile, 'utf8');
      try {
        // The whole document, the backend's own fields too: nothing bad is written to etcd.
        checkBackendConfig(parseNetworkConfig(netConfText));
      } catch (err) {
        throw new StartupError(`--net-config ${opts.netConfigFile}`, (err as Error).message);
      }
    }

    try {
      this.registry = new EtcdRegistry({
        endpoints: opts.etcdEndpoints,
        prefix: opts.etcdPrefix,
        certFile: opts.etcdCertFile,
        keyFile: opts.etcdKeyFile,
        caFile: opts.etcdCaFile,
        username: opts.etcdUsername,
        password: opts.etcdPassword,
      });
    } catch (err) {
      if (err instanceof TlsFileError) throw new StartupError(`--etcd-${err.option.toLowerCase()}`, `${err.file}: ${err.reason}`);
      throw new StartupError('--etcd-endpoints', (err as Error).message);
    }
    const registry = this.registry;
    // One line naming the flag to fix: --etcd-endpoints, or the CA, certificate, user or password.
    const etcdFailure = (err: unknown) =>
      etcdFailureField(err, { endpoints: opts.etcdEndpoints, prefix: registry.prefix, caFile: opts.etcdCaFile, certFile: opts.etcdCertFile, username: opts.etcdUsername });
    const unreachable = (err: unknown) => {
      const { field, reason } = etcdFailure(err);
      return new StartupError(field, reason);
    };
    const fetchConfig = async (): Promise<string | undefined> => {
      if (netConfText !== undefined) {
        const written = await registry.putNetworkConfigIfAbsent(netConfText);
        log.info(written ? 'wrote network config to etcd' : 'network config already in etcd; --net-config not applied', {
          key: configKey(registry.prefix),
          file: opts.netConfigFile,
        });
      }
      return registry.getNetworkConfig();
    };
    // A usable snapshot lets a restart forward at once while etcd is down; without one, etcd is required.
    const snapshot = await loadUsableSnapshot(opts, iface, log);
    const { confText, fromSnapshot } = await configOrSnapshot(snapshot, fetchConfig, (err) => etcdFailure(err).field === '--etcd-endpoints', log).catch((err) => {
      throw unreachable(err);
    });
    if (confText === undefined) {
      throw new StartupError('network config', `${configKey(registry.prefix)} is not in etcd: write flannel's net-conf.json there, or pass --net-config FILE`);
    }
    let config: NetworkConfig;
    try {
      config = parseNetworkConfig(confText);
    } catch (err) {
      if (err instanceof ConfigError) throw new StartupError(`network config ${configKey(registry.prefix)}`, err.message);
      throw err;
    }
    this.config = config;
    let backend: Backend;
    try {
      this.kind = backendKind(config);
      backend = createBackend({ config, iface, log });
    } catch (err) {
      throw new StartupError(`network config ${configKey(registry.prefix)}`, (err as Error).message);
    }
    this.backend = backend;
    if (opts.docker && this.kind === 'kernel-vxlan' && readVxlanOptions(config, iface).port === DOCKER_VXLAN_PORT) {
      // The Docker networks need a userspace VXLAN port; the kernel's vxlan device holds 8472.
      throw new StartupError(
        '--docker-plugin',
        `Docker networks need UDP port ${DOCKER_VXLAN_PORT} for the userspace vxlan datapath, which the kernel vxlan backend ("Datapath": "kernel") holds; use the userspace vxlan backend, another Backend.Port, or run without --docker-plugin`,
      );
    }

    let previousSubnet;
    try {
      const prev = await readSubnetEnv(opts.subnetFile);
      if (prev && cidrEquals(prev.network, config.network)) previousSubnet = prev.subnet;
    } catch (err) {
      log.warn('ignoring unreadable subnet file from a previous run', { file: opts.subnetFile, error: (err as Error).message });
    }

    // 2. The lease, then host state.
    const attrs = await backend.leaseAttrs();
    const manager = new LeaseManager(registry, config, attrs, {
      ttlSeconds: opts.leaseTtlSeconds,
      renewMarginSeconds: opts.renewMarginMinutes * 60 < opts.leaseTtlSeconds ? opts.renewMarginMinutes * 60 : undefined,
      previousSubnet,
      log,
    });
    this.manager = manager;
    this.snapshotWriter = startSnapshotWriter(opts, manager, registry.prefix, confText, attrs, log);
    if (fromSnapshot) checkConfigWhenEtcdAnswers(manager, registry, config, log);
    // The first contact is part of startup (a startup failure stays one line); later changes are news.
    let etcdSeen = false;
    manager.on('etcd', (state: string) => {
      log[state !== 'connected' ? 'warn' : etcdSeen ? 'info' : 'debug'](`etcd ${state}`, { endpoints: opts.etcdEndpoints.join(',') });
      etcdSeen = true;
    });
    manager.on('lost', ({ subnet }) => log.error('another host took our subnet; forwarding continues but this host must be restarted to get a new one', { subnet: formatCidr(subnet) }));
    const lease = fromSnapshot
      ? manager.restore({ own: fromSnapshot.own, records: fromSnapshot.records, revision: fromSnapshot.revision }, new Date(fromSnapshot.savedAt))
      : await manager.acquire().catch((err) => {
          // Only errors retrying cannot fix (a missing permission) come out of acquire().
          if (err instanceof Error && err.name === 'RegistryError') throw unreachable(err);
          throw err;
        });
    if (this.stopRequested) throw new Error('stopped during startup');

    this.network = await backend.start(lease);
    const network = this.network;
    await writeSubnetEnv(opts.subnetFile, { network: config.network, subnet: lease.subnet, mtu: network.mtu, ipMasq: opts.ipMasq });
    const chains: OwnedChain[] = [];
    if (opts.iptablesForwardRules) chains.push(forwardChain(config.network));
    if (opts.ipMasq) chains.push(masqChain(config.network, lease.subnet, await useRandomFully({ randomFully: opts.ipMasqRandomFully })));
    if (chains.length > 0) {
      this.iptables = new ChainKeeper(chains, opts.iptablesResyncSeconds, log);
      await this.iptables.install();
    }
    if (this.stopRequested) throw new Error('stopped during startup');
    await manager.run((peers: Lease[]) =>
      network.setPeers(peers).catch((err) => log.error('backend failed to apply peers', { error: (err as Error).message })),
    );
    if (opts.docker) await this.startDocker(network, config, iface);
    this.running = true;
    log.info('running', {
      subnet: formatCidr(lease.subnet),
      backend: this.kind,
      iface: iface.name,
      publicIp: iface.publicIp,
      mtu: network.mtu,
      subnetFile: opts.subnetFile,
      control: `@${opts.controlSocket}`,
      metrics: this.metrics?.address,
      iptables: this.iptables ? `${this.iptables.status().chains.join(',')} (${this.iptablesInfo?.mode || 'iptables'}, resync ${opts.iptablesResyncSeconds}s)` : 'none',
    });
  }

  /** The Docker driver on the vxlan datapath, then its socket (dockerd may call at once). */
  private async startDocker(network: BackendNetwork, config: NetworkConfig, iface: ExternalInterface): Promise<void> {
    const d = this.opts.docker;
    const registry = this.registry;
    if (!d || !registry) return;
    // With the userspace vxlan backend the Docker networks share its port; with any other backend
    // they get a VXLAN port of their own (8472), with no network of its own.
    let multi: MultiNetworkDatapath;
    let port: number;
    if (network instanceof UserspaceNetwork && this.kind === 'vxlan') {
      multi = network.datapathHandle;
      port = readVxlanOptions(config, iface).port;
    } else {
      const { Datapath } = await import('../datapath');
      try {
        this.dockerPort = await Datapath.createPort({ port: DOCKER_VXLAN_PORT, bindAddress: iface.address });
      } catch (err) {
        throw new StartupError('--docker-plugin', `cannot open the VXLAN port ${DOCKER_VXLAN_PORT} for the Docker networks: ${(err as Error).message}`);
      }
      multi = this.dockerPort;
      port = DOCKER_VXLAN_PORT;
    }
    const vni = this.kind === 'vxlan' || this.kind === 'kernel-vxlan' ? readVxlanOptions(config, iface).vni : 1;
    this.docker = new DockerDriver({
      store: new EtcdNetworkStore(registry),
      host: new NamespaceHost(d.stateDir),
      datapath: dockerDatapath(multi, port, iface.mtu - DOCKER_VXLAN_OVERHEAD),
      engine: new EngineClient(d.engineSocket),
      iface,
      log: this.log,
      stateFile: path.join(d.stateDir, 'state.json'),
      leaseTtlSeconds: this.opts.leaseTtlSeconds,
      renewMarginSeconds: this.opts.renewMarginMinutes * 60 < this.opts.leaseTtlSeconds ? this.opts.renewMarginMinutes * 60 : undefined,
      reservedVnis: [vni],
      reservedRanges: [config.network],
      defaultPool: parseCidr(d.defaultPool),
      defaultPoolPrefixLen: d.defaultPoolSize,
      syncNetworks: d.syncNetworks,
    });
    try {
      await this.docker.start();
    } catch (err) {
      throw new StartupError('--docker-state-dir', `cannot restore the Docker networks from ${path.join(d.stateDir, 'state.json')}: ${(err as Error).message}`);
    }
    try {
      this.plugin = await PluginServer.listen(d.socket, (call, body) => (this.docker as DockerDriver).handle(call, body), this.log);
    } catch (err) {
      throw new StartupError('--docker-plugin', `cannot listen on ${d.socket}: ${(err as Error).message}`);
    }
    this.docker.socketPath = d.socket;
    this.log.info('docker plugin listening', { socket: d.socket, engine: d.engineSocket, syncNetworks: d.syncNetworks });
  }

  private async handleControl(op: string): Promise<unknown> {
    switch (op) {
      case 'status':
        await this.network?.refreshStats?.();
        return this.status();
      case 'ping':
        return 'pong';
      default:
        throw new Error(`unknown op ${JSON.stringify(op)} (status, ping)`);
    }
  }

  health(): { ok: boolean; detail: string } {
    const st = this.manager?.status();
    if (this.stopping) return { ok: false, detail: 'stopping' };
    // Not before subnet.env exists: whoever waits on /healthz next reads it.
    if (!this.running || !this.network || !st) return { ok: false, detail: 'starting' };
    if (st.leaseState !== 'held') return { ok: false, detail: `lease ${st.leaseState}` };
    // Forwarding continues without etcd, so an outage is degraded, not unhealthy.
    if (st.servingSnapshotFrom && st.etcd !== 'connected') return { ok: true, detail: `ok (etcd unreachable, serving snapshot from ${st.servingSnapshotFrom.toISOString()})` };
    return { ok: true, detail: st.etcd === 'connected' ? 'ok' : `ok (etcd unreachable: ${st.lastError ?? 'no contact'})` };
  }

  status(): DaemonStatus {
    const ms = this.manager?.status();
    const stats = this.network?.stats();
    const installed = new Map((stats?.peers ?? []).map((p) => [p.subnet, p]));
    const peers: PeerStatus[] = (this.manager?.peers ?? []).map((l) => {
      const subnet = formatCidr(l.subnet);
      const data = l.attrs.backendData as { VtepMAC?: unknown } | undefined;
      const c = installed.get(subnet);
      return {
        subnet,
        publicIp: l.attrs.publicIp,
        backendType: l.attrs.backendType,
        vtepMac: typeof data?.VtepMAC === 'string' ? data.VtepMAC : undefined,
        installed: c !== undefined,
        expiration: l.expiration?.toISOString(),
        ...(c?.txPackets !== undefined ? { txPackets: c.txPackets, txBytes: c.txBytes, rxPackets: c.rxPackets, rxBytes: c.rxBytes } : {}),
      };
    });
    const lease = ms?.lease;
    return {
      version: VERSION,
      state: this.stopping ? 'stopping' : this.running ? 'running' : 'starting',
      pid: process.pid,
      startedAt: this.startedAt.toISOString(),
      uptimeSeconds: (Date.now() - this.startedAt.getTime()) / 1000,
      rssBytes: rssBytes(),
      network: this.config ? formatCidr(this.config.network) : '',
      subnetFile: this.opts.subnetFile,
      ipMasq: this.opts.ipMasq,
      iptables: {
        forwardRules: this.opts.iptablesForwardRules,
        ipMasq: this.opts.ipMasq,
        mode: this.iptablesInfo?.mode,
        legacyTablesPresent: this.iptablesInfo?.legacyTablesPresent,
        ...(this.iptables?.status() ?? { chains: [], resyncSeconds: this.opts.iptablesResyncSeconds, repairs: 0 }),
      },
      backend: {
        kind: this.kind,
        type: this.backend?.type ?? '',
        mtu: this.network?.mtu ?? 0,
        device: stats?.device,
        iface: this.iface?.name ?? '',
        publicIp: this.iface?.publicIp ?? '',
      },
      lease: {
        subnet: lease ? formatCidr(lease.subnet) : '',
        state: ms?.leaseState ?? 'none',
        expiration: lease?.expiration?.toISOString(),
        renewals: ms?.renewals ?? 0,
        backendData: lease?.attrs.backendData,
      },
      etcd: {
        state: ms?.etcd ?? 'unreachable',
        endpoints: this.opts.etcdEndpoints,
        prefix: this.opts.etcdPrefix,
        lastContact: ms?.lastContact?.toISOString(),
        lastError: ms?.lastError,
        snapshotFrom: ms?.servingSnapshotFrom?.toISOString(),
      },
      peers,
      rejected: { ...(ms?.rejected ?? {}) },
      refusedLeases: (ms?.refused ?? []).map(({ subnet, publicIp, reason, detail }) => ({ subnet, publicIp, reason, detail })),
      refusedLeasesTotal: { ...(ms?.refusedTotal ?? {}) },
      skippedPeers: stats?.skippedPeers ?? [],
      counters: { ...(stats?.counters ?? {}) },
      drops: { ...(stats?.drops ?? {}) },
      ...(this.docker
        ? { docker: { ...this.docker.status(), engine: this.opts.docker?.engineSocket, ...(this.dockerPort ? { portDrops: { ...this.dockerPort.stats().drops } } : {}) } }
        : {}),
    };
  }

  /** Stops: keeps the etcd lease and the subnet file (a restart takes the same subnet), removes the rest. */
  stop(reason = 'stop requested', opts: { quiet?: boolean } = {}): Promise<void> {
    if (!this.stopping) {
      this.stopRequested = true;
      // quiet: undoing a failed startup, whose one-line error the caller prints (teardown failures still log).
      if (!opts.quiet) this.log.info('stopping', { reason });
      this.stopping = (async () => {
        // Ends a lease acquisition that is still retrying, then lets startup settle before undoing it.
        await this.manager?.stop();
        await this.booting.catch(() => undefined);
        await this.teardown();
      })().finally(() => {
        if (!opts.quiet) this.log.info('stopped');
        this.resolveDone();
      });
    }
    return this.stopping;
  }

  private async teardown(): Promise<void> {
    const step = async (what: string, fn: () => Promise<void> | void) => {
      try {
        await fn();
      } catch (err) {
        this.log.error(`stop: ${what} failed`, { error: (err as Error).message });
      }
    };
    if (this.manager) await step('lease manager', () => this.manager?.stop());
    if (this.snapshotWriter) await step('lease snapshot', () => this.snapshotWriter?.flush());
    // The socket first (dockerd then fails fast instead of retrying a dead one), then the TUNs.
    if (this.plugin) await step('docker plugin socket', () => this.plugin?.close());
    if (this.docker) await step('docker driver', () => this.docker?.stop());
    if (this.dockerPort) await step('docker VXLAN port', () => this.dockerPort?.close());
    if (this.network) await step('backend', () => this.network?.close());
    if (this.iptables) await step('iptables rules', () => this.iptables?.stop());
    if (this.metrics) await step('metrics listener', () => this.metrics?.close());
    this.runtimeMetrics?.close();
    if (this.control) await step('control socket', () => this.control?.close());
    if (this.registry) await step('etcd client', () => this.registry?.close());
  }
}
