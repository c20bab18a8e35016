// `vxnet daemon` flags and --config: flanneld names, precedence, and one message naming each bad field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_HEALTHZ_PORT, defaultControlSocket, envName, OptionError, parseFlags, DAEMON_FLAGS, readEnvSettings, resolveDaemonOptions } from '../../src/daemon/options';

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

// ---- flanneld's whole command line and its environment (issue 10) ----------------------------

/** Every flag of flanneld's main.go (flannel master, plus the klog flags it copies and 0.7's). */
const FLANNELD_FLAGS = [
  'etcd-endpoints', 'etcd-prefix', 'etcd-keyfile', 'etcd-certfile', 'etcd-cafile', 'etcd-username', 'etcd-password',
  'iface', 'iface-regex', 'iface-can-reach', 'subnet-file', 'public-ip', 'public-ipv6', 'subnet-lease-renew-margin',
  'ip-masq', 'ip-masq-fully-random-disable', 'kube-subnet-mgr', 'kube-api-url', 'kube-annotation-prefix', 'kubeconfig-file',
  'version', 'healthz-ip', 'healthz-port', 'iptables-resync', 'iptables-forward-rules', 'ip-blackhole-route',
  'net-config-path', 'set-node-network-unavailable', 'v', 'vmodule', 'log_backtrace_at',
  'listen', 'remote', 'remote-keyfile', 'remote-certfile', 'remote-cafile', 'networks', 'subnet-dir',
];

/** resolveDaemonOptions with exactly `env` as the environment. */
function failsEnv(argv: string[], env: Record<string, string>, field: string, reason?: RegExp): void {
  assert.throws(
    () => resolveDaemonOptions(argv, env),
    (err: unknown) => {
      assert.ok(err instanceof OptionError, `expected OptionError, got ${String(err)}`);
      assert.equal(err.field, field, err.message);
      if (reason) assert.match(err.reason, reason);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    },
  );
}

test('every flanneld flag is known: implemented, or refused by name with a reason', () => {
  for (const name of FLANNELD_FLAGS) {
    const spec = DAEMON_FLAGS[name];
    assert.ok(spec, `--${name} is known`);
    if (spec.refused) {
      const argv = spec.kind === 'bool' ? [`--${name}`] : [`--${name}=x`];
      failsEnv(argv, {}, `--${name}`, /not supported by vxnet: \S/);
    } else {
      // An implemented flag parses with a value of its kind.
      const value = { bool: undefined, int: '5', string: undefined, list: undefined, repeat: 'eth.*', optstring: '/run/x.sock' }[spec.kind];
      if (value !== undefined) assert.doesNotThrow(() => parseFlags([`--${name}=${value}`], DAEMON_FLAGS), `--${name}`);
    }
  }
  // A refused boolean set to false asks for what vxnet does anyway.
  assert.equal(resolveDaemonOptions(['--kube-subnet-mgr=false', '--ip-blackhole-route=false', '--set-node-network-unavailable=0'], {}).ipMasq, false);
});

test('forward rules: on by default, Go boolean spellings turn them off; --iptables-resync', () => {
  const d = resolveDaemonOptions([], {});
  assert.equal(d.iptablesForwardRules, true);
  assert.equal(d.iptablesResyncSeconds, 5);
  assert.equal(d.ipMasqRandomFully, true);
  assert.deepEqual(d.ifaceRegex, []);
  assert.equal(d.ifaceCanReach, undefined);
  assert.deepEqual(d.notices, []);
  for (const v of ['false', 'FALSE', 'False', 'f', 'F', '0']) assert.equal(resolveDaemonOptions([`--iptables-forward-rules=${v}`], {}).iptablesForwardRules, false, v);
  for (const v of ['true', 'TRUE', 'True', 't', 'T', '1']) assert.equal(resolveDaemonOptions([`-iptables-forward-rules=${v}`], {}).iptablesForwardRules, true, v);
  assert.equal(resolveDaemonOptions(['--iptables-forward-rules'], {}).iptablesForwardRules, true);
  assert.equal(resolveDaemonOptions(['-iptables-resync', '12'], {}).iptablesResyncSeconds, 12);
  assert.equal(resolveDaemonOptions(['--ip-masq-fully-random-disable'], {}).ipMasqRandomFully, false);
  failsEnv(['--iptables-resync=0'], {}, '--iptables-resync', /1\.\.86400/);
  failsEnv(['--iptables-resync=5s'], {}, '--iptables-resync', /whole number/);
  failsEnv(['--iptables-forward-rules=yes'], {}, '--iptables-forward-rules', /true or false/);
  // Go's flag package: a boolean takes its value only with `=`; `--flag false` leaves a positional.
  failsEnv(['--iptables-forward-rules', 'false'], {}, 'false', /unexpected argument/);
});

