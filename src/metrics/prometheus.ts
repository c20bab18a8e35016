// Prometheus text exposition (format 0.0.4) of a daemon status snapshot.
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { DaemonStatus } from '../status';

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** Accumulates metric families, each with its HELP/TYPE header once. */
class Exposition {
  private readonly lines: string[] = [];
  family(name: string, type: 'gauge' | 'counter', help: string, samples: Array<[Labels, number]>): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) this.lines.push(`${name}${labelText(labels)} ${Number.isFinite(v) ? v : 'NaN'}`);
  }
  text(): string {
    return this.lines.join('\n') + '\n';
  }
}


export function renderMetrics(st: DaemonStatus): string {
  const e = new Exposition();
  e.family('vxnet_info', 'gauge', 'Constant 1, labelled with the backend and lease.', [
    [{ version: st.version, backend: st.backend.kind, subnet: st.lease.subnet, network: st.network, public_ip: st.backend.publicIp }, 1],
  ]);
  e.family('vxnet_up', 'gauge', '1 while the daemon holds its lease and its backend runs.', [[{}, st.lease.state === 'held' ? 1 : 0]]);
  e.family('vxnet_etcd_up', 'gauge', '1 when the last etcd call succeeded.', [[{}, st.etcd.state === 'connected' ? 1 : 0]]);
  e.family('vxnet_lease_expiry_timestamp_seconds', 'gauge', 'When our etcd lease expires unless renewed.', [
    [{}, st.lease.expiration ? Date.parse(st.lease.expiration) / 1000 : 0],
  ]);
  e.family('vxnet_lease_renewals_total', 'counter', 'Lease renewals since start.', [[{}, st.lease.renewals]]);
  e.family('vxnet_leases_rejected_total', 'counter', 'Peer leases ignored, by reason.', Object.entries(st.rejected).map(([r, n]) => [{ reason: r }, n]));
  e.family('vxnet_leases_refused_total', 'counter', 'Well-formed peer leases refused (never installed), by reason.', Object.entries(st.refusedLeasesTotal ?? {}).map(([r, n]) => [{ reason: r }, n]));
  e.family('vxnet_peers', 'gauge', 'Peer leases known, by whether forwarding state is installed.', [
    [{ state: 'installed' }, st.peers.filter((p) => p.installed).length],
    [{ state: 'pending' }, st.peers.filter((p) => !p.installed).length],
    ...(st.docker?.networks ?? []).flatMap((n): Array<[Labels, number]> => [
      [{ network: n.name || n.id.slice(0, 12), state: 'installed' }, n.peers.filter((p) => p.installed).length],
      [{ network: n.name || n.id.slice(0, 12), state: 'pending' }, n.peers.filter((p) => !p.installed).length],
    ]),
  ]);
  if (st.iptables) {
    e.family('vxnet_iptables_repairs_total', 'counter', "Times a resync found vxnet's iptables rules changed and rewrote them.", [[{}, st.iptables.repairs]]);
  }
  e.family('vxnet_mtu', 'gauge', 'MTU given to local containers.', [[{}, st.backend.mtu]]);
  e.family('vxnet_resident_memory_bytes', 'gauge', 'Resident set size of the daemon.', [[{}, st.rssBytes]]);
  e.family('vxnet_start_time_seconds', 'gauge', 'Daemon start time.', [[{}, Date.parse(st.startedAt) / 1000]]);
  // Docker networks' series carry network="<name>" beside the daemon's own (unlabelled) ones.
  const dockerNets = (st.docker?.networks ?? []).map((n) => ({ n, label: n.name || n.id.slice(0, 12) }));
  const counterNames = new Set(Object.keys(st.counters));
  for (const { n } of dockerNets) for (const k of Object.keys(n.counters)) counterNames.add(k);
  for (const name of counterNames) {
    const metric = `vxnet_${name.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase()}_total`;
    const samples: Array<[Labels, number]> = [];
    if (name in st.counters) samples.push([{}, st.counters[name]]);
    for (const { n, label } of dockerNets) if (name in n.counters) samples.push([{ network: label }, n.counters[name]]);
    e.family(metric, 'counter', `Datapath counter ${name}.`, samples);
  }
  e.family('vxnet_drops_total', 'counter', 'Packets dropped by the datapath, by reason.', [
    ...Object.entries(st.drops).map(([r, n]): [Labels, number] => [{ reason: r }, n]),
    ...dockerNets.flatMap(({ n, label }) => Object.entries(n.drops).map(([r, v]): [Labels, number] => [{ network: label, reason: r }, v])),
  ]);
  type PeerLike = { subnet: string; publicIp: string; txPackets?: number; rxPackets?: number; txBytes?: number; rxBytes?: number };
  const withCounters: Array<{ p: PeerLike; labels: Labels }> = [
    ...st.peers.filter((p) => p.txPackets !== undefined).map((p) => ({ p: p as PeerLike, labels: {} as Labels })),
    ...dockerNets.flatMap(({ n, label }) => n.peers.filter((p) => p.txPackets !== undefined).map((p) => ({ p: p as PeerLike, labels: { network: label } as Labels }))),
  ];
  if (withCounters.length > 0) {
    const per = (f: 'txPackets' | 'rxPackets' | 'txBytes' | 'rxBytes') =>
      withCounters.map(({ p, labels }): [Labels, number] => [{ ...labels, peer: p.subnet, public_ip: p.publicIp }, p[f] ?? 0]);
    e.family('vxnet_peer_tx_packets_total', 'counter', 'Packets sent to each peer.', per('txPackets'));
    e.family('vxnet_peer_rx_packets_total', 'counter', 'Packets received from each peer.', per('rxPackets'));
    e.family('vxnet_peer_tx_bytes_total', 'counter', 'Bytes sent to each peer.', per('txBytes'));
    e.family('vxnet_peer_rx_bytes_total', 'counter', 'Bytes received from each peer.', per('rxBytes'));
  }
  if (st.docker) {
    e.family(
      'vxnet_docker_network_info',
      'gauge',
      'Constant 1 per Docker network on this host, labelled with its VNI, range and our lease.',
      dockerNets.map(({ n, label }): [Labels, number] => [{ network: label, vni: String(n.vni), range: n.range, subnet: n.lease }, 1]),
    );
    e.family('vxnet_docker_endpoints', 'gauge', 'Container endpoints per Docker network on this host.', dockerNets.map(({ n, label }): [Labels, number] => [{ network: label }, n.endpoints.length]));
  }
  return e.text();
}

/**
 * The process and runtime metrics operators expect from a Node.js service (prom-client's default
 * collectors: process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
 * nodejs_eventloop_lag_seconds, nodejs_gc_duration_seconds, nodejs_heap_*), in a registry of their
 * own. vxnet's families above stay a rendering of one status snapshot, so one scrape is consistent.
 */
export class RuntimeMetrics {
  private readonly registry = new Registry();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  /** Stops the collectors' timers (the event-loop monitor). */
  close(): void {
    this.registry.clear();
  }
}
