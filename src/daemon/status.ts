// What `vxnet status` shows and /metrics exports: one plain snapshot of the daemon, built on demand
// (never per packet), plus its table rendering.
import type { DaemonStatus, DockerStatus } from '../status';
export type { DaemonStatus, PeerStatus } from '../status';

function human(n: number): string {
  if (n < 1000) return String(n);
  const units = ['k', 'M', 'G', 'T'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)}${units[i]}`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

function duration(s: number): string {
  if (s < 120) return `${Math.round(s)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}

/** The human-readable `vxnet status`. */
export function formatStatus(st: DaemonStatus, now = Date.now()): string {
  const out: string[] = [];
  const expires = st.lease.expiration ? ` (expires in ${duration((Date.parse(st.lease.expiration) - now) / 1000)})` : '';
  out.push(`vxnet ${st.version}  pid ${st.pid}  up ${duration(st.uptimeSeconds)}  rss ${(st.rssBytes / 1048576).toFixed(1)} MB`);
  out.push(`network   ${st.network}`);
  out.push(`lease     ${st.lease.subnet}  ${st.lease.state}${expires}  renewals ${st.lease.renewals}`);
  out.push(
    `backend   ${st.backend.kind} (Type ${st.backend.type})  device ${st.backend.device ?? '-'}  mtu ${st.backend.mtu}  ` +
      `iface ${st.backend.iface}  public-ip ${st.backend.publicIp}${st.ipMasq ? '  ip-masq' : ''}`,
  );
  const serving = st.etcd.snapshotFrom ? `etcd unreachable, serving snapshot from ${st.etcd.snapshotFrom}` : 'forwarding with the last known peers';
  const etcdLine =
    st.etcd.state === 'connected'
      ? `connected  ${st.etcd.endpoints.join(',')}`
      : `UNREACHABLE  ${st.etcd.endpoints.join(',')}  (${serving}; retrying)${st.etcd.lastError ? `  last error: ${st.etcd.lastError}` : ''}`;
  out.push(`etcd      ${etcdLine}`);
  out.push(`subnet    ${st.subnetFile}`);
  if (st.iptables) {
    const ipt = st.iptables;
    const what = [ipt.forwardRules ? 'forward rules' : 'no forward rules', ...(ipt.ipMasq ? ['ip-masq'] : [])].join(', ');
    const chains = ipt.chains.length ? `  chains ${ipt.chains.join(' ')}  resync ${ipt.resyncSeconds}s  repairs ${ipt.repairs}` : '';
    const mode = ipt.mode ? `  (${ipt.mode}${ipt.legacyTablesPresent ? ', iptables-legacy tables present too' : ''})` : '';
    out.push(`iptables  ${what}${chains}${mode}${ipt.lastError ? `  last error: ${ipt.lastError}` : ''}`);
  }
  out.push('');
  if (st.peers.length === 0) {
    out.push('peers     none');
  } else {
    const rows = [['PEER SUBNET', 'PUBLIC IP', 'TYPE', 'VTEP MAC', 'STATE', 'TX PKTS', 'RX PKTS', 'TX BYTES', 'RX BYTES']];
    const shown = st.peers.slice(0, 50);
    for (const p of shown) {
      rows.push([
        p.subnet,
        p.publicIp,
        p.backendType || '-',
        p.vtepMac ?? '-',
        p.installed ? 'installed' : 'pending',
        p.txPackets === undefined ? '-' : human(p.txPackets),
        p.rxPackets === undefined ? '-' : human(p.rxPackets),
        p.txBytes === undefined ? '-' : human(p.txBytes),
        p.rxBytes === undefined ? '-' : human(p.rxBytes),
      ]);
    }
    out.push(table(rows));
    if (st.peers.length > shown.length) out.push(`... and ${st.peers.length - shown.length} more peers (see --json)`);
  }
  const rejected = Object.entries(st.rejected).filter(([, n]) => n > 0);
  if (rejected.length > 0) out.push(`rejected leases: ${rejected.map(([r, n]) => `${r}=${n}`).join(' ')}`);
  for (const r of st.refusedLeases ?? []) out.push(`refused lease: ${r.subnet} (public IP ${r.publicIp}) ${r.reason}: ${r.detail}`);
  if (st.skippedPeers.length > 0) out.push(`skipped peers: ${st.skippedPeers.join('; ')}`);
  out.push('');
  const c = st.counters;
  const cs = Object.entries(c).map(([k, v]) => `${k}=${human(v)}`);
  out.push(`counters  ${cs.length ? cs.join(' ') : '-'}`);
  const drops = Object.entries(st.drops).filter(([, n]) => n > 0);
  out.push(`drops     ${drops.length ? drops.map(([r, n]) => `${r}=${human(n)}`).join(' ') : 'none'}`);
  if (st.docker) out.push('', ...formatDocker(st.docker));
  return out.join('\n');
}

/** The Docker networks part of `vxnet status`. */
function formatDocker(d: DockerStatus): string[] {
  const out: string[] = [];
  out.push(`docker    plugin ${d.socket}  engine ${d.engine ?? '-'}  sync ${d.syncNetworks ? 'on' : 'off'}${d.lastSyncError ? `  last sync error: ${d.lastSyncError}` : ''}`);
  if (d.networks.length === 0) {
    out.push('docker networks: none');
  } else {
    const rows = [['NETWORK', 'VNI', 'RANGE', 'LEASE', 'STATE', 'ENDPOINTS', 'PEERS', 'TX PKTS', 'RX PKTS', 'DROPS']];
    for (const n of d.networks) {
      const drops = Object.values(n.drops).reduce((a, b) => a + b, 0);
      rows.push([
        n.name || n.id.slice(0, 12),
        String(n.vni),
        n.range,
        n.lease || '-',
        n.conflict ? 'CONFLICT' : n.error ? 'restoring' : n.tun ? n.leaseState : 'no tun',
        String(n.endpoints.length),
        `${n.peers.filter((p) => p.installed).length}/${n.peers.length}`,
        human(n.counters.txPackets ?? 0),
        human(n.counters.rxPackets ?? 0),
        human(drops),
      ]);
    }
    out.push(table(rows));
    for (const n of d.networks) {
      const label = n.name || n.id.slice(0, 12);
      out.push(`  ${label}: namespace ${n.namespace}  gateway ${n.gateway || '-'}  mtu ${n.mtu}  endpoints ${n.endpoints.map((e) => e.address).join(' ') || '-'}`);
      for (const p of n.peers) out.push(`    peer ${p.subnet} via ${p.publicIp} ${p.installed ? 'installed' : 'pending'}  tx ${human(p.txPackets ?? 0)} rx ${human(p.rxPackets ?? 0)} pkts`);
      const drops = Object.entries(n.drops).filter(([, v]) => v > 0);
      if (drops.length) out.push(`    drops ${drops.map(([r, v]) => `${r}=${human(v)}`).join(' ')}`);
      if (n.conflict) out.push(`    conflict: ${n.conflict}`);
      if (n.error) out.push(`    ${n.error}`);
    }
  }
  for (const r of d.remoteNetworks) out.push(`docker network in etcd, not on this host: ${r.name || '(unnamed)'} ${r.range} vni ${r.vni}${r.deleted ? ' (removed)' : ''}`);
  return out;
}
