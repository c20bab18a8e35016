// A set of CIDRs answering "which member overlaps this one" in O(32): the lease manager's overlap
// index. Pure code.
import type { Cidr } from './ip';

/**
 * Accepted subnets, answering "does this CIDR overlap any of them" in O(32) (CIDRs overlap only by
 * nesting): exact[L] holds accepted networks of length L, within[L] the /L ancestors of longer ones.
 */
export class CidrSet {
  private readonly exact = new Map<number, Map<number, Cidr>>();
  private readonly within = new Map<number, Map<number, Cidr>>();

  add(c: Cidr): void {
    mapAt(this.exact, c.prefixLen).set(c.ip, c);
    for (let l = 0; l < c.prefixLen; l++) {
      const m = mapAt(this.within, l);
      const anc = maskIp(c.ip, l);
      if (!m.has(anc)) m.set(anc, c);
    }
  }

  /** An accepted subnet overlapping `c`, or undefined. */
  overlapping(c: Cidr): Cidr | undefined {
    for (const [l, m] of this.exact) {
      if (l > c.prefixLen) continue;
      const hit = m.get(maskIp(c.ip, l));
      if (hit) return hit;
    }
    return this.within.get(c.prefixLen)?.get(c.ip);
  }
}

function mapAt(outer: Map<number, Map<number, Cidr>>, l: number): Map<number, Cidr> {
  let m = outer.get(l);
  if (!m) outer.set(l, (m = new Map()));
  return m;
}

function maskIp(ip: number, l: number): number {
  return l === 0 ? 0 : (ip & (0xffffffff << (32 - l))) >>> 0;
}
