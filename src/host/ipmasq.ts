// flanneld --ip-masq: masquerade overlay traffic leaving the overlay, never traffic inside it.
// flannel's rule set, in a chain of our own hooked from nat POSTROUTING so teardown is exact.
// Acts on the current network namespace only.
import { execFile } from 'node:child_process';
import { Cidr, formatCidr } from '../net/ip';

export const MASQ_CHAIN = 'VXNET-POSTRTG';
const COMMENT = 'vxnet masq';
/** kube-proxy marks packets it will masquerade itself; flannel skips them to avoid double NAT. */
const KUBE_PROXY_MARK = '0x4000/0x4000';

export interface IpMasqOptions {
  chain?: string;
  /** Add --random-fully to MASQUERADE when iptables supports it (flannel's default). */
  randomFully?: boolean;
}

async function run(bin: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(' ')}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

const iptables = (...args: string[]) => run('iptables', ['-w', ...args]);

/** The jump from POSTROUTING into our chain (flannel appends it). */
function jumpRule(chain: string): string[] {
  return ['-m', 'comment', '--comment', COMMENT, '-j', chain];
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
  const out = await run('iptables', ['--version']);
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(out);
  if (!m) return false;
  const [maj, min, patch] = m.slice(1).map(Number);
  return maj > 1 || (maj === 1 && (min > 6 || (min === 6 && patch >= 2)));
}

/**
 * Installs (or re-installs) the rules for `network` / our `subnet`. The chain is rewritten in one
 * iptables-restore transaction, so a changed subnet never leaves the old rules behind.
 */
export async function setupIpMasq(network: Cidr, subnet: Cidr, opts: IpMasqOptions = {}): Promise<void> {
  const chain = opts.chain ?? MASQ_CHAIN;
  const randomFully = (opts.randomFully ?? true) && (await supportsRandomFully());
  const body = masqRules(network, subnet, randomFully).map((r) => `-A ${chain} ${r.map(quote).join(' ')}`);
  // --noflush keeps every other rule; declaring our chain empties it if it exists.
  await run('iptables-restore', ['-w', '--noflush'], ['*nat', `:${chain} - [0:0]`, ...body, 'COMMIT', ''].join('\n'));
  const jump = jumpRule(chain);
  const present = await iptables('-t', 'nat', '-C', 'POSTROUTING', ...jump).then(() => true, () => false);
  if (!present) await iptables('-t', 'nat', '-A', 'POSTROUTING', ...jump);
}

/** Removes the jump and the chain; a no-op when they are absent. */
export async function teardownIpMasq(opts: Pick<IpMasqOptions, 'chain'> = {}): Promise<void> {
  const chain = opts.chain ?? MASQ_CHAIN;
  const jump = jumpRule(chain);
  while (await iptables('-t', 'nat', '-C', 'POSTROUTING', ...jump).then(() => true, () => false)) {
    await iptables('-t', 'nat', '-D', 'POSTROUTING', ...jump);
  }
  const exists = await iptables('-t', 'nat', '-S', chain).then(() => true, () => false);
  if (!exists) return;
  await iptables('-t', 'nat', '-F', chain);
  await iptables('-t', 'nat', '-X', chain);
}

/** iptables-restore splits on whitespace and honours double quotes. */
function quote(arg: string): string {
  return /[\s"]/.test(arg) ? `"${arg.replace(/"/g, '\\"')}"` : arg;
}
