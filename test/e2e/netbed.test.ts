// End-to-end checks of the namespace testbed: topology, addressing, traffic tools, and that no
// namespace survives destroy, a failed build, a signal or a crash.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { NetBed, iperf3Tcp, ping, type BedHost } from '../../src/testbed/netbed';
import { listNamespaces, pidAlive } from '../../src/testbed/cleanup';
import { runCommand } from '../../src/testbed/exec';
import { makePrefix, ownerOf } from '../../src/testbed/naming';
import { RELAY_TUN, startRelays } from '../../bench/lib/relay';

const NETBED_JS = path.join(__dirname, '../../src/testbed/netbed.js');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function nsWithPrefix(prefix: string): string[] {
  return listNamespaces().filter((n) => n.startsWith(`${prefix}-`));
}

async function linkJson(bed: NetBed, ns: string, dev: string): Promise<{ mtu: number; master?: string; operstate?: string }> {
  const out = await bed.execOk(ns, ['ip', '-j', 'link', 'show', 'dev', dev]);
  return (JSON.parse(out) as Array<{ mtu: number; master?: string; operstate?: string }>)[0];
}

async function ipv4Addrs(bed: NetBed, ns: string, dev: string): Promise<string[]> {
  const out = await bed.execOk(ns, ['ip', '-j', '-4', 'addr', 'show', 'dev', dev]);
  const parsed = JSON.parse(out) as Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>;
  return parsed.flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`));
}

async function waitDead(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!pidAlive(pid)) return true;
    await sleep(20);
  }
  return false;
}

async function assertAllReplied(bed: NetBed, fromNs: string, toIp: string): Promise<void> {
  const r = await ping(bed, fromNs, toIp, { count: 2, intervalS: 0.1 });
  assert.equal(r.transmitted, 2, `${fromNs} -> ${toIp}`);
  assert.equal(r.received, 2, `${fromNs} -> ${toIp}`);
  assert.equal(r.rttMs.length, 2);
}

describe('NetBed', { timeout: 120_000 }, () => {
  let bed: NetBed;
  let sigtermListenersBefore = 0;

  before(async () => {
    sigtermListenersBefore = process.listenerCount('SIGTERM');
    const t0 = Date.now();
    bed = await NetBed.create({ hosts: 3 });
    assert.ok(Date.now() - t0 < 5_000, `3-host bed took ${Date.now() - t0} ms`);
  });

  after(async () => {
    await bed?.destroy();
  });

  it('builds the switch, hosts and containers as namespaces named after the prefix', async () => {
    assert.match(bed.prefix, /^vx[0-9a-z]{9}$/);
    assert.equal(ownerOf(bed.switchNs)?.pid, process.pid);
    const expected = [bed.switchNs, ...[1, 2, 3].flatMap((i) => [`${bed.prefix}-h${i}`, `${bed.prefix}-h${i}c`])];
    assert.deepEqual(nsWithPrefix(bed.prefix).sort(), expected.sort());
    assert.deepEqual(await ipv4Addrs(bed, bed.switchNs, 'br0'), ['198.18.0.254/24']);
    assert.equal(bed.switchIp, '198.18.0.254');
    for (const h of bed.hosts) {
      assert.equal(h.ns, `${bed.prefix}-h${h.index}`);
      assert.equal(h.containerNs, `${bed.prefix}-h${h.index}c`);
      assert.equal(h.underlayIp, `198.18.0.${h.index}`);
      assert.deepEqual(await ipv4Addrs(bed, h.ns, 'eth0'), [`198.18.0.${h.index}/24`]);
      assert.equal((await linkJson(bed, h.ns, 'eth0')).mtu, 1500);
      assert.equal((await linkJson(bed, h.ns, 'veth0')).master, 'docker0');
      assert.equal((await linkJson(bed, bed.switchNs, `p${h.index}`)).master, 'br0');
      assert.equal((await bed.execOk(h.ns, ['sysctl', '-n', 'net.ipv4.ip_forward'])).trim(), '1');
    }
    // The root namespace must not have gained any of the bed's devices.
    const root = (await runCommand(['ip', '-br', 'link'])).stdout;
    assert.doesNotMatch(root, /^(br0|docker0|veth0|p[0-9]+)\b/m);
  });

  it('hosts reach each other and the switch over the underlay', async () => {
    for (const from of bed.hosts) {
      for (const to of bed.hosts) if (to !== from) await assertAllReplied(bed, from.ns, to.underlayIp);
      await assertAllReplied(bed, from.ns, bed.switchIp);
    }
  });

  it('readdresses docker0 and the container from a FLANNEL_SUBNET-style gateway', async () => {
    for (const h of bed.hosts) {
      const ip = await h.setContainerSubnet(`10.244.${h.index}.1/24`, 1450);
      assert.equal(ip, `10.244.${h.index}.2`);
      assert.equal(h.containerIp, ip);
      assert.deepEqual(await ipv4Addrs(bed, h.ns, 'docker0'), [`10.244.${h.index}.1/24`]);
      assert.deepEqual(await ipv4Addrs(bed, h.containerNs, 'eth0'), [`10.244.${h.index}.2/24`]);
      for (const [ns, dev] of [[h.containerNs, 'eth0'], [h.ns, 'veth0'], [h.ns, 'docker0']] as const) {
        assert.equal((await linkJson(bed, ns, dev)).mtu, 1450, `${ns} ${dev}`);
      }
      const route = JSON.parse(await bed.execOk(h.containerNs, ['ip', '-j', 'route', 'show', 'default'])) as Array<{ gateway: string }>;
      assert.deepEqual(route.map((r) => r.gateway), [`10.244.${h.index}.1`]);
      await assertAllReplied(bed, h.containerNs, `10.244.${h.index}.1`);
    }
  });

  it('replaces the old subnet on readdressing and refuses subnets outside 10.244.0.0/16', async () => {
    const h1 = bed.hosts[0];
    assert.equal(await h1.setContainerSubnet('10.244.11.1/24', 1400), '10.244.11.2');
    assert.deepEqual(await ipv4Addrs(bed, h1.ns, 'docker0'), ['10.244.11.1/24']);
    assert.deepEqual(await ipv4Addrs(bed, h1.containerNs, 'eth0'), ['10.244.11.2/24']);
    assert.equal((await linkJson(bed, h1.containerNs, 'eth0')).mtu, 1400);
    await assertAllReplied(bed, h1.containerNs, '10.244.11.1');
    await assert.rejects(h1.setContainerSubnet('192.168.7.1/24', 1450), /outside the test overlay range/);
    await assert.rejects(h1.setContainerSubnet('10.244.12.2/24', 1450), /must not be/);
    assert.equal(await h1.setContainerSubnet('10.244.1.1/24', 1450), '10.244.1.2');
  });

  it('adds a fourth host that joins the underlay', async () => {
    const h4: BedHost = await bed.addHost();
    assert.equal(h4.index, 4);
    assert.equal(h4.underlayIp, '198.18.0.4');
    assert.equal(bed.hosts.length, 4);
    assert.ok(nsWithPrefix(bed.prefix).includes(`${bed.prefix}-h4c`));
    await assertAllReplied(bed, h4.ns, bed.hosts[0].underlayIp);
    await assertAllReplied(bed, bed.hosts[2].ns, h4.underlayIp);
    assert.equal(await h4.setContainerSubnet('10.244.4.1/24', 1450), '10.244.4.2');
    await assertAllReplied(bed, h4.containerNs, '10.244.4.1');
  });

  it('reports loss instead of throwing when nobody answers', async () => {
    const r = await ping(bed, bed.hosts[0].ns, '198.18.0.200', { count: 1, timeoutS: 1 });
    assert.deepEqual(r, { transmitted: 1, received: 0, rttMs: [] });
  });

  it('measures TCP throughput with iperf3 and leaves no server behind', async () => {
    const [h1, h2] = bed.hosts;
    const r = await iperf3Tcp(bed, h2.ns, h2.underlayIp, h1.ns, { seconds: 1 });
    assert.ok(r.bitsPerSecond > 0, `bits/s ${r.bitsPerSecond}`);
    assert.ok(r.bytes > 0);
    const rev = await iperf3Tcp(bed, h2.ns, h2.underlayIp, h1.ns, { seconds: 1, reverse: true, streams: 2 });
    assert.ok(rev.bitsPerSecond > 0);
    for (const ns of bed.namespaceNames()) {
      const pids = (await runCommand(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
      for (const pid of pids) assert.notEqual(readFileSync(`/proc/${pid}/comm`, 'utf8').trim(), 'iperf3', `iperf3 pid ${pid} left in ${ns}`);
    }
  });

  it("the benchmarks' minimal relay carries container traffic both ways between two hosts; down() removes it", async () => {
    const [h1, h2] = bed.hosts;
    const relays = await startRelays(bed, h1, h2);
    try {
      assert.equal(relays.mtu, bed.underlayMtu - 28);
      assert.equal(relays.pids.length, 2);
      await assertAllReplied(bed, h1.containerNs, h2.containerIp!);
      await assertAllReplied(bed, h2.containerNs, h1.containerIp!);
      // A packet of the full MTU, DF set, crosses whole: the relay's datagram is the whole packet.
      const full = await ping(bed, h1.containerNs, h2.containerIp!, { count: 1, size: relays.mtu - 28, dontFragment: true });
      assert.equal(full.received, 1, `a ${relays.mtu}-byte packet with DF`);
    } finally {
      await relays.down();
    }
    for (const pid of relays.pids) assert.ok(await waitDead(pid), `relay ${pid} still running`);
    for (const h of [h1, h2]) assert.equal((await bed.exec(h.ns, ['ip', 'link', 'show', 'dev', RELAY_TUN])).code, 1, `${RELAY_TUN} left on ${h.name}`);
    const r = await ping(bed, h1.containerNs, h2.containerIp!, { count: 1, timeoutS: 1 });
    assert.equal(r.received, 0, 'nothing forwards once the relays are down');
  });

  it('exec returns nonzero codes, execOk throws with command and stderr, timeouts throw', async () => {
    const ns = bed.hosts[0].ns;
    const r = await bed.exec(ns, ['sh', '-c', 'echo out; echo oops >&2; exit 3']);
    assert.deepEqual(r, { code: 3, stdout: 'out\n', stderr: 'oops\n' });
    assert.equal(await bed.execOk(ns, ['cat'], { input: 'piped' }), 'piped');
    await assert.rejects(bed.execOk(ns, ['ip', 'link', 'show', 'dev', 'nosuchdev']), (e: Error) => {
      assert.match(e.message, /exit 1/);
      assert.match(e.message, /ip netns exec \S+ ip link show dev nosuchdev/);
      assert.match(e.message, /nosuchdev/);
      return true;
    });
    const t0 = Date.now();
    // The background sleep keeps stdout open after sh is killed: the timeout must still fire.
    await assert.rejects(bed.exec(ns, ['sh', '-c', 'sleep 30 & wait'], { timeoutMs: 200 }), /timed out after 200 ms: ip netns exec \S+ sh -c 'sleep 30 & wait'/);
    assert.ok(Date.now() - t0 < 5_000);
  });

  it('spawns node inside a host namespace with an IPC channel', async () => {
    const script = `const os = require('os'); process.send({ eth0: (os.networkInterfaces().eth0 || []).map((a) => a.address) }); process.disconnect();`;
    const child = bed.spawn(bed.hosts[1].ns, [process.execPath, '-e', script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const msg = await new Promise<unknown>((resolve, reject) => {
      child.once('message', resolve);
      child.once('error', reject);
      child.once('exit', (code) => reject(new Error(`child exited ${code} before sending`)));
    });
    assert.ok((msg as { eth0: string[] }).eth0.includes('198.18.0.2'), JSON.stringify(msg));
  });

  it('destroy stops tracked children, deletes every namespace, and is idempotent', async () => {
    const sleeper = bed.spawn(bed.hosts[0].ns, ['sleep', '600'], { stdio: 'ignore' });
    const orphan = await bed.execOk(bed.hosts[1].containerNs, ['sh', '-c', 'sleep 600 >/dev/null 2>&1 & echo $!']);
    assert.ok(sleeper.pid && pidAlive(sleeper.pid));
    await Promise.all([bed.destroy(), bed.destroy()]);
    await bed.destroy();
    assert.deepEqual(nsWithPrefix(bed.prefix), []);
    assert.ok(sleeper.exitCode !== null || sleeper.signalCode !== null, 'tracked child still running');
    assert.ok(await waitDead(Number(orphan)), `untracked process ${orphan} inside a namespace survived`);
    await assert.rejects(bed.exec(bed.hosts[0].ns, ['true']), /destroyed/);
    assert.equal(process.listenerCount('SIGTERM'), sigtermListenersBefore, 'signal handler left installed');
  });
});

describe('NetBed options, failure and crash cleanup', { timeout: 120_000 }, () => {
  it('applies underlayMtu to both ends of every underlay veth', async () => {
    const bed = await NetBed.create({ hosts: 2, underlayMtu: 9000 });
    try {
      const [h1, h2] = bed.hosts;
      assert.equal((await linkJson(bed, h1.ns, 'eth0')).mtu, 9000);
      assert.equal((await linkJson(bed, bed.switchNs, 'p2')).mtu, 9000);
      assert.equal((await linkJson(bed, bed.switchNs, 'br0')).mtu, 9000);
      const fits = await ping(bed, h1.ns, h2.underlayIp, { count: 1, size: 9000 - 28, dontFragment: true });
      assert.equal(fits.received, 1);
      const tooBig = await ping(bed, h1.ns, h2.underlayIp, { count: 1, size: 9000 - 27, dontFragment: true });
      assert.equal(tooBig.received, 0);
    } finally {
      await bed.destroy();
    }
  });

  it('tears down a half-built bed and names the failing step', async () => {
    const tag = `f${process.pid.toString(36)}`.slice(0, 8);
    await assert.rejects(NetBed.create({ hosts: 2, tag, underlayMtu: 70_000 }), /wire hosts to the underlay switch failed: .*mtu 70000/);
    assert.deepEqual(
      listNamespaces().filter((n) => n.includes(`-${tag}-`)),
      [],
    );
  });

  for (const [mode, expectCode] of [
    ['SIGTERM', 143],
    ['SIGINT', 130],
    ['throw', 1],
  ] as const) {
    it(`a child process that ${mode === 'throw' ? 'throws an uncaught exception' : `gets ${mode}`} leaves no namespace`, async () => {
      const script = `
        const { NetBed } = require(${JSON.stringify(NETBED_JS)});
        NetBed.create({ hosts: 2 }).then((bed) => {
          const sleeper = bed.spawn(bed.hosts[0].ns, ['sleep', '600'], { stdio: 'ignore' });
          console.log(JSON.stringify({ prefix: bed.prefix, sleeper: sleeper.pid }));
          if (${JSON.stringify(mode)} === 'throw') setTimeout(() => { throw new Error('boom'); }, 50);
          else setInterval(() => {}, 1000);
        });`;
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      const info = await new Promise<{ prefix: string; sleeper: number }>((resolve, reject) => {
        let buf = '';
        child.stdout.on('data', (b: Buffer) => {
          buf += b.toString();
          const nl = buf.indexOf('\n');
          if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)) as { prefix: string; sleeper: number });
        });
        void exited.then((code) => reject(new Error(`child exited ${code} before reporting: ${stderr}`)));
      });
      try {
        if (mode !== 'throw') {
          assert.equal(nsWithPrefix(info.prefix).length, 5);
          child.kill(mode);
        }
        let timer: NodeJS.Timeout | undefined;
        const code = await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 10_000, 'still running')))]);
        clearTimeout(timer);
        assert.equal(code, expectCode, stderr);
        if (mode === 'throw') assert.match(stderr, /boom/);
        assert.deepEqual(nsWithPrefix(info.prefix), []);
        assert.ok(await waitDead(info.sleeper), `sleep ${info.sleeper} survived its bed`);
      } finally {
        // On failure, do not leak the child or its bed into the rest of the run.
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGKILL');
          await exited;
        }
        if (nsWithPrefix(info.prefix).length) await NetBed.cleanupStale();
      }
    });
  }

  it('cleanupStale removes beds of dead owners only', async () => {
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    const live = spawn('sleep', ['60'], { stdio: 'ignore' });
    const deadNs = `${makePrefix(dead.pid!)}-h1`;
    const liveNs = `${makePrefix(live.pid!)}-ul`;
    const foreignNs = `vx-foreign-${process.pid}-ul`;
    const own = await NetBed.create({ hosts: 1 });
    try {
      for (const ns of [deadNs, liveNs, foreignNs]) assert.equal((await runCommand(['ip', 'netns', 'add', ns])).code, 0);
      const removed = await NetBed.cleanupStale();
      assert.ok(removed.includes(deadNs), `removed ${removed}`);
      const left = listNamespaces();
      assert.ok(!left.includes(deadNs));
      for (const ns of [liveNs, foreignNs, ...own.namespaceNames()]) assert.ok(left.includes(ns), `${ns} was removed`);
    } finally {
      live.kill('SIGKILL');
      await own.destroy();
      for (const ns of [deadNs, liveNs, foreignNs]) await runCommand(['ip', 'netns', 'del', ns]);
    }
    assert.deepEqual(
      listNamespaces().filter((n) => [deadNs, liveNs, foreignNs].includes(n)),
      [],
    );
  });
});
