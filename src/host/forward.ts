// flanneld --iptables-forward-rules: ACCEPT in filter FORWARD for traffic from and to the overlay
// network, so a FORWARD policy of DROP (dockerd sets one) does not cut containers off from each other.
// Our chain is jumped to from rule 1 of FORWARD, before Docker's isolation chains and any DROP.
import { Cidr, formatCidr } from '../net/ip';
import type { OwnedChain } from './iptables';

export const FORWARD_CHAIN = 'VXNET-FWD';
const COMMENT = 'vxnet forward';

/** flannel's forwardRules(): accept the whole network as source and as destination. */
export function forwardRules(network: Cidr): string[][] {
  const net = formatCidr(network);
  const c = ['-m', 'comment', '--comment', COMMENT];
  return [
    ['-s', net, ...c, '-j', 'ACCEPT'],
    ['-d', net, ...c, '-j', 'ACCEPT'],
  ];
}

export function forwardChain(network: Cidr, chain = FORWARD_CHAIN): OwnedChain {
  return { table: 'filter', chain, hook: 'FORWARD', position: 'first', comment: COMMENT, rules: forwardRules(network) };
}