test('-v, --version, --net-config-path and the interface flags', () => {
  assert.equal(resolveDaemonOptions(['-v=2'], {}).logLevel, 'info');
  assert.equal(resolveDaemonOptions(['-v', '4'], {}).logLevel, 'debug');
  assert.equal(resolveDaemonOptions(['--v=6', '--log-level=warn'], {}).logLevel, 'warn');
  failsEnv(['-v=loud'], {}, '--v', /whole number/);
  assert.equal(parseFlags(['-version'], DAEMON_FLAGS).settings.get('version'), true);
  const n = resolveDaemonOptions(['--net-config-path=/etc/kube-flannel/net-conf.json'], {});
  assert.equal(n.notices.length, 1);
  assert.match(n.notices[0], /^--net-config-path ignored/);

  const o = resolveDaemonOptions(['--iface-regex=^eth[0-9]{1,2}$', '-iface-regex', '198\\.18\\..*', '--iface-can-reach=198.18.0.254'], {});
  assert.deepEqual(o.ifaceRegex, ['^eth[0-9]{1,2}$', '198\\.18\\..*'], 'a regex with a comma stays whole');
  assert.equal(o.ifaceCanReach, '198.18.0.254');
  failsEnv(['--iface-regex=(eth'], {}, '--iface-regex', /regular expression/);
  failsEnv(['--iface-can-reach=gateway'], {}, '--iface-can-reach', /IPv4/);
});

test('FLANNELD_<FLAG> variables set flags as flanneld reads them; the command line wins', (t) => {
  const env = {
    FLANNELD_ETCD_ENDPOINTS: 'http://10.0.0.1:2379,http://10.0.0.2:2379',
    FLANNELD_ETCD_PREFIX: '/env/network',
    FLANNELD_IFACE: 'eth7',
    FLANNELD_IP_MASQ: 'true',
    FLANNELD_IPTABLES_FORWARD_RULES: 'false',
    FLANNELD_IPTABLES_RESYNC: '9',
    FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '30',
    FLANNELD_HEALTHZ_PORT: '0',
    FLANNELD_IFACE_REGEX: 'eth[0-9],x',
    // Empty means unset, as in flanneld; --version is never read from the environment.
    FLANNELD_PUBLIC_IP: '',
    FLANNELD_VERSION: 'true',
    // Not a flanneld variable: ignored.
    FLANNEL_IFACE: 'wrong',
  };
  const o = resolveDaemonOptions([], env);
  assert.deepEqual(o.etcdEndpoints, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
  assert.equal(o.etcdPrefix, '/env/network');
  assert.deepEqual(o.iface, ['eth7']);
  assert.equal(o.ipMasq, true);
  assert.equal(o.iptablesForwardRules, false);
  assert.equal(o.iptablesResyncSeconds, 9);
  assert.equal(o.renewMarginMinutes, 30);
  assert.equal(o.healthzPort, 0);
  assert.deepEqual(o.ifaceRegex, ['eth[0-9],x']);
  assert.equal(o.publicIp, undefined);

  const w = resolveDaemonOptions(['--iface=eth1', '--iptables-forward-rules', '--etcd-prefix=/cli/network'], env);
  assert.deepEqual(w.iface, ['eth1'], 'a list flag on the command line replaces the variable');
  assert.equal(w.iptablesForwardRules, true);
  assert.equal(w.etcdPrefix, '/cli/network');

  // The environment sits above a --config file.
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-env-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'vxnet.json');
  writeFileSync(file, JSON.stringify({ 'etcd-prefix': '/file/network', 'healthz-port': 9000 }));
  const f = resolveDaemonOptions([`--config=${file}`], { FLANNELD_ETCD_PREFIX: '/env/network' });
  assert.equal(f.etcdPrefix, '/env/network');
  assert.equal(f.healthzPort, 9000);

  // Bad values name the variable; refused flags too.
  failsEnv([], { FLANNELD_IPTABLES_RESYNC: 'often' }, 'FLANNELD_IPTABLES_RESYNC', /whole number/);
  failsEnv([], { FLANNELD_IPTABLES_FORWARD_RULES: 'maybe' }, 'FLANNELD_IPTABLES_FORWARD_RULES', /true or false/);
  failsEnv([], { FLANNELD_ETCD_ENDPOINTS: 'ftp://x' }, 'FLANNELD_ETCD_ENDPOINTS', /scheme/);
  failsEnv([], { FLANNELD_PUBLIC_IP: '1.2.3' }, 'FLANNELD_PUBLIC_IP', /IPv4/);
  failsEnv([], { FLANNELD_KUBE_SUBNET_MGR: '1' }, 'FLANNELD_KUBE_SUBNET_MGR', /etcd only/);
  failsEnv([], { FLANNELD_SUBNET_DIR: '/run/flannel/networks' }, 'FLANNELD_SUBNET_DIR', /not supported/);
  // ...but a bad variable does not matter when the command line sets the flag.
  assert.equal(resolveDaemonOptions(['--iptables-resync=3'], { FLANNELD_IPTABLES_RESYNC: 'often' }).iptablesResyncSeconds, 3);
  assert.equal(resolveDaemonOptions(['--ip-masq'], { FLANNELD_IP_MASQ: 'maybe' }).ipMasq, true);
  assert.equal(envName('iptables-forward-rules'), 'FLANNELD_IPTABLES_FORWARD_RULES');
  assert.deepEqual([...readEnvSettings({ FLANNELD_LOG_BACKTRACE_AT: 'x.go:1' }).keys()], ['log_backtrace_at']);
});

