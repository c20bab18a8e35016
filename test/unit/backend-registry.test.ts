import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { BackendContext, Logger } from '../../src/backend/backend';
import type { NetworkConfig } from '../../src/subnet/types';
import { parseCidr, MAC_RE } from '../../src/net/ip';
import { backendKind, checkBackendConfig, createBackend } from '../../src/backend/registry';
import { userspaceConfig } from '../../src/backend/udp';
import { UdpBackend } from '../../src/backend/udp';
import { VxlanBackend } from '../../src/backend/vxlan';
import { KernelVxlanBackend } from '../../src/backend/kernel-vxlan';
import { HostGwBackend } from '../../src/backend/host-gw';

const quiet: Logger = { info() {}, warn() {}, error() {} };

function config(raw: Record<string, unknown>): NetworkConfig {
  return {
    network: parseCidr('10.244.0.0/16'),
    subnetLen: 24,
    subnetMin: parseCidr('10.244.1.0/24').ip,
    subnetMax: parseCidr('10.244.255.0/24').ip,
    backend: { type: String(raw.Type), raw },
  };
}

function ctx(raw: Record<string, unknown>, iface: Partial<BackendContext['iface']> = {}): BackendContext {
  return {
    config: config(raw),
    iface: { name: 'eth0', address: '198.18.0.1', publicIp: '198.18.0.1', mtu: 1500, ...iface },
    log: quiet,
  };
}

test('Type and Datapath select the backend kind', () => {
  assert.equal(backendKind(config({ Type: 'udp' })), 'udp');
  assert.equal(backendKind(config({ Type: 'vxlan' })), 'vxlan');
  assert.equal(backendKind(config({ Type: 'vxlan', Datapath: 'userspace' })), 'vxlan');
  assert.equal(backendKind(config({ Type: 'vxlan', Datapath: 'kernel' })), 'kernel-vxlan');
  assert.equal(backendKind(config({ Type: 'host-gw' })), 'host-gw');
  // flanneld matches types case-insensitively.
  assert.equal(backendKind(config({ Type: 'VXLAN', Datapath: 'Kernel' })), 'kernel-vxlan');
});

test('createBackend builds the matching class and BackendType', () => {
  const cases: Array<[Record<string, unknown>, unknown, string]> = [
    [{ Type: 'udp' }, UdpBackend, 'udp'],
    [{ Type: 'vxlan' }, VxlanBackend, 'vxlan'],
    [{ Type: 'vxlan', Datapath: 'kernel' }, KernelVxlanBackend, 'vxlan'],
    [{ Type: 'host-gw' }, HostGwBackend, 'host-gw'],
  ];
  for (const [raw, cls, type] of cases) {
    const be = createBackend(ctx(raw));
    assert.ok(be instanceof (cls as new (...a: never[]) => object), JSON.stringify(raw));
    assert.equal(be.type, type);
  }
});

test('unknown Type and impossible Datapath are errors naming the field', () => {
  assert.throws(() => createBackend(ctx({ Type: 'ipip' })), /^Error: Backend\.Type: unsupported backend "ipip"/);
  assert.throws(() => backendKind(config({ Type: 'vxlan', Datapath: 'ebpf' })), /^Error: Backend\.Datapath: "ebpf"/);
  assert.throws(() => backendKind(config({ Type: 'udp', Datapath: 'kernel' })), /^Error: Backend\.Datapath/);
  assert.throws(() => backendKind(config({ Type: 'host-gw', Datapath: 'userspace' })), /^Error: Backend\.Datapath/);
  assert.throws(() => backendKind(config({ Type: 'vxlan', Datapath: 1 })), /^Error: Backend\.Datapath/);
});

test('invalid Port and VNI name the field', () => {
  assert.throws(() => createBackend(ctx({ Type: 'udp', Port: 70000 })), /^Error: Backend\.Port: must be an integer in 1\.\.65535/);
  assert.throws(() => createBackend(ctx({ Type: 'udp', Port: '8285' })), /^Error: Backend\.Port/);
  assert.throws(() => createBackend(ctx({ Type: 'vxlan', VNI: -1 })), /^Error: Backend\.VNI/);
  assert.throws(() => createBackend(ctx({ Type: 'vxlan', VNI: 2 ** 24 })), /^Error: Backend\.VNI/);
  // flannel.<VNI> must fit IFNAMSIZ.
  assert.throws(() => createBackend(ctx({ Type: 'vxlan', Datapath: 'kernel', VNI: 10_000_000 })), /^Error: Backend\.VNI: device name flannel\.10000000/);
});

