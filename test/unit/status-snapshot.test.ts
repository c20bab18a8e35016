// Status and metrics while serving the lease snapshot, refused leases, and the --state-dir flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DaemonStatus, formatStatus } from '../../src/daemon/status';
import { renderMetrics } from '../../src/metrics/prometheus';
import { OptionError, resolveDaemonOptions } from '../../src/daemon/options';

const base: DaemonStatus = {
  version: '0.1.0',
  pid: 42,
  startedAt: '2026-11-21T10:00:00.000Z',
  uptimeSeconds: 65,
  rssBytes: 50 * 1048576,
  network: '10.244.0.0/16',
  subnetFile: '/run/flannel/subnet.env',
  ipMasq: false,
  backend: { kind: 'vxlan', type: 'vxlan', mtu: 1450, device: 'vxnet0', iface: 'eth0', publicIp: '198.18.0.1' },
  lease: { subnet: '10.244.3.0/24', state: 'held', renewals: 0 },
  etcd: { state: 'unreachable', endpoints: ['http://198.18.0.254:2379'], prefix: '/coreos.com/network', snapshotFrom: '2026-11-21T09:59:00.000Z', lastError: 'sync: refused' },
  peers: [],
  rejected: { malformed: 0, overlap: 0, outside: 0 },
  refusedLeases: [{ subnet: '10.244.250.0/24', publicIp: '10.244.7.7', reason: 'public_ip_in_network', detail: 'PublicIP 10.244.7.7 lies inside the overlay network 10.244.0.0/16' }],
  refusedLeasesTotal: { public_ip_in_network: 2 },
  skippedPeers: [],
  counters: {},
  drops: {},
};

test('serving the snapshot: the etcd line says so with its time; refused leases are listed and exported', () => {
  const text = formatStatus(base, Date.parse('2026-11-21T10:01:05Z'));
  assert.match(text, /^etcd\s+UNREACHABLE\s+http:\/\/198\.18\.0\.254:2379\s+\(etcd unreachable, serving snapshot from 2026-11-21T09:59:00\.000Z; retrying\)\s+last error: sync: refused$/m);
  assert.match(text, /^refused lease: 10\.244\.250\.0\/24 \(public IP 10\.244\.7\.7\) public_ip_in_network: PublicIP 10\.244\.7\.7 lies inside/m);
  const plain = formatStatus({ ...base, etcd: { ...base.etcd, snapshotFrom: undefined } });
  assert.match(plain, /\(forwarding with the last known peers; retrying\)/);
  const m = renderMetrics(base);
  assert.match(m, /^vxnet_leases_refused_total\{reason="public_ip_in_network"\} 2$/m);
  assert.match(m, /^# TYPE vxnet_leases_refused_total counter$/m);
});

test('--state-dir defaults to the subnet file directory and can be moved', () => {
  assert.equal(resolveDaemonOptions([]).stateDir, '/run/flannel');
  assert.equal(resolveDaemonOptions(['--subnet-file=/var/lib/x/subnet.env']).stateDir, '/var/lib/x');
  assert.equal(resolveDaemonOptions(['--state-dir', '/var/lib/vxnet']).stateDir, '/var/lib/vxnet');
  assert.throws(() => resolveDaemonOptions(['--state-dir=']), (e: unknown) => e instanceof OptionError && e.field === '--state-dir');
});
