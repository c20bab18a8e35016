// The lease snapshot file: round trip, corruption of every kind, foreign snapshots, atomic writes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseCidr } from '../../src/net/ip';
import { checkSnapshot, decodeSnapshot, encodeSnapshot, readSnapshot, removeStaleTemps, SnapshotError, snapshotPath, SnapshotWriter, writeSnapshot, type Snapshot } from '../../src/subnet/snapshot';

const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}';
const OWN = parseCidr('10.244.3.0/24');

function sample(n = 3): Omit<Snapshot, 'version'> {
  const records = [];
  for (let i = 1; i <= n; i++) {
    records.push({
      key: `${PREFIX}/subnets/10.244.${i}.0-24`,
      subnet: parseCidr(`10.244.${i}.0/24`),
      value: `{"PublicIP":"198.18.0.${i}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:0${i}"}}`,
      createRevision: 10 + i,
      modRevision: 20 + i,
      leaseId: `${7000 + i}`,
    });
  }
  return {
    savedAt: Date.parse('2026-12-01T12:00:00Z'),
    prefix: PREFIX,
    configText: CONFIG,
    revision: Math.max(40, 20 + n),
    own: { subnet: OWN, modRevision: 23, expiration: Date.parse('2026-12-02T12:00:00Z'), attrs: { publicIp: '198.18.0.3', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:03' } } },
    records,
  };
}

const EXPECT = { prefix: PREFIX, publicIp: '198.18.0.3', subnetEnv: { network: parseCidr('10.244.0.0/16'), subnet: OWN } };

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof SnapshotError, `SnapshotError, got ${String(err)}`);
    return err.reason;
  }
  return assert.fail('expected a SnapshotError');
}

test('round trip keeps the config, our lease and every record with its revisions', () => {
  const snap = sample(50);
  const back = decodeSnapshot(encodeSnapshot(snap));
  assert.equal(back.version, 1);
  assert.equal(back.savedAt, snap.savedAt);
  assert.equal(back.prefix, PREFIX);
  assert.equal(back.configText, CONFIG);
  assert.equal(back.revision, 70);
  assert.deepEqual(back.own, snap.own);
  assert.deepEqual(back.records, snap.records);
  assert.equal(checkSnapshot(back, EXPECT).network.prefixLen, 16);
});

test('a flipped byte, a truncated file, padding, another magic or format version are each refused', () => {
  const good = encodeSnapshot(sample());
  const flipped = Buffer.from(good);
  flipped[flipped.length - 5] ^= 0x40;
  assert.match(reason(() => decodeSnapshot(flipped)), /checksum mismatch/);
  for (const cut of [good.length - 1, 60, 20, 0]) assert.match(reason(() => decodeSnapshot(good.subarray(0, cut))), /truncated|bad magic/, `cut at ${cut}`);
  assert.match(reason(() => decodeSnapshot(Buffer.concat([good, Buffer.from([0])]))), /truncated or padded/);
  const magic = Buffer.from(good);
  magic.write('FLANNEL!', 0, 'ascii');
  assert.match(reason(() => decodeSnapshot(magic)), /bad magic/);
  const v2 = Buffer.from(good);
  v2.writeUInt32BE(2, 8);
  assert.match(reason(() => decodeSnapshot(v2)), /format version 2/);
  assert.match(reason(() => decodeSnapshot(Buffer.from('{"json":"not ours"}'))), /bad magic/);
});