test('--docker-plugin: bare or =SOCKET; the Engine API from --docker-engine or DOCKER_HOST; the other --docker-* flags need it', () => {
  assert.equal(resolveDaemonOptions([], {}).docker, undefined);
  const bare = resolveDaemonOptions(['--docker-plugin', '--subnet-file=/run/x/subnet.env'], {}).docker;
  assert.deepEqual(bare, {
    socket: '/run/docker/plugins/vxnet.sock',
    engineSocket: '/var/run/docker.sock',
    syncNetworks: false,
    stateDir: '/run/x/vxnet-docker',
    defaultPool: '10.128.0.0/9',
    defaultPoolSize: 16,
  });
  const full = resolveDaemonOptions(['--docker-plugin=/tmp/p.sock', '--docker-sync-networks', '--docker-default-pool=10.200.0.0/13', '--docker-default-pool-size=20', '--docker-state-dir=/var/lib/vx'], {
    DOCKER_HOST: 'unix:///tmp/d.sock',
  }).docker;
  assert.equal(full?.socket, '/tmp/p.sock');
  assert.equal(full?.engineSocket, '/tmp/d.sock');
  assert.equal(full?.syncNetworks, true);
  assert.equal(full?.stateDir, '/var/lib/vx');
  assert.equal(full?.defaultPoolSize, 20);
  assert.equal(resolveDaemonOptions(['--docker-plugin', '--docker-engine=/e.sock'], { DOCKER_HOST: 'tcp://1.2.3.4:2375' }).docker?.engineSocket, '/e.sock');
  // A bare --docker-plugin takes no separate value: the next word is a positional.
  failsEnv(['--docker-plugin', '/tmp/p.sock'], {}, '/tmp/p.sock', /unexpected argument/);
  failsEnv(['--docker-plugin=relative.sock'], {}, '--docker-plugin', /absolute/);
  failsEnv(['--docker-plugin'], { DOCKER_HOST: 'tcp://1.2.3.4:2375' }, 'DOCKER_HOST', /unix:\/\/\/path/);
  failsEnv(['--docker-sync-networks'], {}, '--docker-sync-networks', /needs --docker-plugin/);
  failsEnv(['--docker-engine=/e.sock'], {}, '--docker-engine', /needs --docker-plugin/);
  failsEnv(['--docker-plugin', '--docker-default-pool=10.0.0.0'], {}, '--docker-default-pool', /CIDR/);
  failsEnv(['--docker-plugin', '--docker-default-pool=10.200.0.0/16', '--docker-default-pool-size=12'], {}, '--docker-default-pool-size', /larger than/);
  failsEnv(['--docker-plugin'], { FLANNELD_DOCKER_DEFAULT_POOL_SIZE: '40' }, 'FLANNELD_DOCKER_DEFAULT_POOL_SIZE', /8\.\.28/);
  // From the environment as every flag: FLANNELD_DOCKER_PLUGIN.
  assert.equal(resolveDaemonOptions([], { FLANNELD_DOCKER_PLUGIN: '/tmp/e.sock' }).docker?.socket, '/tmp/e.sock');
});
