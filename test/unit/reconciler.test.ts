import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Logger } from '../../src/backend/backend';
import type { Lease } from '../../src/subnet/types';
import { parseCidr } from '../../src/net/ip';
import { checkPeer, PeerFilter } from '../../src/backend/common';
import { PeerReconciler } from '../../src/backend/reconciler';
import { commandHooks, type BatchRunner, type PeerCommandPlan } from '../../src/backend/peer-commands';
import { parseBatchErrors, type BatchTool } from '../../src/net/iproute';

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

/** A logger that keeps its lines. */
function recordingLog(): { logs: LogLine[]; log: Logger } {
  const logs: LogLine[] = [];
  const at = (level: LogLine['level']) => (msg: string, fields?: Record<string, unknown>) => void logs.push({ level, msg, fields });
  return { logs, log: { info: at('info'), warn: at('warn'), error: at('error') } };
}

/** A reconciler over fake hooks that record every call and can be told to fail or to block. */
function harness() {
  const { logs, log } = recordingLog();
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

// ---------------------------------------------------------------- the batch path (commandHooks)

/**
 * A reconciler over commandHooks with a kernel-vxlan-like plan (neighbour + FDB, then the route) and
 * a fake batch runner that records each batch and fails the lines it is told to.
 */
function batchHarness() {
  const { logs, log } = recordingLog();
  const batches: Array<{ tool: BatchTool; lines: string[] }> = [];
  /** Error text for each line (matched by substring) that is to fail. */
  const failLines = new Map<string, string>();
  let throwTool: BatchTool | undefined;
  const run: BatchRunner = async (tool, lines) => {
    batches.push({ tool, lines: [...lines] });
    if (tool === throwTool) throw new Error(`${tool}: spawn failed`);
    const failed = new Map<number, string>();
    lines.forEach((line, i) => {
      for (const [part, msg] of failLines) if (line.includes(part)) failed.set(i, msg);
    });
    return failed;
  };
  const rejected = new Set<string>();
  const filter = new PeerFilter<Peer>(log, (l) => checkPeer(l, ['fake']) ?? { publicIp: l.attrs.publicIp, mac: (l.attrs.backendData as { mac: string }).mac });
  const plan: PeerCommandPlan<Peer> = {
    install: (key, p) => [
      [
        { tool: 'ip', line: `neigh replace ${key} lladdr ${p.mac}` },
        { tool: 'bridge', line: `fdb replace ${p.mac} dst ${p.publicIp}` },
      ],
      [{ tool: 'ip', line: `route replace ${key}` }],
    ],
    remove: (key, p) => [
      [{ tool: 'ip', line: `route del ${key}` }],
      [
        { tool: 'ip', line: `neigh del ${key}` },
        { tool: 'bridge', line: `fdb del ${p.mac} dst ${p.publicIp}` },
      ],
    ],
    check: async (peers) => new Map(peers.filter(([key]) => rejected.has(key)).map(([key]) => [key, `${key} rejected`])),
    equal: (a, b) => a.publicIp === b.publicIp && a.mac === b.mac,
    describe: (p) => ({ publicIp: p.publicIp }),
  };
  const rec = new PeerReconciler<Peer>('fake', filter, commandHooks(plan, log, run), log);
  /** The batches run since the last call, as "tool: line | line". */
  const take = () => batches.splice(0).map((b) => `${b.tool}: ${b.lines.join(' | ')}`);
  return { rec, logs, failLines, rejected, take, throwIn: (tool?: BatchTool) => (throwTool = tool) };
}

/** A peer of the batch tests: n, with public IP 198.18.0.n unless given. */
type BatchPeer = number | [number, string];

/** The batch the fake plan runs for `peers`, one line each. */
function batchOf(tool: BatchTool, peers: BatchPeer[], line: (key: string, mac: string, publicIp: string) => string): string {
  const lines = peers.map((p) => (typeof p === 'number' ? [p, `198.18.0.${p}`] as const : p)).map(([n, ip]) => line(subnet(n), `02:00:00:00:00:0${n}`, ip));
  return `${tool}: ${lines.join(' | ')}`;
}
/** Install step 1 (neighbour and FDB batches) and step 2 (routes). */
const l2Batches = (...peers: BatchPeer[]) => [
  batchOf('ip', peers, (key, mac) => `neigh replace ${key} lladdr ${mac}`),
  batchOf('bridge', peers, (_key, mac, ip) => `fdb replace ${mac} dst ${ip}`),
];
const routeBatch = (...peers: BatchPeer[]) => batchOf('ip', peers, (key) => `route replace ${key}`);
/** Removal: routes, then neighbours and FDB entries. */
const removeBatches = (...peers: BatchPeer[]) => [
  batchOf('ip', peers, (key) => `route del ${key}`),
  batchOf('ip', peers, (key) => `neigh del ${key}`),
  batchOf('bridge', peers, (_key, mac, ip) => `fdb del ${mac} dst ${ip}`),
];

test('batch path: each step is one batch per tool for all peers, neighbour and FDB before routes', async () => {
  const h = batchHarness();
  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  assert.deepEqual(h.take(), [
    `ip: neigh replace ${subnet(2)} lladdr 02:00:00:00:00:02 | neigh replace ${subnet(3)} lladdr 02:00:00:00:00:03 | neigh replace ${subnet(4)} lladdr 02:00:00:00:00:04`,
    'bridge: fdb replace 02:00:00:00:00:02 dst 198.18.0.2 | fdb replace 02:00:00:00:00:03 dst 198.18.0.3 | fdb replace 02:00:00:00:00:04 dst 198.18.0.4',
    `ip: route replace ${subnet(2)} | route replace ${subnet(3)} | route replace ${subnet(4)}`,
  ]);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2), subnet(3), subnet(4)]);
  assert.deepEqual(h.rec.failed, []);

  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  assert.deepEqual(h.take(), [], 'nothing to do, no process');

  // A withdrawn and a changed peer: both removed (routes first) before the replacement goes in.
  await h.rec.setPeers([lease(2), lease(3, '198.18.9.3')]);
  assert.deepEqual(h.take(), [...removeBatches(3, 4), ...l2Batches([3, '198.18.9.3']), routeBatch(3)]);
  assert.deepEqual(h.rec.installed.get(subnet(3)), { publicIp: '198.18.9.3', mac: '02:00:00:00:00:03' });

  await h.rec.close();
  assert.deepEqual(h.take(), removeBatches(2, [3, '198.18.9.3']));
  assert.equal(h.rec.installed.size, 0);
});

