// Status table and Prometheus exposition rendered from a status snapshot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type DaemonStatus, formatStatus } from '../../src/daemon/status';
import { renderMetrics } from '../../src/metrics/prometheus';

function sample(over: Partial<DaemonStatus> = {}): DaemonStatus {
  return {
    version: '0.1.0',
    pid: 42,
    startedAt: '2026-11-21T10:00:00.000Z',
    uptimeSeconds: 65,
    rssBytes: 50 * 1048576,
    network: '10.244.0.0/16',
    subnetFile: '/run/flannel/subnet.env',
    ipMasq: true,
    backend: { kind: 'vxlan', type: 'vxlan', mtu: 1450, device: 'vxnet0', iface: 'eth0', publicIp: '198.18.0.1' },
    lease: { subnet: '10.244.3.0/24', state: 'held', expiration: '2026-11-22T10:00:00.000Z', renewals: 2 },
    etcd: { state: 'connected', endpoints: ['http://198.18.0.254:2379'], prefix: '/coreos.com/network' },
    peers: [
      { subnet: '10.244.7.0/24', publicIp: '198.18.0.2', backendType: 'vxlan', vtepMac: '02:00:00:00:00:02', installed: true, txPackets: 1500000, rxPackets: 12, txBytes: 2e9, rxBytes: 900 },
      { subnet: '10.244.9.0/24', publicIp: '198.18.0.3', backendType: 'vxlan', installed: false },
    ],
    rejected: { malformed: 1, overlap: 0, outside: 0 },
    skippedPeers: [],
    counters: { txPackets: 1500000, rxPackets: 12 },
    drops: { rx_bad_vni: 3, rx_short: 0 },
    ...over,
  };
}

test('the table shows lease, backend, etcd, peers with state and counters, drops by reason', () => {
  const text = formatStatus(sample(), Date.parse('2026-11-21T10:01:05Z'));
  assert.match(text, /lease\s+10\.244\.3\.0\/24\s+held \(expires in 2[34]\.\dh\)\s+renewals 2/);
  assert.match(text, /backend\s+vxlan .*device vxnet0\s+mtu 1450\s+iface eth0\s+public-ip 198\.18\.0\.1\s+ip-masq/);
  assert.match(text, /etcd\s+connected\s+http:\/\/198\.18\.0\.254:2379/);
  assert.match(text, /10\.244\.7\.0\/24\s+198\.18\.0\.2\s+vxlan\s+02:00:00:00:00:02\s+installed\s+1\.50M/);
  assert.match(text, /10\.244\.9\.0\/24\s+198\.18\.0\.3\s+vxlan\s+-\s+pending/);
  assert.match(text, /rejected leases: malformed=1/);
  assert.match(text, /drops\s+rx_bad_vni=3$/m);
});

test('an etcd outage is spelled out', () => {
  const text = formatStatus(sample({ etcd: { state: 'unreachable', endpoints: ['http://e:2379'], prefix: '/p', lastError: 'deadline exceeded' } }));
  assert.match(text, /UNREACHABLE .*forwarding with the last known peers; retrying.*deadline exceeded/);
});

test('metrics: valid exposition lines with HELP/TYPE once per family', () => {
  const text = renderMetrics(sample());
  const families = new Map<string, string>();
  for (const line of text.trimEnd().split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      assert.ok(!families.has(name), `family ${name} declared twice`);
      families.set(name, type);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = /^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|NaN)$/.exec(line);
    assert.ok(m, `bad sample line: ${line}`);
    assert.ok(families.has(m[1]), `sample before its TYPE: ${line}`);
    if (families.get(m[1]) === 'counter') assert.ok(m[1].endsWith('_total'), `counter without _total: ${m[1]}`);
  }
  assert.match(text, /^vxnet_up 1$/m);
  assert.match(text, /^vxnet_etcd_up 1$/m);
  assert.match(text, /^vxnet_peers\{state="installed"\} 1$/m);
  assert.match(text, /^vxnet_peers\{state="pending"\} 1$/m);
  assert.match(text, /^vxnet_drops_total\{reason="rx_bad_vni"\} 3$/m);
  assert.match(text, /^vxnet_tx_packets_total 1500000$/m);
  assert.match(text, /^vxnet_peer_tx_packets_total\{peer="10\.244\.7\.0\/24",public_ip="198\.18\.0\.2"\} 1500000$/m);
  assert.match(text, /^vxnet_leases_rejected_total\{reason="malformed"\} 1$/m);
});

test('metrics: lost lease and etcd down read as 0', () => {
  const text = renderMetrics(sample({ lease: { subnet: '10.244.3.0/24', state: 'lost', renewals: 0 }, etcd: { state: 'unreachable', endpoints: [], prefix: '/' } }));
  assert.match(text, /^vxnet_up 0$/m);
  assert.match(text, /^vxnet_etcd_up 0$/m);
});

test('iptables: the table line and vxnet_iptables_repairs_total', () => {
  const iptables = {
    forwardRules: true,
    ipMasq: true,
    mode: 'nf_tables',
    legacyTablesPresent: true,
    resyncSeconds: 5,
    chains: ['filter/VXNET-FWD', 'nat/VXNET-POSTRTG'],
    repairs: 2,
    lastError: 'iptables-restore: exit 4',
  };
  const text = formatStatus(sample({ iptables }));
  assert.match(
    text,
    /^iptables  forward rules, ip-masq {2}chains filter\/VXNET-FWD nat\/VXNET-POSTRTG {2}resync 5s {2}repairs 2 {2}\(nf_tables, iptables-legacy tables present too\) {2}last error: iptables-restore: exit 4$/m,
  );
  assert.match(renderMetrics(sample({ iptables })), /^vxnet_iptables_repairs_total 2$/m);
  const off = formatStatus(sample({ iptables: { forwardRules: false, ipMasq: false, resyncSeconds: 5, chains: [], repairs: 0 } }));
  assert.match(off, /^iptables  no forward rules$/m);
  // A status without the section (an older daemon) shows no iptables line and no metric.
  assert.doesNotMatch(formatStatus(sample()), /^iptables/m);
  assert.doesNotMatch(renderMetrics(sample()), /vxnet_iptables_repairs_total/);
});
