// The control socket: msgpack frames over an abstract unix socket, errors carried back, no daemon detected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { ControlServer, controlRequest, NoDaemonError } from '../../src/control/socket';

const uniqueName = () => `vxnet-test:${process.pid}:${randomBytes(6).toString('hex')}`;

test('request/reply round trip, daemon errors and unknown ops', async (t) => {
  const name = uniqueName();
  const big = Array.from({ length: 10000 }, (_, i) => ({ subnet: `10.${i >> 8}.${i & 255}.0/24`, installed: i % 2 === 0 }));
  const server = await ControlServer.listen(name, (req) => {
    if (req.op === 'status') return { peers: big, when: 'now' };
    throw new Error(`unknown op ${req.op}`);
  });
  t.after(() => server.close());
  const st = (await controlRequest(name, { op: 'status' })) as { peers: typeof big };
  assert.equal(st.peers.length, 10000);
  assert.deepEqual(st.peers[9999], big[9999]);
  await assert.rejects(controlRequest(name, { op: 'reboot' }), /daemon: unknown op reboot/);
});

test('a second server on the same name fails with EADDRINUSE', async (t) => {
  const name = uniqueName();
  const a = await ControlServer.listen(name, () => 1);
  t.after(() => a.close());
  await assert.rejects(ControlServer.listen(name, () => 2), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE');
  assert.equal(await controlRequest(name, { op: 'x' }), 1);
});

test('no daemon: NoDaemonError', async () => {
  await assert.rejects(controlRequest(uniqueName(), { op: 'status' }), NoDaemonError);
});

test('garbage and oversized frames close the connection without hurting the server', async (t) => {
  const name = uniqueName();
  const server = await ControlServer.listen(name, () => 'fine');
  t.after(() => server.close());
  for (const junk of [Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1])]) {
    await new Promise<void>((resolve) => {
      const s = net.createConnection({ path: `\0${name}` }, () => s.write(junk));
      s.on('close', () => resolve());
      s.on('error', () => undefined);
      s.resume();
    });
  }
  assert.equal(await controlRequest(name, { op: 'status' }), 'fine');
});