test('a foreign snapshot (other prefix, public IP, network, subnet, no subnet file) is refused by name', () => {
  const snap = decodeSnapshot(encodeSnapshot(sample()));
  assert.match(reason(() => checkSnapshot(snap, { ...EXPECT, prefix: '/other/network' })), /--etcd-prefix \/coreos\.com\/network, not \/other\/network/);
  assert.match(reason(() => checkSnapshot(snap, { ...EXPECT, publicIp: '198.18.0.9' })), /public IP 198\.18\.0\.3, this host publishes 198\.18\.0\.9/);
  assert.match(reason(() => checkSnapshot(snap, { ...EXPECT, subnetEnv: { network: parseCidr('10.50.0.0/16'), subnet: OWN } })), /differs from the subnet file's 10\.50\.0\.0\/16/);
  assert.match(reason(() => checkSnapshot(snap, { ...EXPECT, subnetEnv: { network: parseCidr('10.244.0.0/16'), subnet: parseCidr('10.244.9.0/24') } })), /subnet 10\.244\.3\.0\/24 differs/);
  assert.match(reason(() => checkSnapshot(snap, { ...EXPECT, subnetEnv: undefined })), /no subnet file/);
  const badConf = decodeSnapshot(encodeSnapshot({ ...sample(), configText: '{"Network":"10.244.0.0/33"}' }));
  assert.match(reason(() => checkSnapshot(badConf, EXPECT)), /network config is invalid/);
  const outside = decodeSnapshot(encodeSnapshot({ ...sample(), own: { ...sample().own, subnet: parseCidr('10.99.3.0/24') } }));
  assert.match(reason(() => checkSnapshot(outside, EXPECT)), /does not fit/);
  const noOwn = decodeSnapshot(encodeSnapshot({ ...sample(2) }));
  assert.match(reason(() => checkSnapshot(noOwn, EXPECT)), /own lease .* is not among its records/);
  const future = sample();
  future.records[0].modRevision = 99;
  assert.match(reason(() => checkSnapshot(decodeSnapshot(encodeSnapshot(future)), EXPECT)), /newer than the snapshot revision/);
  // Records under another prefix never come back as leases.
  const mixed = sample();
  mixed.records[0].key = '/other/network/subnets/10.244.1.0-24';
  assert.match(reason(() => decodeSnapshot(encodeSnapshot(mixed))), /not under \/coreos\.com\/network\/subnets\//);
});

test('writes are atomic: the file is always a whole snapshot, no temp file is left, a failed write keeps the old one', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-snap-'));
  try {
    const file = snapshotPath(dir, '/run/flannel/subnet.env');
    assert.equal(file, path.join(dir, 'subnet.env.vxnet-snapshot'));
    assert.equal(await readSnapshot(file), undefined, 'absent file: no snapshot, no error');
    await writeSnapshot(file, sample());
    // A reader racing 30 writers only ever sees a complete snapshot.
    const writes = Array.from({ length: 30 }, (_, i) => writeSnapshot(file, { ...sample(i % 5 + 3), revision: 100 + i }));
    let reads = 0;
    const reading = (async () => {
      for (let i = 0; i < 30; i++) {
        const s = await readSnapshot(file);
        assert.ok(s && s.revision >= 40);
        reads++;
      }
    })();
    await Promise.all([...writes, reading]);
    assert.equal(reads, 30);
    assert.deepEqual(readdirSync(dir), ['subnet.env.vxnet-snapshot'], 'no temp files left');
    const before = readFileSync(file);
    // A write that fails half-way (here: encoding throws after the temp file exists) leaves the file alone.
    const broken = sample();
    Object.defineProperty(broken.records[0], 'value', {
      get() {
        throw new Error('disk full');
      },
    });
    await assert.rejects(writeSnapshot(file, broken));
    assert.deepEqual(readFileSync(file), before, 'old snapshot intact after a failed write');
    assert.deepEqual(readdirSync(dir), ['subnet.env.vxnet-snapshot']);
    // A garbage file reads as a SnapshotError naming the file.
    writeFileSync(file, 'garbage');
    await assert.rejects(readSnapshot(file), (err: unknown) => err instanceof SnapshotError && err.file === file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SnapshotWriter coalesces a burst into few writes and reports a failing write once', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-snap-'));
  try {
    const file = path.join(dir, 'x.vxnet-snapshot');
    let revision = 40;
    let states = 0;
    const errors: Error[] = [];
    const w = new SnapshotWriter(file, () => (states++, { ...sample(), revision }), (e) => errors.push(e));
    for (let i = 0; i < 100; i++) {
      revision = 40 + i;
      w.schedule();
    }
    await w.flush();
    assert.ok(states <= 3, `100 changes in one tick cost ${states} writes`);
    assert.equal((await readSnapshot(file))?.revision, 139, 'the last state is on disk');
    // The state dir is a file now: every write fails, reported once.
    const blocked = new SnapshotWriter(path.join(file, 'sub', 'y'), () => sample(), (e) => errors.push(e));
    for (let i = 0; i < 3; i++) {
      blocked.schedule();
      await blocked.flush();
    }
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('; '));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('temp files a killed writer left behind are removed; other files are not', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'vxnet-snap-'));
  try {
    const file = path.join(dir, 'subnet.env.vxnet-snapshot');
    writeFileSync(path.join(dir, '.subnet.env.vxnet-snapshot.999999.0a1b2c3d'), 'half');
    writeFileSync(path.join(dir, 'subnet.env'), 'FLANNEL_NETWORK=10.244.0.0/16\n');
    writeFileSync(path.join(dir, '.other.vxnet-snapshot.999999.0a1b2c3d'), 'not ours');
    assert.equal(await removeStaleTemps(file), 1);
    assert.deepEqual(readdirSync(dir).sort(), ['.other.vxnet-snapshot.999999.0a1b2c3d', 'subnet.env']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
