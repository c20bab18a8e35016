// Lease key and value codec against what flanneld writes into etcd.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configKey, decodeLeaseValue, encodeLeaseValue, keyToSubnet, leaseKey, subnetToKey, subnetsPrefix } from '../../src/subnet/lease';
import { formatCidr, parseCidr } from '../../src/net/ip';

// Verbatim from `etcdctl get /coreos.com/network/subnets/10.5.52.0-24` on a flanneld (vxlan) host.
const FLANNELD_VXLAN = '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}';

test('subnet <-> key', () => {
  assert.equal(subnetToKey(parseCidr('10.244.3.0/24')), '10.244.3.0-24');
  assert.equal(formatCidr(keyToSubnet('10.244.3.0-24')!), '10.244.3.0/24');
  assert.equal(formatCidr(keyToSubnet('/coreos.com/network/subnets/10.5.52.0-24')!), '10.5.52.0/24');
  assert.equal(formatCidr(keyToSubnet('/coreos.com/network/subnets/10.5.52.0-24&fc00:0:0:1::-64')!), '10.5.52.0/24', 'dual-stack key');
  assert.equal(leaseKey('/coreos.com/network', parseCidr('10.5.52.0/24')), '/coreos.com/network/subnets/10.5.52.0-24');
  assert.equal(leaseKey('/my/net/', parseCidr('10.5.52.0/24')), '/my/net/subnets/10.5.52.0-24');
  assert.equal(subnetsPrefix('/coreos.com/network'), '/coreos.com/network/subnets/');
  assert.equal(configKey('/coreos.com/network'), '/coreos.com/network/config');
  for (const bad of ['10.244.3.0', '10.244.3.0/24', '10.244.3.1-24', '10.244.3.0-33', '10.244.3.0-024', '256.1.1.0-24', 'x-24', '10.244.3.0-24x', '']) {
    assert.equal(keyToSubnet(bad), undefined, bad);
  }
});

test('encodes exactly as flanneld json.Marshal (PublicIPv6 null, omitempty backend fields)', () => {
  assert.equal(
    encodeLeaseValue({ publicIp: '192.168.64.3', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } }),
    FLANNELD_VXLAN,
  );
  assert.equal(encodeLeaseValue({ publicIp: '198.18.0.1', backendType: 'udp' }), '{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"udp"}');
  assert.equal(encodeLeaseValue({ publicIp: '198.18.0.1', backendType: '' }), '{"PublicIP":"198.18.0.1","PublicIPv6":null}');
  assert.equal(
    encodeLeaseValue({ publicIp: '198.18.0.1', publicIpv6: 'fc00::1', backendType: 'host-gw' }),
    '{"PublicIP":"198.18.0.1","PublicIPv6":"fc00::1","BackendType":"host-gw"}',
  );
});

test('decodes a flanneld vxlan lease and round-trips it byte for byte', () => {
  const d = decodeLeaseValue(FLANNELD_VXLAN);
  assert.ok(d.ok);
  assert.deepEqual(d.attrs, { publicIp: '192.168.64.3', backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: 'c6:d2:32:6f:8f:44' } });
  assert.equal(encodeLeaseValue(d.attrs), FLANNELD_VXLAN);
});

test('decodes older and sparser flannel values', () => {
  const old = decodeLeaseValue('{"PublicIP":"10.168.0.95","BackendType":"udp"}');
  assert.ok(old.ok);
  assert.deepEqual(old.attrs, { publicIp: '10.168.0.95', backendType: 'udp' });
  const bare = decodeLeaseValue('{"PublicIP":"10.168.0.95","PublicIPv6":null}');
  assert.ok(bare.ok);
  assert.equal(bare.attrs.backendType, '');
  const v6 = decodeLeaseValue('{"PublicIP":"10.0.0.1","PublicIPv6":"fc00::1","BackendType":"host-gw","BackendData":null}');
  assert.ok(v6.ok);
  assert.deepEqual(v6.attrs, { publicIp: '10.0.0.1', publicIpv6: 'fc00::1', backendType: 'host-gw' });
});

test('rejects malformed values with a reason', () => {
  const cases: [string, RegExp][] = [
    ['not json', /not JSON/],
    ['[]', /not a JSON object/],
    ['"x"', /not a JSON object/],
    ['{}', /PublicIP/],
    ['{"PublicIP":"1.2.3"}', /PublicIP/],
    ['{"PublicIP":1}', /PublicIP/],
    ['{"PublicIP":"0.0.0.0"}', /0\.0\.0\.0/],
    ['{"PublicIP":"1.2.3.4","PublicIPv6":"zz"}', /PublicIPv6/],
    ['{"PublicIP":"1.2.3.4","BackendType":5}', /BackendType/],
    ['{"PublicIP":"1.2.3.4","BackendType":"vxlan"}', /BackendData/],
    ['{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1}}', /VtepMAC/],
    ['{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb"}}', /VtepMAC/],
    ['{"PublicIP":"1.2.3.4","BackendType":"vxlan","BackendData":{"VNI":-3,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}', /VNI/],
  ];
  for (const [value, why] of cases) {
    const d = decodeLeaseValue(value);
    assert.equal(d.ok, false, value);
    if (!d.ok) assert.match(d.reason, why, value);
  }
});
