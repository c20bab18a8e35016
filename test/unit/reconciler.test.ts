import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from '../../src/backend/backend';
import type { Lease } from '../../src/subnet/types';
import { parseCidr } from '../../src/net/ip';
import { checkPeer, PeerFilter } from '../../src/backend/common';
import { PeerReconciler } from '../../src/backend/reconciler';

interface Peer {
  publicIp: string;
  mac: string;
}

interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}

function lease(n: number, publicIp = `198.18.0.${n}`, mac = `02:00:00:00:00:0${n}`, backendType = 'fake'): Lease {
  return { subnet: parseCidr(`10.244.${n}.0/24`), attrs: { publicIp, backendType, backendData: { mac } } };
}

const subnet = (n: number) => `10.244.${n}.0/24`;
const tick = () => new Promise<void>((r) => setImmediate(r));

/** A reconciler over fake hooks that record every call and can be told to fail or to block. */
function harness() {
  const logs: LogLine[] = [];
  const log: Logger = {
    info: (msg, fields) => logs.push({ level: 'info', msg, fields }),
    warn: (msg, fields) => logs.push({ level: 'warn', msg, fields }),
    error: (msg, fields) => logs.push({ level: 'error', msg, fields }),
  };
  const calls: string[] = [];
  /** What the fake host holds, as the hooks left it. */
  const host = new Map<string, Peer>();
  const failInstall = new Set<string>();
  const failRemove = new Set<string>();
  let gate: Promise<void> | undefined;
  const filter = new PeerFilter<Peer>(log, (l) => checkPeer(l, ['fake']) ?? { publicIp: l.attrs.publicIp, mac: (l.attrs.backendData as { mac: string }).mac });
  const rec = new PeerReconciler<Peer>(
    'fake',
    filter,
    {
      install: async (key, p) => {
        calls.push(`install ${key} ${p.publicIp} ${p.mac}`);
        if (gate) await gate;
        if (failInstall.has(key)) throw new Error(`boom ${key}`);
        host.set(key, p);
      },
      remove: async (key, p) => {
        calls.push(`remove ${key} ${p.publicIp} ${p.mac}`);
        if (failRemove.has(key)) throw new Error(`stuck ${key}`);
        host.delete(key);
      },
      equal: (a, b) => a.publicIp === b.publicIp && a.mac === b.mac,
      describe: (p) => ({ publicIp: p.publicIp }),
    },
    log,
  );
  const take = () => calls.splice(0);
  const block = () => {
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    return () => {
      gate = undefined;
      release();
    };
  };
  return { rec, logs, host, failInstall, failRemove, take, block };
}

test('adds new peers, keeps unchanged ones and removes withdrawn ones', async () => {
  const h = harness();
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.take(), [`install ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`, `install ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`]);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2), subnet(3)]);

  // Idempotent: the same set again touches nothing.
  await h.rec.setPeers([lease(3), lease(2)]);
  assert.deepEqual(h.take(), []);

  await h.rec.setPeers([lease(3), lease(4)]);
  assert.deepEqual(h.take(), [`remove ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`, `install ${subnet(4)} 198.18.0.4 02:00:00:00:00:04`]);
  assert.deepEqual([...h.host.keys()].sort(), [subnet(3), subnet(4)]);
  assert.deepEqual([...h.rec.installed.keys()].sort(), [subnet(3), subnet(4)]);

  await h.rec.setPeers([]);
  assert.deepEqual(h.take().sort(), [`remove ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`, `remove ${subnet(4)} 198.18.0.4 02:00:00:00:00:04`]);
  assert.equal(h.rec.installed.size, 0);
  assert.equal(h.host.size, 0);
});

test("a change of a peer's public IP or MAC replaces it: old entries removed before the new are installed", async () => {
  const h = harness();
  await h.rec.setPeers([lease(2), lease(3)]);
  h.take();

  await h.rec.setPeers([lease(2, '198.18.9.2'), lease(3)]);
  assert.deepEqual(h.take(), [`remove ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`, `install ${subnet(2)} 198.18.9.2 02:00:00:00:00:02`]);

  await h.rec.setPeers([lease(2, '198.18.9.2'), lease(3, '198.18.0.3', '02:00:5e:00:00:99')]);
  assert.deepEqual(h.take(), [`remove ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`, `install ${subnet(3)} 198.18.0.3 02:00:5e:00:00:99`]);
  assert.deepEqual(h.host.get(subnet(3)), { publicIp: '198.18.0.3', mac: '02:00:5e:00:00:99' });
  assert.deepEqual(h.rec.installed.get(subnet(2)), { publicIp: '198.18.9.2', mac: '02:00:00:00:00:02' });
});

