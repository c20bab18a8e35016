// etcd over TLS and with auth, for real: certificates made by the test with openssl, etcd with client
// TLS (client certificates required) and etcd with auth on (root plus a user whose role covers only the
// prefix), daemons on namespaced hosts. Wrong CA, missing client certificate, wrong password and a
// missing permission each give one line naming the flag, exit 1, and leave the host unchanged.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Cluster, sleep } from '../../src/testbed/cluster';
import type { BedHost } from '../../src/testbed/netbed';
import { ping } from '../../src/testbed/traffic';
import { makeTestPki, type TestPki } from '../../src/testbed/tls';

const NETWORK = '10.244.0.0/16';
const PREFIX = '/coreos.com/network';
// The switch namespace's address, where the testbed runs etcd (src/testbed/netbed.ts).
const ETCD_IP = '198.18.0.254';

async function withLogs<T>(c: Cluster | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (c && err instanceof Error) {
      const tails = [...c.daemons.values()].map((d) => `--- ${d.host.name} (pid ${d.pid}) ---\n${d.output().split('\n').slice(-25).join('\n')}`);
      err.message += `\n${tails.join('\n')}\n--- etcd ---\n${c.etcd.stderr.slice(-1500)}`;
    }
    throw err;
  }
}

async function assertReach(c: Cluster, from: BedHost, to: BedHost): Promise<void> {
  let last;
  for (let attempt = 0; attempt < 5; attempt++) {
    last = await ping(c.bed, from.containerNs, to.containerIp as string, { count: 3, intervalS: 0.2, timeoutS: 2 });
    if (last.received === last.transmitted) return;
    await sleep(500);
  }
  assert.fail(`${from.name} container -> ${to.containerIp}: ${last?.received}/${last?.transmitted} replies`);
}

async function links(c: Cluster, ns: string): Promise<string[]> {
  const out = await c.bed.execOk(ns, ['ip', '-o', 'link', 'show']);
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.replace(/^\d+:\s*/, '').split(':')[0])
    .sort();
}

async function leaseKeys(c: Cluster, prefix = PREFIX): Promise<string[]> {
  return (await c.etcdctl(['get', `${prefix}/subnets/`, '--prefix', '--keys-only'])).split('\n').filter((l) => l.trim() !== '').sort();
}

interface FailCase {
  name: string;
  args: string[];
  line: RegExp;
}