test('the userspace backends\' own keys: Workers an integer in range, CpuLocal a boolean', () => {
  for (const Type of ['udp', 'vxlan']) {
    assert.throws(() => checkBackendConfig(config({ Type, Workers: 0 })), /^Error: Backend\.Workers: must be an integer in 1\.\./);
    assert.throws(() => checkBackendConfig(config({ Type, CpuLocal: 'yes' })), /^Error: Backend\.CpuLocal: must be true or false, got "yes"/);
    assert.throws(() => checkBackendConfig(config({ Type, CpuLocal: 1 })), /^Error: Backend\.CpuLocal/);
    checkBackendConfig(config({ Type, CpuLocal: true, Workers: 2 }));
  }
  const lease = { subnet: parseCidr('10.244.3.0/24') } as Parameters<typeof userspaceConfig>[2];
  const on = userspaceConfig('vxlan', ctx({ Type: 'vxlan', CpuLocal: true, Workers: 2 }), lease, 8472);
  assert.deepEqual([on.cpuLocal, on.queues], [true, 2]);
  assert.equal(userspaceConfig('vxlan', ctx({ Type: 'vxlan', CpuLocal: false }), lease, 8472).cpuLocal, false);
  const off = userspaceConfig('udp', ctx({ Type: 'udp' }), lease, 8285);
  assert.deepEqual([off.cpuLocal, off.queues], [undefined, undefined], 'absent: the datapath\'s defaults');
});

test('defaults follow flanneld: udp 8285, vxlan VNI 1 on 8472 (Port 0 = default)', () => {
  assert.equal((createBackend(ctx({ Type: 'udp' })) as UdpBackend).port, 8285);
  assert.equal((createBackend(ctx({ Type: 'udp', Port: 9000 })) as UdpBackend).port, 9000);
  const v = createBackend(ctx({ Type: 'vxlan', Port: 0 })) as VxlanBackend;
  assert.deepEqual([v.vni, v.port], [1, 8472]);
  const k = createBackend(ctx({ Type: 'vxlan', Datapath: 'kernel', VNI: 42, Port: 4789 })) as KernelVxlanBackend;
  assert.deepEqual([k.vni, k.port, k.device], [42, 4789, 'flannel.42']);
});

test('lease attributes match what flanneld publishes', async () => {
  assert.deepEqual(await createBackend(ctx({ Type: 'udp' }, { publicIp: '203.0.113.5' })).leaseAttrs(), {
    publicIp: '203.0.113.5',
    backendType: 'udp',
  });
  assert.deepEqual(await createBackend(ctx({ Type: 'host-gw' })).leaseAttrs(), { publicIp: '198.18.0.1', backendType: 'host-gw' });
  for (const raw of [{ Type: 'vxlan', VNI: 7 }, { Type: 'vxlan', VNI: 7, Datapath: 'kernel' }]) {
    const attrs = await createBackend(ctx(raw)).leaseAttrs();
    assert.equal(attrs.backendType, 'vxlan');
    const data = attrs.backendData as { VNI: number; VtepMAC: string };
    // Field names and order as flannel's vxlanLeaseAttrs marshals them.
    assert.deepEqual(Object.keys(data), ['VNI', 'VtepMAC']);
    assert.equal(data.VNI, 7);
    assert.match(data.VtepMAC, MAC_RE);
    assert.equal(data.VtepMAC, data.VtepMAC.toLowerCase());
    const first = parseInt(data.VtepMAC.slice(0, 2), 16);
    assert.equal(first & 0x03, 0x02, 'locally administered unicast');
  }
});

test('the VTEP MAC is stable per host and VNI, and differs across them', async () => {
  const mac = async (raw: Record<string, unknown>, iface: Partial<BackendContext['iface']> = {}) =>
    ((await createBackend(ctx(raw, iface)).leaseAttrs()).backendData as { VtepMAC: string }).VtepMAC;
  const a = await mac({ Type: 'vxlan' });
  assert.equal(await mac({ Type: 'vxlan' }), a);
  // Kernel and userspace datapaths publish the same MAC, so switching keeps peers' entries valid.
  assert.equal(await mac({ Type: 'vxlan', Datapath: 'kernel' }), a);
  assert.notEqual(await mac({ Type: 'vxlan' }, { address: '198.18.0.2', publicIp: '198.18.0.2' }), a);
  assert.notEqual(await mac({ Type: 'vxlan', VNI: 2 }), a);
});

test('host-gw refuses a public IP that differs from the interface address (NAT)', () => {
  assert.throws(() => createBackend(ctx({ Type: 'host-gw' }, { publicIp: '203.0.113.5' })), /host-gw: public IP 203\.0\.113\.5 differs/);
});
