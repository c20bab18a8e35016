// vxnet's iptables chains as text: the iptables-restore transactions that install and remove them,
// and flannel's forward rules. (Applied for real in namespaces by test/e2e/forward.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { forwardChain, forwardRules } from '../../src/host/forward';
import { installScript, quoteArg, removeScript } from '../../src/host/iptables';
import { masqChain } from '../../src/host/ipmasq';
import { parseCidr } from '../../src/net/ip';

const NET = parseCidr('10.244.0.0/16');

test("forward rules are flannel's: the whole network as source and as destination", () => {
  assert.deepEqual(forwardRules(NET), [
    ['-s', '10.244.0.0/16', '-m', 'comment', '--comment', 'vxnet forward', '-j', 'ACCEPT'],
    ['-d', '10.244.0.0/16', '-m', 'comment', '--comment', 'vxnet forward', '-j', 'ACCEPT'],
  ]);
  const c = forwardChain(NET);
  assert.equal(c.table, 'filter');
  assert.equal(c.chain, 'VXNET-FWD');
  assert.equal(c.hook, 'FORWARD');
  assert.equal(c.position, 'first');
});

test('install: one transaction declaring the chain, its rules, old jumps deleted, the jump inserted first', () => {
  const old = '-A FORWARD -m comment --comment "vxnet forward" -j VXNET-FWD';
  assert.equal(
    installScript(forwardChain(NET), [old, old]),
    [
      '*filter',
      ':VXNET-FWD - [0:0]',
      '-A VXNET-FWD -s 10.244.0.0/16 -m comment --comment "vxnet forward" -j ACCEPT',
      '-A VXNET-FWD -d 10.244.0.0/16 -m comment --comment "vxnet forward" -j ACCEPT',
      '-D FORWARD -m comment --comment "vxnet forward" -j VXNET-FWD',
      '-D FORWARD -m comment --comment "vxnet forward" -j VXNET-FWD',
      '-I FORWARD 1 -m comment --comment "vxnet forward" -j VXNET-FWD',
      'COMMIT',
      '',
    ].join('\n'),
  );
  // ip-masq keeps flannel's place: appended to POSTROUTING.
  const masq = installScript(masqChain(NET, parseCidr('10.244.3.0/24'), false), []);
  assert.match(masq, /^\*nat\n:VXNET-POSTRTG - \[0:0\]\n/);
  assert.match(masq, /\n-A POSTROUTING -m comment --comment "vxnet masq" -j VXNET-POSTRTG\nCOMMIT\n$/);
  assert.equal(masq.split('\n').filter((l) => l.startsWith('-A VXNET-POSTRTG ')).length, 6);
});

test('remove: deletes every jump, then empties and deletes the chain only if it exists', () => {
  const c = forwardChain(NET);
  const jump = '-A FORWARD -j VXNET-FWD';
  assert.equal(removeScript(c, [jump], true), '*filter\n-D FORWARD -j VXNET-FWD\n:VXNET-FWD - [0:0]\n-X VXNET-FWD\nCOMMIT\n');
  assert.equal(removeScript(c, [jump], false), '*filter\n-D FORWARD -j VXNET-FWD\nCOMMIT\n');
});

test('arguments with spaces or quotes are quoted for iptables-restore', () => {
  assert.equal(quoteArg('vxnet forward'), '"vxnet forward"');
  assert.equal(quoteArg('a"b'), '"a\\"b"');
  assert.equal(quoteArg('10.244.0.0/16'), '10.244.0.0/16');
});