test('batch path: a failed line fails only its peer, which gets no later step and loses what it got', async () => {
  const h = batchHarness();
  h.failLines.set('fdb replace 02:00:00:00:00:03', 'RTNETLINK answers: Operation not supported');
  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  // Its neighbour went in: the peer is removed again, best effort.
  assert.deepEqual(h.take(), [...l2Batches(2, 3, 4), routeBatch(2, 4), ...removeBatches(3)]);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2), subnet(4)]);
  assert.deepEqual(h.rec.failed, [subnet(3)]);
  const err = h.logs.filter((l) => l.level === 'error');
  assert.deepEqual(err.map((l) => l.fields), [
    { backend: 'fake', subnet: subnet(3), publicIp: '198.18.0.3', error: 'bridge fdb replace 02:00:00:00:00:03 dst 198.18.0.3: RTNETLINK answers: Operation not supported' },
  ]);

  // Retried alone at the next setPeers, until it works.
  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  assert.deepEqual(h.take(), [...l2Batches(3), ...removeBatches(3)]);
  assert.deepEqual(h.rec.failed, [subnet(3)]);
  h.failLines.clear();
  await h.rec.setPeers([lease(2), lease(3), lease(4)]);
  assert.deepEqual(h.take(), [...l2Batches(3), routeBatch(3)]);
  assert.deepEqual(h.rec.failed, []);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2), subnet(4), subnet(3)]);
});

