// `vxnet daemon` flags and --config: flanneld names, precedence, and one message naming each bad field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_HEALTHZ_PORT, defaultControlSocket, OptionError, parseFlags, DAEMON_FLAGS, resolveDaemonOptions } from '../../src/daemon/options';

function fails(argv: string[], field: string, reason?: RegExp): void {
  assert.throws(
    () => resolveDaemonOptions(argv),
    (err: unknown) => {
      assert.ok(err instanceof OptionError, `expected OptionError, got ${String(err)}`);
      assert.equal(err.field, field, err.message);
      if (reason) assert.match(err.reason, reason);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    },
  );
}

test('defaults follow flanneld', () => {
  const o = resolveDaemonOptions([]);
  assert.deepEqual(o.etcdEndpoints, ['http://127.0.0.1:2379']);
  assert.equal(o.etcdPrefix, '/coreos.com/network');
  assert.equal(o.subnetFile, '/run/flannel/subnet.env');
  assert.equal(o.ipMasq, false);
  assert.equal(o.leaseTtlSeconds, 86400);
  assert.equal(o.renewMarginMinutes, 60);
  assert.equal(o.healthzIp, '127.0.0.1');
  assert.equal(o.healthzPort, DEFAULT_HEALTHZ_PORT);
  assert.equal(o.controlSocket, defaultControlSocket('/run/flannel/subnet.env'));
});

test('flanneld flag spellings: --a=b, --a b, -a=b, repeated and comma lists, bare booleans', () => {
  const o = resolveDaemonOptions([
    '-etcd-endpoints=http://10.0.0.1:2379,https://10.0.0.2:2379',
    '--etcd-endpoints',
    'http://etcd.example:2379/',
    '--iface=eth1',
    '--iface',
    '198.18.0.1',
    '--public-ip=198.18.0.9',
    '--subnet-file',
    '/tmp/x/subnet.env',
    '--ip-masq',
    '--etcd-prefix=/my/net/',
    '--healthz-port=0',
  ]);
  assert.deepEqual(o.etcdEndpoints, ['http://10.0.0.1:2379', 'https://10.0.0.2:2379', 'http://etcd.example:2379']);
  assert.deepEqual(o.iface, ['eth1', '198.18.0.1']);
  assert.equal(o.publicIp, '198.18.0.9');
  assert.equal(o.subnetFile, '/tmp/x/subnet.env');
  assert.equal(o.ipMasq, true);
  assert.equal(o.etcdPrefix, '/my/net');
  assert.equal(o.healthzPort, 0);
  assert.equal(o.controlSocket, defaultControlSocket('/tmp/x/subnet.env'));
  assert.equal(resolveDaemonOptions(['--ip-masq=false']).ipMasq, false);
});

test('daemons with different subnet files get different control sockets', () => {
  assert.notEqual(defaultControlSocket('/run/a/subnet.env'), defaultControlSocket('/run/b/subnet.env'));
});

test('each bad flag is named', () => {
  fails(['--etcd-endpoints=foo://x:1'], '--etcd-endpoints', /scheme/);
  fails(['--etcd-endpoints=not a url'], '--etcd-endpoints', /not a URL/);
  fails(['--etcd-endpoints=http://h:2379/v2/keys'], '--etcd-endpoints');
  fails(['--public-ip=1.2.3'], '--public-ip', /IPv4/);
  fails(['--iface=bad name!'], '--iface');
  fails(['--etcd-prefix=relative'], '--etcd-prefix');
  fails(['--healthz-port=70000'], '--healthz-port', /0\.\.65535/);
  fails(['--healthz-port=http'], '--healthz-port', /whole number/);
  fails(['--healthz-ip=localhost'], '--healthz-ip');
  fails(['--log-level=loud'], '--log-level');
  fails(['--ip-masq=maybe'], '--ip-masq');
  fails(['--subnet-file='], '--subnet-file');
  fails(['--nope'], '--nope', /unknown flag/);
  fails(['--iface'], '--iface', /needs a value/);
  fails(['stray'], 'stray', /unexpected argument/);
  fails(['--net-config=/nonexistent/net-conf.json'], '--net-config', /cannot read/);
  fails(['--etcd-certfile=/nonexistent/cert.pem'], '--etcd-certfile', /cannot read/);
  fails(['--etcd-password=x'], '--etcd-password', /username/);
  fails(['--subnet-lease-ttl=60', '--subnet-lease-renew-margin=1'], '--subnet-lease-renew-margin', /not shorter/);
});

test('--config holds the same settings; flags win', (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-opt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vxnet.json');
  writeFileSync(file, JSON.stringify({ 'etcd-endpoints': ['http://10.0.0.1:2379'], iface: 'eth3', 'ip-masq': true, 'healthz-port': 9999, 'public-ip': '198.18.0.5' }));
  const o = resolveDaemonOptions([`--config=${file}`, '--public-ip=198.18.0.6']);
  assert.deepEqual(o.etcdEndpoints, ['http://10.0.0.1:2379']);
  assert.deepEqual(o.iface, ['eth3']);
  assert.equal(o.ipMasq, true);
  assert.equal(o.healthzPort, 9999);
  assert.equal(o.publicIp, '198.18.0.6');

  writeFileSync(file, '{"iface": 3}');
  fails([`--config=${file}`], `${file}: iface`, /string/);
  writeFileSync(file, '{"ifase": "eth0"}');
  fails([`--config=${file}`], `${file}: ifase`, /unknown setting/);
  writeFileSync(file, '{not json');
  fails([`--config=${file}`], '--config', /not valid JSON/);
  writeFileSync(file, JSON.stringify({ 'public-ip': '300.1.1.1' }));
  fails([`--config=${file}`], '--public-ip');
  fails([`--config=${path.join(dir, 'missing.json')}`], '--config', /ENOENT/);
});

test('parseFlags keeps positionals after --', () => {
  const r = parseFlags(['--iface=eth0', '--', '--not-a-flag'], DAEMON_FLAGS);
  assert.deepEqual(r.positionals, ['--not-a-flag']);
});
