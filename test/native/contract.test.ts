// The native contract has one owner per concept: these tests fail when a copy drifts from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { addon, loadTestkit } from '../../src/datapath/native';
import { COUNTER_NAMES, DROP_REASONS, DatapathConfigError, validateDatapathConfig, type DatapathConfig } from '../../src/datapath';
import { EncapEngine } from '../../src/datapath/engine';
import { nativeOptions } from '../../src/datapath/config';
import { parseCidr } from '../../src/net/ip';
import { DEFAULT_PORT, ENCAP_OVERHEAD, MAX_VNI } from '../../src/net/wire';

const ROOT = path.resolve(__dirname, '..', '..', '..');

const BASE: DatapathConfig = {
  encap: 'vxlan',
  tunName: 'unused0',
  mtu: 1450,
  network: parseCidr('10.244.0.0/16'),
  localSubnet: parseCidr('10.244.1.0/24'),
  vtepMac: '02:aa:00:00:00:01',
};

test('the generated TypeScript and docs tables are what the native lists give (npm run gen:contract)', () => {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'gen-contract.js'), '--check'], { stdio: 'pipe' });
});

test('the addon counts exactly the generated counters and drop reasons, in that order', () => {
  assert.deepEqual(addon.counterNames, [...COUNTER_NAMES, ...DROP_REASONS]);
  const engine = EncapEngine.create(BASE);
  const s = engine.stats();
  for (const r of DROP_REASONS) assert.equal(s.drops[r], 0, r);
  assert.equal(Object.keys(s.drops).length, DROP_REASONS.length);
});

test('the wire constants agree with the addon: largest MTU per encapsulation, VNI width', () => {
  for (const e of ['udp', 'vxlan'] as const) assert.equal(addon.maxMtu[e], 65535 - ENCAP_OVERHEAD[e], e);
  assert.equal(addon.options.datapath.vni.max, MAX_VNI);
  assert.equal(addon.options.network.vni.max, MAX_VNI);
});

test('the route record fields lie inside the record and do not overlap', () => {
  const r = addon.routeRecord;
  const fields = [r.net, r.peerIp, r.slot, r.port, r.prefixLen, r.mac].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const f of fields) {
    assert.ok(f.offset >= end, `field at ${f.offset} overlaps the one before`);
    end = f.offset + f.size;
  }
  assert.ok(end <= r.size);
  assert.equal(r.mac.size, 6);
});

/** The DatapathConfig fields whose limits are the addon's option specs. */
const NUMERIC = ['mtu', 'port', 'vni', 'queues', 'batch', 'busyPollUs', 'sliceUs', 'tunQueueLen', 'icmpPerSec'] as const;

test('validation takes each numeric limit from the addon, and the addon refuses what validation refuses', () => {
  for (const encap of ['udp', 'vxlan'] as const) {
    const base = { ...BASE, encap, vtepMac: encap === 'vxlan' ? BASE.vtepMac : undefined };
    for (const field of NUMERIC) {
      const spec = addon.options.datapath[field];
      const max = field === 'mtu' ? addon.maxMtu[encap] : spec.max;
      for (const ok of [spec.min, max]) validateDatapathConfig({ ...base, [field]: ok });
      for (const bad of [spec.min - 1, max + 1, spec.min + 0.5]) {
        const cfg = { ...base, [field]: bad };
        assert.throws(() => validateDatapathConfig(cfg), (e: unknown) => e instanceof DatapathConfigError && e.field === field, `${encap} ${field}=${bad}`);
        // Past the TypeScript check, the addon itself refuses it with a message naming the option.
        assert.throws(() => new (loadTestkit().Engine)({ ...nativeOptions(base), [field]: bad }), new RegExp(`option ${field}: must be an integer`), `native ${encap} ${field}=${bad}`);
      }
    }
  }
});

test('cpuLocal is a boolean: validation names the field, the addon takes 0 or 1 and refuses anything else', () => {
  for (const bad of [1, 'true', null]) {
    const cfg = { ...BASE, cpuLocal: bad } as unknown as DatapathConfig;
    assert.throws(() => validateDatapathConfig(cfg), (e: unknown) => e instanceof DatapathConfigError && e.field === 'cpuLocal', `cpuLocal=${JSON.stringify(bad)}`);
  }
  validateDatapathConfig({ ...BASE, cpuLocal: true });
  assert.equal(nativeOptions({ ...BASE, cpuLocal: true }).cpuLocal, 1);
  assert.equal(nativeOptions({ ...BASE, cpuLocal: false }).cpuLocal, 0);
  assert.equal(nativeOptions(BASE).cpuLocal, undefined);
  assert.equal(addon.options.datapath.cpuLocal.default, 1, 'on unless turned off');
  for (const bad of [2, -1, 0.5]) {
    assert.throws(() => new (loadTestkit().Engine)({ ...nativeOptions(BASE), cpuLocal: bad }), /option cpuLocal: must be an integer in 0\.\.1/);
  }
});

test('absent tuning options take the addon\'s defaults; the port and queues defaults are the TypeScript face\'s', () => {
  const o = nativeOptions(BASE);
  assert.equal(o.port, DEFAULT_PORT.vxlan);
  assert.ok(o.queues >= 1 && o.queues <= addon.options.datapath.queues.max);
  for (const field of ['vni', 'batch', 'busyPollUs', 'sliceUs', 'tunQueueLen', 'icmpPerSec'] as const) {
    assert.equal(o[field], undefined, `${field} is left to the addon`);
    assert.equal(typeof addon.options.datapath[field].default, 'number', `${field} has a native default`);
  }
  for (const field of ['mtu', 'port', 'queues'] as const) assert.equal(addon.options.datapath[field].required, true, field);
  assert.throws(() => new (loadTestkit().Engine)({ ...o, port: undefined as unknown as number }), /option port: required/);
});
