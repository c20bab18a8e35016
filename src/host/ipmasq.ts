// flanneld --ip-masq: masquerade overlay traffic leaving the overlay, never traffic inside it.
// flannel's rule set, in a chain of our own hooked from nat POSTROUTING so teardown is exact.
// Acts on the current network namespace only.
import { Cidr, formatCidr } from '../net/ip';
import { installChain, iptables, type OwnedChain, removeChain } from './iptables';

export const MASQ_CHAIN = 'VXNET-POSTRTG';
const COMMENT = 'vxnet masq';
/** kube-proxy marks packets it will masquerade itself; flannel skips them to avoid double NAT. */
const KUBE_PROXY_MARK = '0x4000/0x4000';

export interface IpMasqOptions {
  chain?: string;
  /** Add --random-fully to MASQUERADE when iptables supports it (flannel's default). */
  randomFully?: boolean;
}

/** flannel's masqRules(): rule specs for our chain, in order. */
export function masqRules(network: Cidr, subnet: Cidr, randomFully: boolean): string[][] {
  const net = formatCidr(network);
  const pod = formatCidr(subnet);
  const c = ['-m', 'comment', '--comment', COMMENT];
  const masq = ['-j', 'MASQUERADE', ...(randomFully ? ['--random-fully'] : [])];
  return [
    ['-m', 'mark', '--mark', KUBE_PROXY_MARK, ...c, '-j', 'RETURN'],
    // Inside the overlay: never NAT.
    ['-s', pod, '-d', net, ...c, '-j', 'RETURN'],
    ['-s', net, '-d', pod, ...c, '-j', 'RETURN'],
    // External traffic arriving for our containers keeps its source.
    ['!', '-s', net, '-d', pod, ...c, '-j', 'RETURN'],
    // Overlay to the outside world (multicast excepted).
    ['-s', net, '!', '-d', '224.0.0.0/4', ...c, ...masq],
    // Host (or other non-overlay source) to remote containers: reply must come back to an overlay address.
    ['!', '-s', net, '-d', net, ...c, ...masq],
  ];
}

/** iptables >= 1.6.2 knows --random-fully (flannel's HasRandomFully check). */
export async function supportsRandomFully(): Promise<boolean> {
  const out = await iptables('--version').catch(() => '');
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(out);
  if (!m) return false;
  const [maj, min, patch] = m.slice(1).map(Number);
  return maj > 1 || (maj === 1 && (min > 6 || (min === 6 && patch >= 2)));
}

/** The nat chain for `network` / our `subnet`, appended to POSTROUTING as flannel does. */
export function masqChain(network: Cidr, subnet: Cidr, randomFully: boolean, chain = MASQ_CHAIN): OwnedChain {
  return { table: 'nat', chain, hook: 'POSTROUTING', position: 'last', comment: COMMENT, rules: masqRules(network, subnet, randomFully) };
}

/** Whether MASQUERADE gets --random-fully: asked for (flannel's default) and supported by this host's iptables. */
export async function useRandomFully(opts: Pick<IpMasqOptions, 'randomFully'> = {}): Promise<boolean> {
  return (opts.randomFully ?? true) && (await supportsRandomFully());
}

/**
 * Installs (or re-installs) the rules for `network` / our `subnet`. The chain is rewritten in one
 * iptables-restore transaction, so a changed subnet never leaves the old rules behind. (The daemon
 * keeps them with a ChainKeeper, which also re-checks them; this is the one-shot form.)
 */
export async function setupIpMasq(network: Cidr, subnet: Cidr, opts: IpMasqOptions = {}): Promise<void> {
  await installChain(masqChain(network, subnet, await useRandomFully(opts), opts.chain));
}

/** Removes the jump and the chain; a no-op when they are absent. */
export async function teardownIpMasq(opts: Pick<IpMasqOptions, 'chain'> = {}): Promise<void> {
  await removeChain({ table: 'nat', chain: opts.chain ?? MASQ_CHAIN, hook: 'POSTROUTING' });
}
