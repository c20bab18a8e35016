// The Docker driver over in-memory fakes (test/helpers/fake-docker.ts): the remote protocol through
// the real plugin socket, IPAM from per-host leases, VNI allocation, names, errors in Docker's shape,
// two hosts sharing one store, and a restart from the state file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DockerDriver, type DriverOptions } from '../../src/docker/driver';
import { PluginServer } from '../../src/docker/server';
import { cidrContains, formatCidr, parseCidr, parseIPv4 } from '../../src/net/ip';
import { FakeDatapath, FakeEngine, FakeHost, MemKv, MemNetworkStore } from '../helpers/fake-docker';
import { pickRange, pickVni, VNI_MIN } from '../../src/docker/store';

/** An Engine API whose network list can hide networks (an rm under way) and whose create runs a hook. */
class RacingEngine extends FakeEngine {
  readonly hidden = new Set<string>();
  onCreate: ((spec: { name: string; subnet: string; ipamOptions: Record<string, string> }) => Promise<void>) | undefined;
  override async listNetworks(driver: string) {
    return (await super.listNetworks(driver)).filter((n) => !this.hidden.has(n.Name));
  }
  override async createNetwork(spec: { name: string; driver: string; subnet: string; ipamOptions: Record<string, string> }): Promise<string> {
    if (!this.onCreate) return super.createNetwork(spec);
    await this.onCreate(spec);
    return 'created';
  }
}

const silent = { info() {}, warn() {}, error() {}, debug() {} };
const NET1 = '10.250.0.0/16';
const NET2 = '10.251.0.0/16';
const FLANNEL = parseCidr('10.244.0.0/16');

interface Rig {
  driver: DockerDriver;
  host: FakeHost;
  dp: FakeDatapath;
  engine: FakeEngine;
  server: PluginServer;
  socket: string;
  opts: DriverOptions;
}

let dir: string;
let seq = 0;

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'vxnet-docker-unit-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function rig(store: MemNetworkStore, publicIp: string, extra: Partial<DriverOptions> = {}, stateFile?: string): Promise<Rig> {
  const host = new FakeHost();
  const dp = new FakeDatapath();
  const engine = new FakeEngine();
  const opts: DriverOptions = {
    store,
    host,
    datapath: dp,
    engine,
    iface: { name: 'eth0', address: publicIp, publicIp, mtu: 1500 },
    log: silent,
    stateFile: stateFile ?? path.join(dir, `state-${++seq}.json`),
    leaseTtlSeconds: 3600,
    reservedVnis: [1],
    reservedRanges: [FLANNEL],
    defaultPool: parseCidr('10.128.0.0/9'),
    defaultPoolPrefixLen: 16,
    syncNetworks: false,
    acquireTimeoutMs: 2000,
    ...extra,
  };
  const driver = new DockerDriver(opts);
  await driver.start();
  const socket = path.join(dir, `plugin-${seq}.sock`);
  const server = await PluginServer.listen(socket, (c, b) => driver.handle(c, b), silent);
  return { driver, host, dp, engine, server, socket, opts };
}

async function close(r: Rig): Promise<void> {
  await r.server.close();
  await r.driver.stop();
}