test('batch path: a peer all of whose lines failed, or that the check rejected, needs no cleanup', async () => {
  const h = batchHarness();
  h.failLines.set(`route replace ${subnet(2)}`, 'Error: Nexthop has invalid gateway.');
  h.failLines.set('02:00:00:00:00:03', 'Cannot find device "x"');
  h.rejected.add(subnet(4));
  await h.rec.setPeers([lease(2), lease(3), lease(4), lease(5)]);
  assert.deepEqual(h.take(), [...l2Batches(2, 3, 5), routeBatch(2, 5), ...removeBatches(2)]);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(5)]);
  assert.deepEqual(h.rec.failed.sort(), [subnet(2), subnet(3), subnet(4)]);
  const errors = new Map(h.logs.filter((l) => l.level === 'error').map((l) => [l.fields?.subnet, l.fields?.error]));
  assert.equal(errors.get(subnet(2)), `ip route replace ${subnet(2)}: Error: Nexthop has invalid gateway.`);
  assert.equal(errors.get(subnet(3)), `ip neigh replace ${subnet(3)} lladdr 02:00:00:00:00:03: Cannot find device "x"`, 'the first failure of the peer is reported');
  assert.equal(errors.get(subnet(4)), `${subnet(4)} rejected`);
});

test('batch path: removals take "already gone" for done, other failures are logged and the peer forgotten', async () => {
  const h = batchHarness();
  await h.rec.setPeers([lease(2), lease(3)]);
  h.take();
  h.failLines.set(`route del ${subnet(2)}`, 'RTNETLINK answers: No such process');
  h.failLines.set(`neigh del ${subnet(3)}`, 'RTNETLINK answers: Operation not permitted');
  await h.rec.setPeers([]);
  assert.equal(h.take().length, 3, 'every removal step runs despite failures');
  assert.equal(h.rec.installed.size, 0);
  const warns = h.logs.filter((l) => l.level === 'warn');
  assert.deepEqual(warns.map((l) => [l.msg, l.fields?.subnet, l.fields?.error]), [
    ['failed to remove peer', subnet(3), `ip neigh del ${subnet(3)}: RTNETLINK answers: Operation not permitted`],
  ]);
});

test('batch path: a runner that throws fails every peer with a line in that batch', async () => {
  const h = batchHarness();
  h.throwIn('bridge');
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.rec.failed, [subnet(2), subnet(3)]);
  assert.equal(h.rec.installed.size, 0);
  // Their neighbours went in, so both are removed again (the bridge half of that throws too: logged).
  assert.deepEqual(h.take(), [...l2Batches(2, 3), ...removeBatches(2, 3)]);
  assert.ok(h.logs.some((l) => l.level === 'error' && l.fields?.error === 'bridge fdb replace 02:00:00:00:00:02 dst 198.18.0.2: bridge: spawn failed'));
  h.throwIn(undefined);
  await h.rec.setPeers([lease(2), lease(3)]);
  assert.deepEqual(h.rec.failed, []);
  assert.deepEqual([...h.rec.installed.keys()], [subnet(2), subnet(3)]);
});

test('parseBatchErrors: messages before each "Command failed -:N" belong to line N', () => {
  // As iproute2 6.1 prints them with -batch - -force (stderr of a real run).
  const stderr = [
    'Error: Nexthop has invalid gateway.',
    'Command failed -:2',
    'Object "bogus" is unknown, try "ip help".',
    'Command failed -:3',
    'RTNETLINK answers: No such process',
    'Command failed -:5',
    'Command failed -:7',
    '',
  ].join('\n');
  assert.deepEqual([...parseBatchErrors(stderr)], [
    [1, 'Error: Nexthop has invalid gateway.'],
    [2, 'Object "bogus" is unknown, try "ip help".'],
    [4, 'RTNETLINK answers: No such process'],
    [6, 'failed'],
  ]);
  assert.deepEqual([...parseBatchErrors('')], []);
});