/** Runs each case on `h` (no daemon there): exit 1, exactly one stderr line matching, host and etcd unchanged. */
async function assertFailures(c: Cluster, h: BedHost, cases: FailCase[], note: (line: string) => void): Promise<void> {
  const linksBefore = await links(c, h.ns);
  const routesBefore = await c.bed.execOk(h.ns, ['ip', '-4', 'route', 'show']);
  const keysBefore = await leaseKeys(c);
  for (const k of cases) {
    const r = await c.bed.exec(h.ns, c.daemonArgv(h, k.args), { timeoutMs: 60_000 });
    const label = `${k.name}: exit ${r.code}, stderr ${JSON.stringify(r.stderr)}`;
    assert.equal(r.code, 1, label);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${label}`);
    assert.match(lines[0], k.line, label);
    note(`${k.name}: ${lines[0]}`);
    assert.ok(lines[0].length < 400, `short: ${label}`);
    assert.deepEqual(await links(c, h.ns), linksBefore, `links unchanged: ${label}`);
    assert.equal(await c.bed.execOk(h.ns, ['ip', '-4', 'route', 'show']), routesBefore, `routes unchanged: ${label}`);
    assert.ok(!existsSync(c.subnetFile(h)), `no subnet.env: ${label}`);
    assert.deepEqual(await leaseKeys(c), keysBefore, `no lease taken: ${label}`);
  }
}

describe('etcd over TLS with client certificates', { timeout: 300_000 }, () => {
  let c: Cluster;
  let pki: TestPki;
  let otherPki: TestPki;
  let dir: string;
  let tlsArgs: string[];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'vxnet-sntls-pki-'));
    pki = makeTestPki(path.join(dir, 'good'), ETCD_IP);
    otherPki = makeTestPki(path.join(dir, 'other'), ETCD_IP);
    const ctl = [`--cacert=${pki.caFile}`, `--cert=${pki.clientCertFile}`, `--key=${pki.clientKeyFile}`];
    c = await Cluster.create({
      hosts: 3,
      tag: 'sntls',
      netConf: { Network: NETWORK, Backend: { Type: 'vxlan' } },
      etcdTls: { certFile: pki.serverCertFile, keyFile: pki.serverKeyFile, clientCaFile: pki.caFile },
      etcdctlArgs: ctl,
    });
    assert.equal(c.bed.switchIp, ETCD_IP, 'the server certificate names the address etcd listens on');
    tlsArgs = [`--etcd-cafile=${pki.caFile}`, `--etcd-certfile=${pki.clientCertFile}`, `--etcd-keyfile=${pki.clientKeyFile}`];
  });

  after(async () => {
    await c?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('daemons work with --etcd-cafile/--etcd-certfile/--etcd-keyfile; containers talk across hosts', { timeout: 120_000 }, () =>
    withLogs(c, async () => {
      assert.match(c.endpoint, /^https:\/\/198\.18\.0\.254:2379$/);
      for (const i of [1, 2]) await c.startDaemon(c.host(i), { args: tlsArgs });
      await c.waitForMesh(30_000);
      const st = await c.status(c.host(1));
      assert.equal(st.etcd.state, 'connected');
      assert.deepEqual(st.etcd.endpoints, [c.endpoint]);
      assert.equal((await leaseKeys(c)).length, 2);
      await assertReach(c, c.host(1), c.host(2));
      await assertReach(c, c.host(2), c.host(1));
    }),
  );

  test('a wrong CA or no client certificate: one line naming the flag, exit 1, host unchanged', { timeout: 120_000 }, (t) =>
    withLogs(c, async () => {
      const h3 = c.host(3);
      await assertFailures(c, h3, [
        {
          name: 'wrong CA',
          args: [`--etcd-cafile=${otherPki.caFile}`, `--etcd-certfile=${pki.clientCertFile}`, `--etcd-keyfile=${pki.clientKeyFile}`],
          line: /^vxnet: --etcd-cafile: cannot verify the certificate of etcd at https:\/\/198\.18\.0\.254:2379: certificate signed by unknown authority/,
        },
        { name: 'no CA at all', args: [`--etcd-certfile=${pki.clientCertFile}`, `--etcd-keyfile=${pki.clientKeyFile}`], line: /^vxnet: --etcd-cafile: .*certificate signed by unknown authority/ },
        { name: 'no client certificate', args: [`--etcd-cafile=${pki.caFile}`], line: /^vxnet: --etcd-certfile: etcd at https:\/\/198\.18\.0\.254:2379 refused our client certificate/ },
        { name: 'a CA file that is not a certificate', args: [`--etcd-cafile=${pki.clientKeyFile}`, `--etcd-certfile=${pki.clientCertFile}`, `--etcd-keyfile=${pki.clientKeyFile}`], line: /^vxnet: --etcd-cafile: \S+client\.key: not a PEM certificate$/ },
        {
          name: 'a key that does not belong to the certificate',
          args: [`--etcd-cafile=${pki.caFile}`, `--etcd-certfile=${pki.clientCertFile}`, `--etcd-keyfile=${otherPki.clientKeyFile}`],
          line: /^vxnet: --etcd-keyfile: \S+other\/client\.key: .*key values mismatch/,
        },
        {
          name: 'a client certificate from another CA',
          args: [`--etcd-cafile=${pki.caFile}`, `--etcd-certfile=${otherPki.clientCertFile}`, `--etcd-keyfile=${otherPki.clientKeyFile}`],
          line: /^vxnet: --etcd-certfile: etcd at https:\/\/198\.18\.0\.254:2379 refused our client certificate/,
        },
      ], (l) => t.diagnostic(l));
    }),
  );
});

describe('etcd with auth on (a user limited to the prefix)', { timeout: 300_000 }, () => {
  let c: Cluster;
  const userArgs = ['--etcd-username=vxnet', '--etcd-password=vxnet-secret'];

  before(async () => {
    c = await Cluster.create({ hosts: 3, tag: 'snauth', netConf: { Network: NETWORK, Backend: { Type: 'udp' } } });
    await withLogs(c, async () => {
      await c.etcdctl(['user', 'add', 'root:root-secret']);
      await c.etcdctl(['role', 'add', 'flannel']);
      await c.etcdctl(['role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', `${PREFIX}/`]);
      await c.etcdctl(['user', 'add', 'vxnet:vxnet-secret']);
      await c.etcdctl(['user', 'grant-role', 'vxnet', 'flannel']);
      await c.etcdctl(['role', 'add', 'reader']);
      await c.etcdctl(['role', 'grant-permission', 'reader', '--prefix=true', 'read', `${PREFIX}/`]);
      await c.etcdctl(['user', 'add', 'viewer:viewer-secret']);
      await c.etcdctl(['user', 'grant-role', 'viewer', 'reader']);
      await c.etcdctl(['auth', 'enable']);
      // From now on the cluster's etcdctl (and the testbed's health check) authenticate as root.
      c.etcd.etcdctlArgs.push('--user=root:root-secret');
    });
  });

  after(async () => {
    await c?.destroy();
  });

  test('daemons work with --etcd-username/--etcd-password, also across an etcd restart', { timeout: 180_000 }, () =>
    withLogs(c, async () => {
      for (const i of [1, 2]) await c.startDaemon(c.host(i), { args: userArgs });
      await c.waitForMesh(30_000);
      await assertReach(c, c.host(1), c.host(2));
      assert.equal((await c.status(c.host(1))).etcd.state, 'connected');

      // etcd's auth tokens do not survive a restart: the daemons must authenticate again, watch included.
      c.etcd.kill9();
      await c.waitFor(c.host(1), 'etcd unreachable', (s) => s.etcd.state === 'unreachable', 60_000);
      await c.etcd.restart();
      await c.waitFor(c.host(1), 'etcd connected again', (s) => s.etcd.state === 'connected', 60_000);
      const key = `${PREFIX}/subnets/10.244.77.0-24`;
      await c.etcdctl(['put', key, '{"PublicIP":"198.18.0.77","PublicIPv6":null,"BackendType":"udp"}']);
      for (const i of [1, 2]) await c.waitFor(c.host(i), 'a lease written after the restart is seen', (s) => s.peers.some((p) => p.subnet === '10.244.77.0/24'), 60_000);
      await c.etcdctl(['del', key]);
    }),
  );

  test('wrong password, missing permission, read-only user, no user: one line naming the flag, exit 1, host unchanged', { timeout: 180_000 }, (t) =>
    withLogs(c, async () => {
      await assertFailures(c, c.host(3), [
        { name: 'wrong password', args: ['--etcd-username=vxnet', '--etcd-password=nope'], line: /^vxnet: --etcd-password: authentication failed for user "vxnet"/ },
        { name: 'unknown user', args: ['--etcd-username=nobody', '--etcd-password=x'], line: /^vxnet: --etcd-password: authentication failed for user "nobody"/ },
        {
          name: 'prefix outside the role',
          args: [...userArgs, '--etcd-prefix=/other/network'],
          line: /^vxnet: --etcd-username: permission denied on \/other\/network for user "vxnet"/,
        },
        { name: 'read-only role', args: ['--etcd-username=viewer', '--etcd-password=viewer-secret'], line: /^vxnet: --etcd-username: permission denied on \/coreos\.com\/network for user "viewer"/ },
        { name: 'no user', args: [], line: /^vxnet: --etcd-username: etcd at http:\/\/198\.18\.0\.254:2379 has auth enabled/ },
      ], (l) => t.diagnostic(l));
    }),
  );
});