/** One plugin call over the socket, as dockerd makes it. */
function call(r: Rig, name: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const req = request({ socketPath: r.socket, agent: false, method: 'POST', path: `/${name}`, headers: { 'Content-Type': 'application/json' } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(data) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

async function ok(r: Rig, name: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await call(r, name, body);
  assert.equal(res.status, 200, `${name}: ${JSON.stringify(res.json)}`);
  assert.equal(res.json.Err, undefined);
  return res.json;
}

/** An error in Docker's shape: non-200, {"Err": "<option>: ..."}. */
async function refused(r: Rig, name: string, body: unknown, option: string, reason?: RegExp): Promise<string> {
  const res = await call(r, name, body);
  assert.notEqual(res.status, 200, `${name} should fail: ${JSON.stringify(res.json)}`);
  const err = String(res.json.Err);
  assert.deepEqual(Object.keys(res.json), ['Err']);
  assert.ok(err.startsWith(`${option}: `), `${err} should name ${option}`);
  if (reason) assert.match(err, reason);
  return err;
}

const id = (n: number) => n.toString(16).padStart(4, '0') + 'a'.repeat(60);

/** RequestPool + gateway + CreateNetwork as dockerd does for `docker network create`. */
async function createNetwork(r: Rig, netId: string, range: string, ipamOpts: Record<string, string> = {}, generic: Record<string, string> = {}) {
  const pool = await ok(r, 'IpamDriver.RequestPool', { AddressSpace: 'vxnet-local', Pool: range, SubPool: '', Options: ipamOpts, V6: false });
  const gw = await ok(r, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  await ok(r, 'NetworkDriver.CreateNetwork', {
    NetworkID: netId,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': generic },
    IPv4Data: [{ AddressSpace: 'vxnet-local', Gateway: gw.Address, Pool: pool.Pool }],
    IPv6Data: [],
  });
  return { poolId: String(pool.PoolID), gateway: String(gw.Address) };
}

/** RequestAddress + CreateEndpoint + Join as dockerd does for `docker run --net`. */
async function runContainer(r: Rig, netId: string, poolId: string, epId: string, address = '') {
  const a = await ok(r, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: address, Options: null });
  await ok(r, 'NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: epId, Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  const j = await ok(r, 'NetworkDriver.Join', { NetworkID: netId, EndpointID: epId, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  return { address: String(a.Address), join: j };
}

describe('docker driver', () => {
  test('pure helpers: VNIs from 4096 skipping taken and reserved ones; free ranges around taken ones', () => {
    assert.equal(pickVni(new Set(), []), VNI_MIN);
    assert.equal(pickVni(new Set([4096, 4097]), [4098]), 4099);
    const space = parseCidr('10.128.0.0/9');
    assert.equal(formatCidr(pickRange(space, 16, []) as never), '10.128.0.0/16');
    assert.equal(formatCidr(pickRange(space, 16, [parseCidr('10.128.0.0/16'), parseCidr('10.129.5.0/24')]) as never), '10.130.0.0/16');
    assert.equal(pickRange(parseCidr('10.0.0.0/16'), 16, [parseCidr('10.0.0.0/8')]), undefined);
  });

  test('activation, capabilities and the protocol envelope', async () => {
    const r = await rig(new MemNetworkStore(new MemKv()), '198.18.0.1');
    try {
      assert.deepEqual(await ok(r, 'Plugin.Activate', ''), { Implements: ['NetworkDriver', 'IpamDriver'] });
      assert.equal((await ok(r, 'NetworkDriver.GetCapabilities', {})).Scope, 'local');
      assert.deepEqual(await ok(r, 'IpamDriver.GetDefaultAddressSpaces', {}), { LocalDefaultAddressSpace: 'vxnet-local', GlobalDefaultAddressSpace: 'vxnet-global' });
      assert.equal((await ok(r, 'IpamDriver.GetCapabilities', {})).RequiresMACAddress, false);
      for (const c of ['NetworkDriver.DiscoverNew', 'NetworkDriver.DiscoverDelete', 'NetworkDriver.ProgramExternalConnectivity', 'NetworkDriver.RevokeExternalConnectivity']) {
        assert.deepEqual(await ok(r, c, {}), {});
      }
      const unknown = await call(r, 'NetworkDriver.Frobnicate', {});
      assert.equal(unknown.status, 404);
      assert.match(String(unknown.json.Err), /unknown call/);
      await refused(r, 'IpamDriver.RequestPool', '{not json', 'request', /not JSON/);
      await refused(r, 'NetworkDriver.AllocateNetwork', {}, 'scope', /local-scope/);
    } finally {
      await close(r);
    }
  });

  test('one network end to end: pool, lease, gateway, namespace, TUN, endpoints, join routes, removal leaves nothing', async () => {
    const kv = new MemKv();
    const store = new MemNetworkStore(kv);
    const r = await rig(store, '198.18.0.1');
    try {
      const netId = id(1);
      const { poolId, gateway } = await createNetwork(r, netId, NET1);
      assert.equal(poolId, 'vxnet/10.250.0.0-16');
      const rec = (await store.list()).records[0];
      assert.equal(rec.vni, 4096);
      assert.equal(rec.subnetLen, 24);
      const st = r.driver.status().networks[0];
      const lease = parseCidr(st.lease);
      assert.equal(lease.prefixLen, 24);
      assert.ok(cidrContains(parseCidr(NET1), lease.ip));
      // The gateway is the bridge: the lease's first address, with the lease's length.
      assert.equal(gateway, `${st.gateway}/24`);
      assert.equal(parseIPv4(st.gateway), lease.ip + 1);
      assert.deepEqual(r.host.namespaces.get('10.250.0.0-16'), { gateway, mtu: 1450 });
      const [tun] = r.dp.open();
      assert.equal(tun.spec.vni, 4096);
      assert.equal(tun.spec.netnsPath, '/fake/netns/10.250.0.0-16');
      assert.equal(formatCidr(tun.spec.localSubnet), st.lease);
      assert.equal(formatCidr(tun.spec.network), NET1);

      const c1 = await runContainer(r, netId, poolId, id(101));
      const c2 = await runContainer(r, netId, poolId, id(102));
      assert.equal(parseIPv4(c1.address.split('/')[0]), lease.ip + 2);
      assert.equal(parseIPv4(c2.address.split('/')[0]), lease.ip + 3);
      assert.deepEqual(c1.join.InterfaceName, { SrcName: 'vxc0065aaaaaa', DstPrefix: 'eth' });
      // No default route of ours (docker_gwbridge keeps outbound); the range goes via our bridge.
      assert.equal(c1.join.Gateway, undefined);
      assert.deepEqual(c1.join.StaticRoutes, [{ Destination: NET1, RouteType: 0, NextHop: st.gateway }]);
      assert.equal(r.host.veths.size, 2);
      assert.equal(r.driver.status().networks[0].endpoints.length, 2);
      const info = await ok(r, 'NetworkDriver.EndpointOperInfo', { NetworkID: netId, EndpointID: id(101) });
      assert.equal((info.Value as Record<string, unknown>)['vxnet.address'], c1.address.split('/')[0]);

      // docker rm, then docker network rm (dockerd's order: Leave, DeleteEndpoint, ReleaseAddress; then gateway, pool, network).
      for (const [ep, addr] of [[id(101), c1.address], [id(102), c2.address]]) {
        await ok(r, 'NetworkDriver.Leave', { NetworkID: netId, EndpointID: ep });
        await ok(r, 'NetworkDriver.DeleteEndpoint', { NetworkID: netId, EndpointID: ep });
        await ok(r, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: addr.split('/')[0] });
      }
      assert.equal(r.host.veths.size, 0);
      await ok(r, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: gateway.split('/')[0] });
      await ok(r, 'IpamDriver.ReleasePool', { PoolID: poolId });
      await ok(r, 'NetworkDriver.DeleteNetwork', { NetworkID: netId });
      assert.equal(r.host.namespaces.size, 0);
      assert.equal(r.dp.open().length, 0);
      // The last host: record, VNI claim and lease are gone from the store.
      assert.deepEqual([...kv.data.keys()], []);
      // Deleting again (dockerd retries) is fine.
      await ok(r, 'NetworkDriver.DeleteNetwork', { NetworkID: netId });
    } finally {
      await close(r);
    }
  });

  test('two hosts share one network: one VNI, disjoint leases, each the other\'s peer; VNIs never collide and come back', async () => {
    const kv = new MemKv();
    const store = new MemNetworkStore(kv);
    // VNI 4096 is the daemon's own flannel VNI here: Docker networks must skip it.
    const a = await rig(store, '198.18.0.1', { reservedVnis: [4096] });
    const b = await rig(store, '198.18.0.2', { reservedVnis: [4096] });
    try {
      const na = await createNetwork(a, id(1), NET1);
      const nb = await createNetwork(b, id(2), NET1);
      const sa = a.driver.status().networks[0];
      const sb = b.driver.status().networks[0];
      assert.equal(sa.vni, 4097);
      assert.equal(sb.vni, 4097);
      assert.notEqual(sa.lease, sb.lease);
      const ca = await runContainer(a, id(1), na.poolId, id(201));
      const cb = await runContainer(b, id(2), nb.poolId, id(202));
      assert.notEqual(ca.address, cb.address);
      // Each host's TUN routes the other's lease to its public IP with its VTEP MAC.
      const wait = async (r: Rig, lease: string, ip: string) => {
        for (let i = 0; i < 100; i++) {
          const p = r.dp.open()[0]?.peers ?? [];
          if (p.some((x) => formatCidr(x.subnet) === lease && x.publicIp === ip && x.port === 8472 && /^[0-9a-f:]{17}$/.test(x.vtepMac ?? ''))) return;
          await new Promise((res) => setTimeout(res, 10));
        }
        assert.fail(`peer ${lease} via ${ip} not installed`);
      };
      await wait(a, sb.lease, '198.18.0.2');
      await wait(b, sa.lease, '198.18.0.1');
      // A second network gets the next VNI.
      await createNetwork(a, id(3), NET2);
      assert.equal(a.driver.status().networks.find((n) => n.range === NET2)?.vni, 4098);

      // The first host leaving keeps the network (b still holds a lease)...
      await ok(a, 'IpamDriver.ReleasePool', { PoolID: na.poolId });
      await ok(a, 'NetworkDriver.DeleteNetwork', { NetworkID: id(1) });
      assert.ok((await store.get('10.250.0.0-16')) !== undefined);
      assert.equal(await store.leaseCount('10.250.0.0-16'), 1);
      // ...the last one removes it, and its VNI is free again.
      await ok(b, 'IpamDriver.ReleasePool', { PoolID: nb.poolId });
      await ok(b, 'NetworkDriver.DeleteNetwork', { NetworkID: id(2) });
      assert.equal(await store.get('10.250.0.0-16'), undefined);
      await createNetwork(b, id(4), '10.252.0.0/16');
      assert.equal(b.driver.status().networks[0].vni, 4097);
    } finally {
      await close(a);
      await close(b);
    }
  });

  test("bad requests answer in Docker's error shape, naming the option", async () => {
    const r = await rig(new MemNetworkStore(new MemKv()), '198.18.0.1');
    try {
      const pool = (o: Record<string, unknown>) => ({ AddressSpace: 'vxnet-local', Pool: NET1, SubPool: '', Options: {}, V6: false, ...o });
      await refused(r, 'IpamDriver.RequestPool', pool({ V6: true }), '--ipv6');
      await refused(r, 'IpamDriver.RequestPool', pool({ SubPool: '10.250.1.0/24' }), '--ip-range');
      await refused(r, 'IpamDriver.RequestPool', pool({ Options: { color: 'blue' } }), '--ipam-opt color', /unknown vxnet IPAM option/);
      await refused(r, 'IpamDriver.RequestPool', pool({ Options: { 'vxnet.subnet-len': '15' } }), '--ipam-opt vxnet.subnet-len', /18\.\.30/);
      await refused(r, 'IpamDriver.RequestPool', pool({ Options: { 'vxnet.subnet-len': 'big' } }), '--ipam-opt vxnet.subnet-len');
      await refused(r, 'IpamDriver.RequestPool', pool({ Pool: '10.250.0.1/16' }), '--subnet', /host bits/);
      await refused(r, 'IpamDriver.RequestPool', pool({ Pool: '10.244.0.0/20' }), '--subnet', /overlaps the daemon's flannel network/);
      await refused(r, 'IpamDriver.RequestPool', pool({ Pool: '10.9.9.0/30' }), '--subnet');

      // A network whose pool is not ours (dockerd's default IPAM).
      await refused(
        r,
        'NetworkDriver.CreateNetwork',
        { NetworkID: id(9), Options: {}, IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '172.30.0.0/16', Gateway: '172.30.0.1/16' }], IPv6Data: [] },
        '--ipam-driver',
      );
      const p = await ok(r, 'IpamDriver.RequestPool', pool({ Options: { 'vxnet.subnet-len': '30' } }));
      // The same range twice on one host.
      await refused(r, 'IpamDriver.RequestPool', pool({}), '--subnet', /already the range/);
      const gw = await ok(r, 'IpamDriver.RequestAddress', { PoolID: p.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
      await refused(r, 'IpamDriver.RequestAddress', { PoolID: p.PoolID, Address: '10.250.99.99', Options: { RequestAddressType: 'com.docker.network.gateway' } }, '--gateway');
      const v4 = [{ AddressSpace: 'vxnet-local', Pool: NET1, Gateway: gw.Address }];
      await refused(r, 'NetworkDriver.CreateNetwork', { NetworkID: id(5), Options: { 'com.docker.network.generic': { foo: 'bar' } }, IPv4Data: v4 }, '-o foo');
      await refused(r, 'NetworkDriver.CreateNetwork', { NetworkID: id(5), Options: { 'com.docker.network.generic': { 'com.docker.network.driver.mtu': '9000' } }, IPv4Data: v4 }, '-o com.docker.network.driver.mtu', /576\.\.1450/);
      await refused(r, 'NetworkDriver.CreateNetwork', { NetworkID: id(5), Options: { 'com.docker.network.enable_ipv6': true }, IPv4Data: v4 }, '--ipv6');
      await ok(r, 'NetworkDriver.CreateNetwork', { NetworkID: id(5), Options: { 'com.docker.network.generic': { 'com.docker.network.driver.mtu': '1400' } }, IPv4Data: v4 });
      assert.equal(r.driver.status().networks[0].mtu, 1400);
      // A /30 lease holds one container: the second request exhausts it.
      const lease = parseCidr(r.driver.status().networks[0].lease);
      await refused(r, 'IpamDriver.RequestAddress', { PoolID: p.PoolID, Address: '10.250.200.7', Options: null }, '--ip', /not in this host's lease/);
      await ok(r, 'IpamDriver.RequestAddress', { PoolID: p.PoolID, Address: '', Options: null });
      await refused(r, 'IpamDriver.RequestAddress', { PoolID: p.PoolID, Address: '', Options: null }, '--ipam-opt vxnet.subnet-len', new RegExp(`no free address left in this host's lease ${formatCidr(lease).replace(/\./g, '\\.')}`));
      await refused(r, 'IpamDriver.RequestAddress', { PoolID: 'vxnet/10.1.0.0-16', Address: '', Options: null }, 'PoolID', /unknown vxnet pool/);
      await refused(r, 'NetworkDriver.CreateEndpoint', { NetworkID: id(77), EndpointID: id(701), Interface: { Address: '10.250.1.2/24' } }, 'NetworkID', /unknown vxnet network/);
      await refused(r, 'NetworkDriver.Join', { NetworkID: id(5), EndpointID: id(702), SandboxKey: '/x' }, 'EndpointID', /unknown endpoint/);
      await refused(r, 'NetworkDriver.CreateEndpoint', { NetworkID: id(5), EndpointID: id(703), Interface: { Address: '10.250.200.7/30' } }, '--ip', /not in this host's lease/);
      await refused(r, 'NetworkDriver.CreateEndpoint', { NetworkID: id(5), EndpointID: id(704), Interface: {} }, '--ipam-driver');
    } finally {
      await close(r);
    }
  });

  test('a name bound to another range in etcd makes the network refuse endpoints, with the fix in the message', async () => {
    const store = new MemNetworkStore(new MemKv());
    const a = await rig(store, '198.18.0.1');
    const b = await rig(store, '198.18.0.2');
    try {
      a.engine.add(id(1), 'net1', parseCidr(NET1));
      const na = await createNetwork(a, id(1), NET1);
      for (let i = 0; i < 100 && a.driver.status().networks[0].name !== 'net1'; i++) await new Promise((res) => setTimeout(res, 10));
      assert.equal((await store.get('10.250.0.0-16'))?.name, 'net1');
      // Host b creates "net1" with another range.
      b.engine.add(id(2), 'net1', parseCidr(NET2));
      const nb = await createNetwork(b, id(2), NET2);
      for (let i = 0; i < 100 && !b.driver.status().networks[0].conflict; i++) await new Promise((res) => setTimeout(res, 10));
      const addr = await ok(b, 'IpamDriver.RequestAddress', { PoolID: nb.poolId, Address: '', Options: null });
      const err = await refused(b, 'NetworkDriver.CreateEndpoint', { NetworkID: id(2), EndpointID: id(301), Interface: { Address: addr.Address } }, 'network');
      assert.match(err, /"net1" belongs to vxnet network 10\.250\.0\.0\/16/);
      assert.match(err, /--subnet 10\.250\.0\.0\/16/);
      // Host a's net1 is unaffected.
      await runContainer(a, id(1), na.poolId, id(302));
    } finally {
      await close(a);
      await close(b);
    }
  });

  test("network sync: a network removed while the sync created it is not brought back; the rm propagates in either of dockerd's call orders", async () => {
    const kv = new MemKv();
    const store = new MemNetworkStore(kv);
    const KEY = '10.250.0.0-16';
    // Host a syncs; its dockerd, as dockerd does, stops listing a network once its rm has begun.
    const ea = new RacingEngine();
    const a = await rig(store, '198.18.0.1', { engine: ea, syncNetworks: true, syncPeriodMs: 20 });
    const b = await rig(store, '198.18.0.2');
    try {
      ea.add(id(1), 'net1', parseCidr(NET1));
      const na = await createNetwork(a, id(1), NET1);
      b.engine.add(id(2), 'net1', parseCidr(NET1));
      await createNetwork(b, id(2), NET1);
      for (let i = 0; i < 200 && (await store.get(KEY))?.name !== 'net1'; i++) await new Promise((res) => setTimeout(res, 10));
      assert.equal((await store.get(KEY))?.name, 'net1');
      // `docker network rm net1` on a begins: dockerd lists net1 no more, and a sync pass that read
      // the record before the rm asks dockerd to create net1. dockerd finishes the rm first
      // (ReleasePool, DeleteNetwork), then asks for the new network's pool.
      let refusal = '';
      let creates = 0;
      const raced = new Promise<void>((resolve, reject) => {
        ea.onCreate = async (spec) => {
          creates++;
          try {
            await ok(a, 'IpamDriver.ReleasePool', { PoolID: na.poolId });
            await ok(a, 'NetworkDriver.DeleteNetwork', { NetworkID: id(1) });
            ea.networks.delete(id(1));
            const res = await call(a, 'IpamDriver.RequestPool', { AddressSpace: 'vxnet-local', Pool: spec.subnet, SubPool: '', Options: spec.ipamOptions, V6: false });
            refusal = String(res.json.Err ?? '');
            resolve();
            if (res.status !== 200) throw new Error(refusal);
          } catch (err) {
            reject(err as Error);
            throw err;
          }
        };
      });
      ea.hidden.add('net1');
      await raced;
      assert.match(refusal, /^--subnet: 10\.250\.0\.0\/16 was removed \(docker network rm\) while the network sync created it here; not created$/);
      // The removal stands: the record says deleted (b's sync would remove its net1), a holds
      // nothing, and later sync passes leave it alone.
      await new Promise((res) => setTimeout(res, 200));
      assert.equal((await store.get(KEY))?.deleted, true);
      assert.equal(await store.leaseCount(KEY), 1, "only b's lease is left");
      assert.deepEqual(a.driver.status().networks, []);
      assert.equal(creates, 1);

      // A user creates it again on a: it lives on. Then the rm in the order dockerd before 20.10
      // makes the calls (DeleteNetwork, then ReleasePool) still marks it deleted for every host.
      ea.onCreate = undefined;
      ea.hidden.clear();
      ea.add(id(3), 'net1', parseCidr(NET1));
      const n3 = await createNetwork(a, id(3), NET1);
      assert.equal((await store.get(KEY))?.deleted, false);
      for (let i = 0; i < 200 && a.driver.status().networks[0]?.name !== 'net1'; i++) await new Promise((res) => setTimeout(res, 10));
      await ok(a, 'NetworkDriver.DeleteNetwork', { NetworkID: id(3) });
      ea.networks.delete(id(3));
      await ok(a, 'IpamDriver.ReleasePool', { PoolID: n3.poolId });
      assert.equal((await store.get(KEY))?.deleted, true);
      assert.equal(await store.leaseCount(KEY), 1);
    } finally {
      await close(a);
      await close(b);
    }
  });

  test('a restarted driver picks up its pools, lease, namespaces, TUNs and endpoints from the state file', async () => {
    const store = new MemNetworkStore(new MemKv());
    const stateFile = path.join(dir, 'restart-state.json');
    const a = await rig(store, '198.18.0.1', {}, stateFile);
    const n = await createNetwork(a, id(1), NET1);
    const c1 = await runContainer(a, id(1), n.poolId, id(401));
    const before = a.driver.status().networks[0];
    await close(a);
    assert.equal(a.dp.open().length, 0, 'TUN closed on stop');
    // The same host again (its namespaces survived): a new driver over the same store and state.
    const host = a.host;
    const dp = new FakeDatapath();
    const driver = new DockerDriver({ ...a.opts, host, datapath: dp });
    await driver.start();
    try {
      for (let i = 0; i < 200 && dp.open().length === 0; i++) await new Promise((res) => setTimeout(res, 10));
      const after = driver.status().networks[0];
      assert.equal(after.lease, before.lease);
      assert.equal(after.vni, before.vni);
      assert.deepEqual(after.endpoints.map((e) => e.address), [c1.address.split('/')[0]]);
      assert.equal(dp.open().length, 1);
      assert.equal(await store.leaseCount('10.250.0.0-16'), 1);
      // The next address is not the one in use.
      const next = await driver.handle('IpamDriver.RequestAddress', { PoolID: n.poolId, Address: '', Options: null });
      assert.notEqual((next as { Address: string }).Address, c1.address);
    } finally {
      await driver.stop();
    }
  });

  test('state lost (a reboot emptied /run): the pool and network dockerd still uses are taken up again from etcd', async () => {
    const store = new MemNetworkStore(new MemKv());
    const a = await rig(store, '198.18.0.1');
    const n = await createNetwork(a, id(1), NET1);
    await runContainer(a, id(1), n.poolId, id(501));
    const lease = a.driver.status().networks[0].lease;
    await close(a);
    // A fresh state file and no namespaces: only etcd (our lease, TTL not run out) and dockerd remember.
    const b = await rig(store, '198.18.0.1');
    try {
      assert.deepEqual(b.driver.status().networks, []);
      // dockerd starts the container again: Leave/DeleteEndpoint of the old endpoint are harmless...
      await ok(b, 'NetworkDriver.Leave', { NetworkID: id(1), EndpointID: id(501) });
      await ok(b, 'NetworkDriver.DeleteEndpoint', { NetworkID: id(1), EndpointID: id(501) });
      // ...and a new endpoint works: the same lease (etcd's for our public IP), namespace and TUN again.
      const c = await runContainer(b, id(1), n.poolId, id(502));
      const st = b.driver.status().networks[0];
      assert.equal(st.lease, lease);
      assert.ok(cidrContains(parseCidr(lease), parseIPv4(c.address.split('/')[0])));
      assert.ok(b.host.namespaces.has('10.250.0.0-16'));
      assert.equal(b.dp.open().length, 1);
      assert.deepEqual((c.join.StaticRoutes as unknown[]).length, 1);
      // A pool etcd does not know is still refused.
      await refused(b, 'IpamDriver.RequestAddress', { PoolID: 'vxnet/10.77.0.0-16', Address: '', Options: null }, 'PoolID');
    } finally {
      await close(b);
    }
  });
});
