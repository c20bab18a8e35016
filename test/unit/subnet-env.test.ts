import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, chmod, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseCidr } from '../../src/net/ip';
import {
  dockerOpts,
  dockerOptsEnvFile,
  formatSubnetEnv,
  parseSubnetEnv,
  readSubnetEnv,
  SubnetEnv,
  writeSubnetEnv,
} from '../../src/host/subnet-env';

const ENV: SubnetEnv = {
  network: parseCidr('10.244.0.0/16'),
  subnet: parseCidr('10.244.3.0/24'),
  mtu: 1450,
  ipMasq: true,
};

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'vxnet-subnet-env-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('formats exactly as flanneld writes subnet.env', () => {
  assert.equal(
    formatSubnetEnv(ENV),
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
  );
  assert.match(formatSubnetEnv({ ...ENV, ipMasq: false, subnet: parseCidr('10.5.64.0/18') }), /FLANNEL_SUBNET=10\.5\.64\.1\/18\n.*FLANNEL_IPMASQ=false\n$/s);
});

test('write then read round-trips and yields the leased subnet', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'run', 'flannel', 'subnet.env');
  await writeSubnetEnv(file, ENV);
  assert.equal(await readFile(file, 'utf8'), formatSubnetEnv(ENV));
  const back = await readSubnetEnv(file);
  assert.deepEqual(back, ENV);
  assert.equal((await stat(file)).mode & 0o777, 0o644);
  // No temporary files are left next to it.
  assert.deepEqual(await readdir(path.dirname(file)), ['subnet.env']);
});

test('rewrite replaces the content and keeps an existing file mode', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'subnet.env');
  await writeSubnetEnv(file, ENV);
  await chmod(file, 0o600);
  const next = { ...ENV, subnet: parseCidr('10.244.7.0/24'), ipMasq: false };
  await writeSubnetEnv(file, next);
  assert.deepEqual(await readSubnetEnv(file), next);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
});

test('missing file reads as undefined', async (t) => {
  const dir = await tempDir(t);
  assert.equal(await readSubnetEnv(path.join(dir, 'nope.env')), undefined);
});

test('tolerates shell syntax: comments, export, quotes, extra keys', () => {
  const env = parseSubnetEnv(
    '# written by hand\nexport FLANNEL_NETWORK="10.244.0.0/16"\nFLANNEL_SUBNET=\'10.244.3.1/24\'\n\nFLANNEL_MTU=1450 # overlay\nFLANNEL_IPMASQ=false\nFLANNEL_IPV6_NETWORK=fd00::/56\n',
  );
  assert.deepEqual(env, { ...ENV, ipMasq: false });
});

test('malformed files name the offending key', async (t) => {
  assert.throws(() => parseSubnetEnv('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n'), /^Error: FLANNEL_SUBNET: missing/);
  assert.throws(() => parseSubnetEnv(formatSubnetEnv(ENV).replace('1450', '14x0')), /FLANNEL_MTU: not an integer/);
  assert.throws(() => parseSubnetEnv(formatSubnetEnv(ENV).replace('=true', '=yes')), /FLANNEL_IPMASQ: must be true or false/);
  assert.throws(() => parseSubnetEnv(formatSubnetEnv(ENV).replace('10.244.0.0/16', '10.244.0.0')), /FLANNEL_NETWORK: not a CIDR/);
  const dir = await tempDir(t);
  const file = path.join(dir, 'subnet.env');
  await writeFile(file, 'garbage\n');
  await assert.rejects(readSubnetEnv(file), (e: Error) => e.message.startsWith(`${file}: FLANNEL_NETWORK: missing`));
});

test('dockerOpts follows mk-docker-opts.sh', () => {
  assert.equal(dockerOpts(ENV), '--bip=10.244.3.1/24 --ip-masq=false --mtu=1450');
  // flannel not masquerading: the script emits no --ip-masq, leaving docker's default (true).
  assert.equal(dockerOpts({ ...ENV, ipMasq: false }), '--bip=10.244.3.1/24 --mtu=1450');
  // -m: never emit --ip-masq.
  assert.equal(dockerOpts(ENV, { ipMasqOpt: false }), '--bip=10.244.3.1/24 --mtu=1450');
});

test('dockerOptsEnvFile matches the file mk-docker-opts.sh writes', () => {
  assert.equal(
    dockerOptsEnvFile(ENV),
    'DOCKER_OPT_BIP="--bip=10.244.3.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\n' +
      'DOCKER_OPTS=" --bip=10.244.3.1/24 --ip-masq=false --mtu=1450 "\n',
  );
  assert.equal(
    dockerOptsEnvFile({ ...ENV, ipMasq: false }),
    'DOCKER_OPT_BIP="--bip=10.244.3.1/24"\nDOCKER_OPT_MTU="--mtu=1450"\nDOCKER_OPTS=" --bip=10.244.3.1/24 --mtu=1450 "\n',
  );
});
