// net-conf.json parsing: flannel's defaults and every validation error naming its field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseNetworkConfig, subnetAt, subnetCount, subnetFitsConfig } from '../../src/subnet/config';
import { BACKEND_DESCRIPTORS, backendKind, checkBackendConfig } from '../../src/backend/registry';
import { formatCidr, formatIPv4, parseCidr } from '../../src/net/ip';

/** The field a net-conf.json whose document parses is refused for by its backend (checkBackendConfig). */
function backendFieldOf(json: string): string {
  const cfg = parseNetworkConfig(json);
  try {
    checkBackendConfig(cfg);
  } catch (err) {
    const m = /^(Backend(?:\.[A-Za-z]+)?): /.exec((err as Error).message);
    assert.ok(m, `the message names the field: ${(err as Error).message}`);
    return m[1];
  }
  return '';
}

function fieldOf(json: string): string {
  try {
    parseNetworkConfig(json);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.ok(err.message.startsWith(`${err.field}: `), err.message);
    assert.ok(err.reason.length > 0);
    return err.field;
  }
  assert.fail(`accepted ${json}`);
}

test('flannel defaults: /24 subnets, skip the first and end at the last, udp backend', () => {
  const cfg = parseNetworkConfig('{"Network": "10.244.0.0/16"}');
  assert.equal(formatCidr(cfg.network), '10.244.0.0/16');
  assert.equal(cfg.subnetLen, 24);
  assert.equal(formatIPv4(cfg.subnetMin), '10.244.1.0');
  assert.equal(formatIPv4(cfg.subnetMax), '10.244.255.0');
  assert.deepEqual(cfg.backend, { type: 'udp', raw: {} });
  assert.equal(subnetCount(cfg), 255);
  assert.equal(formatCidr(subnetAt(cfg, 0)), '10.244.1.0/24');
  assert.equal(formatCidr(subnetAt(cfg, 254)), '10.244.255.0/24');
});

test('small networks get SubnetLen = prefix + 2 (flannel rule); /22 still gets /24', () => {
  assert.equal(parseNetworkConfig('{"Network":"10.0.0.0/22"}').subnetLen, 24);
  const c = parseNetworkConfig('{"Network":"10.0.0.0/26"}');
  assert.equal(c.subnetLen, 28);
  assert.equal(formatIPv4(c.subnetMin), '10.0.0.16');
  assert.equal(formatIPv4(c.subnetMax), '10.0.0.48');
  assert.equal(parseNetworkConfig('{"Network":"10.0.0.0/28"}').subnetLen, 30);
  assert.equal(fieldOf('{"Network":"10.0.0.0/29"}'), 'Network');
});

