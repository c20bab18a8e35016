// CidrSet (the lease manager's overlap index) against a brute-force scan over random CIDRs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CidrSet } from '../../src/net/cidrset';
import { type Cidr, cidrOverlaps, maskOf } from '../../src/net/ip';

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

test('overlapping() agrees with a brute-force scan (nested, equal, disjoint, /0 and /32)', () => {
  const r = rng(7);
  for (let round = 0; round < 40; round++) {
    const set = new CidrSet();
    const accepted: Cidr[] = [];
    for (let i = 0; i < 300; i++) {
      const prefixLen = [0, 8, 16, 20, 24, 24, 24, 26, 30, 32][Math.floor(r() * 10)];
      // A small address pool so nesting and equality are common.
      const ip = ((0x0af40000 | Math.floor(r() * 0x4000)) & maskOf(prefixLen)) >>> 0;
      const c = { ip, prefixLen };
      const brute = accepted.find((a) => cidrOverlaps(a, c));
      const fast = set.overlapping(c);
      assert.equal(fast !== undefined, brute !== undefined, `round ${round} #${i} ${ip.toString(16)}/${prefixLen}`);
      if (fast) assert.ok(cidrOverlaps(fast, c), 'the reported clash really overlaps');
      if (!brute && prefixLen !== 0) {
        set.add(c);
        accepted.push(c);
      }
    }
  }
});