test('a failed install is logged, reported and retried by the next setPeers until it succeeds', async () => {
  const h = harness();
  h.failInstall.add(subnet(3));
  await h.rec.setPeers([lease(2), lease(3)]);
  h.take();
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2)]);
  assert.deepEqual(h.rec.failed, [subnet(3)]);
  const err = h.logs.filter((l) => l.level === 'error');
  assert.equal(err.length, 1);
  assert.deepEqual(err[0].fields, { backend: 'fake', subnet: subnet(3), publicIp: '198.18.0.3', error: `boom ${subnet(3)}` });

  // Same peer set: only the failed peer is tried again.
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.take(), [`install ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`]);
  assert.deepEqual(h.rec.failed, [subnet(3)]);

  h.failInstall.clear();
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.take(), [`install ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`]);
  assert.deepEqual(h.rec.failed, []);
  assert.deepEqual([...h.rec.installed.keys()].sort(), [subnet(2), subnet(3)]);

  // A failed peer that is withdrawn is no longer reported or retried.
  h.failInstall.add(subnet(4));
  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  assert.deepEqual(h.rec.failed, [subnet(4)]);
  h.take();
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.take(), []);
  assert.deepEqual(h.rec.failed, []);
});

test('a failed removal is logged and the peer forgotten; rejected leases are skipped, not installed', async () => {
  const h = harness();
  await h.rec.setPeers([lease(2), lease(5, '198.18.0.5', '02:00:00:00:00:05', 'host-gw'), lease(6, 'nope')]);
  assert.deepEqual(h.take(), [`install ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`]);
  assert.deepEqual(h.rec.skipped, [subnet(5), subnet(6)]);

  h.failRemove.add(subnet(2));
  await h.rec.setPeers([]);
  assert.deepEqual(h.take(), [`remove ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`]);
  assert.equal(h.rec.installed.size, 0);
  assert.ok(h.logs.some((l) => l.level === 'warn' && l.msg === 'failed to remove peer' && l.fields?.subnet === subnet(2)));
  assert.deepEqual(h.rec.skipped, []);
});

test('concurrent setPeers calls run one at a time, in call order', async () => {
  const h = harness();
  const release = h.block();
  const first = h.rec.setPeers([lease(2)]);
  const second = h.rec.setPeers([lease(3)]);
  const third = h.rec.setPeers([lease(3), lease(4)]);
  for (let i = 0; i < 5; i++) await tick();
  // The first call is inside its install; the others have not started.
  assert.deepEqual(h.take(), [`install ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`]);
  assert.equal(h.rec.installed.size, 0);
  release();
  await Promise.all([first, second, third]);
  assert.deepEqual(h.take(), [
    `remove ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`,
    `install ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`,
    `install ${subnet(4)} 198.18.0.4 02:00:00:00:00:04`,
  ]);
  assert.deepEqual([...h.host.keys()].sort(), [subnet(3), subnet(4)]);
});

test('close waits for a running setPeers, removes every peer once, and later setPeers fail', async () => {
  const h = harness();
  await h.rec.setPeers([lease(2)]);
  h.take();
  const release = h.block();
  const pending = h.rec.setPeers([lease(2), lease(3)]);
  const closing = h.rec.close();
  await tick();
  assert.equal(h.rec.closed, false, 'close has not run while setPeers is still installing');
  release();
  await Promise.all([pending, closing]);
  assert.deepEqual(h.take(), [`install ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`, `remove ${subnet(2)} 198.18.0.2 02:00:00:00:00:02`, `remove ${subnet(3)} 198.18.0.3 02:00:00:00:00:03`]);
  assert.equal(h.host.size, 0);
  assert.equal(h.rec.closed, true);
  await h.rec.close();
  assert.deepEqual(h.take(), [], 'close is idempotent');
  await assert.rejects(h.rec.setPeers([lease(2)]), /^Error: fake: setPeers after close$/);
});

test('close with a teardown runs it instead of removing peers one by one', async () => {
  const h = harness();
  await h.rec.setPeers([lease(2), lease(3)]);
  h.take();
  let tornDown = 0;
  await h.rec.close(async () => {
    tornDown++;
  });
  assert.equal(tornDown, 1);
  assert.deepEqual(h.take(), []);
  assert.equal(h.rec.installed.size, 0);
});
