// A Cluster (namespaced hosts + etcd + one vxnet daemon each) whose hosts also run a real dockerd
// (src/testbed/docker.ts), with each vxnet daemon serving the Docker plugin inside its host's private
// mount namespace. Shared by the Docker e2e tests and `npm run demo -- --docker`.
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import type { DaemonStatus } from '../status';
import type { DockerNetworkStatus } from '../docker/driver';
import { Cluster, type DaemonProcess, sleep } from './cluster';
import { buildImageTar, DockerHost } from './docker';
import type { BedHost } from './netbed';

export interface DockerClusterOptions {
  hosts: number;
  tag: string;
  /** Which hosts run with --docker-sync-networks (by index 1..N; default all). */
  syncHosts?: number[];
  /** The daemons' flannel network (Backend vxlan, userspace). */
  network?: string;
  /** The daemons' flannel Backend section (default {"Type": "vxlan"}, the userspace datapath). */
  backend?: Record<string, unknown>;
}

export class DockerCluster {
  readonly docker = new Map<number, DockerHost>();

  private constructor(
    readonly cluster: Cluster,
    readonly syncHosts: Set<number>,
  ) {}

  static async create(opts: DockerClusterOptions): Promise<DockerCluster> {
    const cluster = await Cluster.create({
      hosts: opts.hosts,
      tag: opts.tag,
      netConf: { Network: opts.network ?? '10.244.0.0/16', SubnetLen: 24, Backend: opts.backend ?? { Type: 'vxlan' } },
    });
    const dc = new DockerCluster(cluster, new Set(opts.syncHosts ?? cluster.bed.hosts.map((h) => h.index)));
    try {
      const tar = buildImageTar(cluster.dir);
      await Promise.all(
        cluster.bed.hosts.map(async (h) => {
          const dir = path.join(cluster.dir, `${h.name}-docker`);
          mkdirSync(dir, { recursive: true });
          dc.docker.set(h.index, await DockerHost.start(cluster.bed, h, dir, tar));
        }),
      );
      await Promise.all(cluster.bed.hosts.map((h) => dc.startVxnet(h)));
    } catch (err) {
      await dc.destroy().catch(() => undefined);
      throw err;
    }
    return dc;
  }

  get bed() {
    return this.cluster.bed;
  }

  host(i: number): BedHost {
    return this.cluster.host(i);
  }

  dockerOf(i: number): DockerHost {
    const d = this.docker.get(i);
    if (!d) throw new Error(`no dockerd on h${i}`);
    return d;
  }

  /** The vxnet daemon's flags on host i (the Docker plugin, the Engine API socket, network sync). */
  daemonArgs(i: number, extra: string[] = []): string[] {
    const d = this.dockerOf(i);
    return ['--docker-plugin', `--docker-engine=${d.sock}`, ...(this.syncHosts.has(i) ? ['--docker-sync-networks'] : []), ...extra];
  }

  /** Starts host's vxnet daemon inside its dockerd's mount namespace and waits until it runs. */
  startVxnet(h: BedHost, extra: string[] = []): Promise<DaemonProcess> {
    // dockerd runs with --bridge=none and removes the bed's docker0: nothing to readdress.
    return this.cluster.startDaemon(h, { args: this.daemonArgs(h.index, extra), enter: this.dockerOf(h.index).enter, readdress: false });
  }

  status(i: number): Promise<DaemonStatus> {
    return this.cluster.status(this.host(i));
  }

  /** The Docker network `name` in host i's status, or undefined. */
  async network(i: number, name: string): Promise<DockerNetworkStatus | undefined> {
    return (await this.status(i)).docker?.networks.find((n) => n.name === name);
  }

  /** Polls host i's status until `pred` holds for network `name`. */
  async waitNetwork(i: number, name: string, what: string, pred: (n: DockerNetworkStatus) => boolean, timeoutMs = 30_000): Promise<DockerNetworkStatus> {
    const st = await this.cluster.waitFor(this.host(i), `${name}: ${what}`, (s) => s.docker?.networks.some((n) => n.name === name && pred(n)) ?? false, timeoutMs);
    return st.docker?.networks.find((n) => n.name === name) as DockerNetworkStatus;
  }

  /** Waits until every host holding `name` has every other such host's lease installed. */
  async waitNetworkMesh(name: string, hosts: number[], timeoutMs = 30_000): Promise<Map<number, DockerNetworkStatus>> {
    const leases = new Map<number, string>();
    for (const i of hosts) leases.set(i, (await this.waitNetwork(i, name, 'a lease and a TUN', (n) => n.lease !== '' && !!n.tun, timeoutMs)).lease);
    const out = new Map<number, DockerNetworkStatus>();
    await Promise.all(
      hosts.map(async (i) => {
        const want = hosts.filter((o) => o !== i).map((o) => leases.get(o) as string);
        out.set(i, await this.waitNetwork(i, name, `peers ${want.join(', ')} installed`, (n) => want.every((sn) => n.peers.some((p) => p.subnet === sn && p.installed)), timeoutMs));
      }),
    );
    return out;
  }

  /** The IPv4 address of container `name` on host i in network `net`. */
  async containerIp(i: number, name: string, net: string): Promise<string> {
    const out = await this.dockerOf(i).dockerOk(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, name]);
    return out.trim();
  }

  /** Waits until host i's dockerd has network `name` (created by the sync, or by hand). */
  async waitDockerNetwork(i: number, name: string, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await this.dockerOf(i).docker(['network', 'inspect', name], 10_000);
      if (r.code === 0) return;
      if (Date.now() > deadline) throw new Error(`h${i}: docker network ${name} did not appear within ${timeoutMs} ms: ${r.stderr.trim()}`);
      await sleep(200);
    }
  }

  /**
   * Containers first (while vxnet still answers dockerd's Leave/DeleteEndpoint), then dockerd, then
   * the daemons, etcd and the namespaces.
   */
  async destroy(): Promise<void> {
    await Promise.all([...this.docker.values()].map((d) => d.destroy().catch(() => undefined)));
    await this.cluster.destroy();
  }
}