test('explicit SubnetLen, SubnetMin, SubnetMax and backend fields are kept', () => {
  const cfg = parseNetworkConfig(
    JSON.stringify({
      Network: '10.10.0.0/16',
      SubnetLen: 26,
      SubnetMin: '10.10.4.0',
      SubnetMax: '10.10.8.192',
      Backend: { Type: 'vxlan', VNI: 42, Port: 4789, Datapath: 'kernel', GBP: true },
    }),
  );
  assert.equal(cfg.subnetLen, 26);
  assert.equal(formatIPv4(cfg.subnetMin), '10.10.4.0');
  assert.equal(formatIPv4(cfg.subnetMax), '10.10.8.192');
  assert.equal(cfg.backend.type, 'vxlan');
  assert.deepEqual(cfg.backend.raw, { Type: 'vxlan', VNI: 42, Port: 4789, Datapath: 'kernel', GBP: true });
  assert.equal(backendKind(cfg), 'kernel-vxlan');
  assert.equal(backendKind(parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}')), 'vxlan');
  assert.ok(subnetFitsConfig(cfg, parseCidr('10.10.4.0/26')));
  assert.ok(!subnetFitsConfig(cfg, parseCidr('10.10.3.192/26')), 'below SubnetMin');
  assert.ok(!subnetFitsConfig(cfg, parseCidr('10.10.4.0/24')), 'wrong length');
});

test('known backend types', () => {
  assert.deepEqual([...new Set(BACKEND_DESCRIPTORS.map((d) => d.type))], ['udp', 'vxlan', 'host-gw']);
  for (const d of BACKEND_DESCRIPTORS) {
    const cfg = parseNetworkConfig(JSON.stringify({ Network: '10.1.0.0/16', Backend: d.section }));
    assert.equal(cfg.backend.type, d.type);
    assert.equal(checkBackendConfig(cfg), d.kind, `${JSON.stringify(d.section)} selects ${d.kind}`);
  }
});

test('document errors name "config"', () => {
  assert.equal(fieldOf('{"Network": '), 'config');
  assert.equal(fieldOf('not json'), 'config');
  assert.equal(fieldOf('[1,2]'), 'config');
  assert.equal(fieldOf('null'), 'config');
});

test('Network errors', () => {
  assert.equal(fieldOf('{}'), 'Network');
  assert.equal(fieldOf('{"Network": 5}'), 'Network');
  assert.equal(fieldOf('{"Network": "10.1.0.0"}'), 'Network', 'no prefix length');
  assert.equal(fieldOf('{"Network": "10.1.0.0/33"}'), 'Network', 'prefix length out of range');
  assert.equal(fieldOf('{"Network": "10.1.0.1/16"}'), 'Network', 'host bits');
  assert.equal(fieldOf('{"Network": "10.300.0.0/16"}'), 'Network');
  assert.equal(fieldOf('{"Network": "fc00::/48"}'), 'Network', 'IPv6');
});

test('SubnetLen errors', () => {
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":16}'), 'SubnetLen', 'equal to the network prefix');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":12}'), 'SubnetLen', 'shorter than the network prefix');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":17}'), 'SubnetLen', 'fewer than four subnets');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":31}'), 'SubnetLen', '> 30');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":24.5}'), 'SubnetLen');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetLen":"24"}'), 'SubnetLen');
  assert.equal(parseNetworkConfig('{"Network":"10.1.0.0/16","SubnetLen":18}').subnetLen, 18);
  assert.equal(parseNetworkConfig('{"Network":"10.1.0.0/16","SubnetLen":30}').subnetLen, 30);
});

test('SubnetMin/SubnetMax errors', () => {
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMin":"10.2.0.0"}'), 'SubnetMin', 'outside');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMin":"10.1.0.7"}'), 'SubnetMin', 'misaligned');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMin":"banana"}'), 'SubnetMin');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMax":"10.0.255.0"}'), 'SubnetMax', 'outside');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMax":"10.1.9.128"}'), 'SubnetMax', 'misaligned');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","SubnetMin":"10.1.9.0","SubnetMax":"10.1.8.0"}'), 'SubnetMax', 'max below min');
});

test('Backend errors', () => {
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","Backend":"vxlan"}'), 'Backend');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","Backend":{}}'), 'Backend.Type', 'missing Type');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"ipip"}}'), 'Backend.Type', 'unknown type');
  assert.equal(fieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":7}}'), 'Backend.Type');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}'), 'Backend.VNI');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":-1}}'), 'Backend.VNI');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":1.5}}'), 'Backend.VNI');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}'), 'Backend.VNI');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"udp","Port":0}}'), 'Backend.Port');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"udp","Port":65536}}'), 'Backend.Port');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"udp","Port":"8285"}}'), 'Backend.Port');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","Datapath":"ebpf"}}'), 'Backend.Datapath');
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"udp","Datapath":"kernel"}}'), 'Backend.Datapath', 'vxlan only');
  const ok = parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":16777215,"Port":1}}');
  assert.equal(ok.backend.raw.VNI, 16777215);
  assert.equal(checkBackendConfig(ok), 'vxlan');
  // flannel's vxlan treats Port 0 as the kernel's default (8472); for udp it is no port at all.
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","Port":0}}'), '');
  // Type is matched case-insensitively, as flanneld does.
  assert.equal(backendFieldOf('{"Network":"10.1.0.0/16","Backend":{"Type":"VXLAN","Datapath":"Kernel"}}'), '');
  assert.equal(parseNetworkConfig('{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan","VNI":0,"Port":65535}}').backend.raw.Port, 65535);
});
