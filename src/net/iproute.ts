// iproute2 as a library: each call runs `ip` (or `bridge`) in the current network namespace and
// throws an error naming the command and the kernel's complaint.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export class IpCommandError extends Error {
  constructor(
    readonly command: string,
    readonly stderr: string,
  ) {
    super(`${command}: ${stderr.trim() || 'failed'}`);
  }
}

async function run(bin: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(bin, args, { encoding: 'utf8' });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new IpCommandError(`${bin} ${args.join(' ')}`, err.stderr ?? err.message);
  }
}

export function ip(...args: string[]): Promise<string> {
  return run('ip', args);
}

export function bridge(...args: string[]): Promise<string> {
  return run('bridge', args);
}

/** Synchronous variant for exit paths, where the event loop will not run again. */
export function ipSync(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'ignore' });
}

export async function linkExists(name: string): Promise<boolean> {
  try {
    await ip('link', 'show', 'dev', name);
    return true;
  } catch {
    return false;
  }
}

export interface LinkInfo {
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
}

export async function linkInfo(name: string): Promise<LinkInfo> {
  const out = await ip('-j', 'link', 'show', 'dev', name);
  const parsed = JSON.parse(out) as LinkInfo[];
  if (!parsed.length) throw new IpCommandError(`ip link show dev ${name}`, 'no such device');
  return parsed[0];
}

/** The first IPv4 address on `dev`, or undefined. */
export async function linkIPv4(dev: string): Promise<string | undefined> {
  const out = await ip('-j', '-4', 'addr', 'show', 'dev', dev);
  const parsed = JSON.parse(out) as Array<{ addr_info?: Array<{ local: string }> }>;
  return parsed[0]?.addr_info?.[0]?.local;
}

/** Interface that carries the default route (flanneld's choice when --iface is not given). */
export async function defaultRouteInterface(): Promise<string | undefined> {
  const out = await ip('-j', '-4', 'route', 'show', 'default');
  const parsed = JSON.parse(out) as Array<{ dev?: string }>;
  return parsed[0]?.dev;
}

/** Interface whose address is `addr`. */
export async function interfaceWithAddress(addr: string): Promise<string | undefined> {
  const out = await ip('-j', '-4', 'addr', 'show');
  const parsed = JSON.parse(out) as Array<{ ifname: string; addr_info?: Array<{ local: string }> }>;
  return parsed.find((l) => l.addr_info?.some((a) => a.local === addr))?.ifname;
}
