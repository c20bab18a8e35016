// One network namespace per Docker network on each host (what Docker's own overlay driver does; this
// kernel has no VRF). The namespace holds the network's bridge (the local lease's gateway address),
// the host ends of its containers' veths and the network's vxnet TUN; its own routing table sends the
// local lease to the bridge and the rest of the range into the TUN. Nothing routes between two such
// namespaces, so one network's packets cannot reach another's containers, and ranges may overlap.
//
// The namespaces are not in /run/netns (no `ip netns add`): each is an nsfs bind mount at
// <state dir>/netns/<network key>, made with util-linux `unshare --net=FILE` and entered with
// `nsenter --net=FILE`. They outlive the daemon (containers keep their links across a restart) and
// are removed (umount + rm) when the network is deleted.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Name of the bridge inside every network namespace (names are private to the namespace). */
export const NS_BRIDGE = 'vxbr0';
/** Name of the network's TUN inside its namespace. */
export const NS_TUN = 'vxtun0';

export class NetnsError extends Error {}

async function run(argv: string[], input?: string): Promise<string> {
  try {
    const p = execFileP(argv[0], argv.slice(1), { encoding: 'utf8' });
    if (input !== undefined) {
      p.child.stdin?.on('error', () => undefined);
      p.child.stdin?.end(input);
    }
    return (await p).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new NetnsError(`${argv.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

/** `ip` inside the namespace at `nsPath`. */
export function nsIp(nsPath: string, ...args: string[]): Promise<string> {
  return run(['nsenter', `--net=${nsPath}`, 'ip', ...args]);
}

/** `ip -batch -` inside the namespace; a failing line fails the whole call with iproute2's message. */
export function nsIpBatch(nsPath: string, lines: string[]): Promise<string> {
  return run(['nsenter', `--net=${nsPath}`, 'ip', '-batch', '-'], lines.join('\n') + '\n');
}

/** Whether `dir` is itself a mount point (per /proc/self/mountinfo). */
function isMountPoint(p: string): boolean {
  const want = path.resolve(p);
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((line) => line.split(' ')[4] === want);
  } catch {
    return false;
  }
}

/** The veth names of an endpoint: the container end (dockerd moves it) and the host end (on the bridge). */
export function vethNames(endpointId: string): { container: string; host: string } {
  const id = endpointId.replace(/[^0-9a-f]/gi, '').slice(0, 10);
  return { container: `vxc${id}`, host: `vxh${id}` };
}

/** What the driver does to the host, behind one interface (the unit tests use a fake). */
export interface NetworkHost {
  /** The namespace file of a network. */
  nsPath(key: string): string;
  nsExists(key: string): boolean;
  /** Namespace, loopback, bridge with `gatewayCidr` ("10.250.3.1/24"), forwarding on. Idempotent. */
  createNetwork(key: string, gatewayCidr: string, mtu: number): Promise<void>;
  /** Removes the namespace (and with it the bridge, the veth ends in it and the TUN). Idempotent. */
  removeNetwork(key: string): Promise<void>;
  /** A veth pair: `container` in the daemon's namespace for dockerd, `host` on the network's bridge. */
  createEndpoint(key: string, endpointId: string, mtu: number): Promise<{ container: string; host: string }>;
  /** Deletes the pair if it still exists (the container's end goes with it). */
  deleteEndpoint(key: string, endpointId: string): Promise<void>;
  /** Host-end veths on the bridge, by name (to find what a crash left behind). */
  listEndpoints(key: string): Promise<string[]>;
  /** Keys of the namespaces present on disk. */
  listNetworks(): string[];
}

export class NamespaceHost implements NetworkHost {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'netns');
  }

  nsPath(key: string): string {
    return path.join(this.dir, key);
  }

  nsExists(key: string): boolean {
    return existsSync(this.nsPath(key)) && isMountPoint(this.nsPath(key));
  }

  listNetworks(): string[] {
    if (!existsSync(this.dir)) return [];
    try {
      return readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[4])
        .filter((m): m is string => typeof m === 'string' && path.dirname(m) === path.resolve(this.dir))
        .map((m) => path.basename(m));
    } catch {
      return [];
    }
  }

  /**
   * A bind mount of nsfs needs a parent mount that does not propagate (as `ip netns add` makes
   * /run/netns): the directory is bound onto itself once and made private.
   */
  private async privateDir(): Promise<void> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    if (!isMountPoint(this.dir)) await run(['mount', '--bind', this.dir, this.dir]);
    await run(['mount', '--make-private', this.dir]);
  }

  async createNetwork(key: string, gatewayCidr: string, mtu: number): Promise<void> {
    const ns = this.nsPath(key);
    if (!this.nsExists(key)) {
      await this.privateDir();
      writeFileSync(ns, '');
      try {
        await run(['unshare', `--net=${ns}`, 'true']);
      } catch (err) {
        rmSync(ns, { force: true });
        throw err;
      }
    }
    try {
      const links = await nsIp(ns, '-o', 'link', 'show');
      const lines = ['link set lo up'];
      if (!new RegExp(`: ${NS_BRIDGE}[:@]`).test(links)) lines.push(`link add name ${NS_BRIDGE} mtu ${mtu} type bridge`);
      // A restart may come with another lease: the bridge holds only the current gateway.
      lines.push(`link set ${NS_BRIDGE} mtu ${mtu}`, `addr flush dev ${NS_BRIDGE} scope global`, `addr add ${gatewayCidr} dev ${NS_BRIDGE}`, `link set ${NS_BRIDGE} up`);
      await nsIpBatch(ns, lines);
      // The namespace routes between the bridge and the TUN; nothing else is in it.
      await run(['nsenter', `--net=${ns}`, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    } catch (err) {
      await this.removeNetwork(key).catch(() => undefined);
      throw err;
    }
  }

  async removeNetwork(key: string): Promise<void> {
    const ns = this.nsPath(key);
    if (isMountPoint(ns)) await run(['umount', ns]);
    rmSync(ns, { force: true });
  }

  async createEndpoint(key: string, endpointId: string, mtu: number): Promise<{ container: string; host: string }> {
    const ns = this.nsPath(key);
    const names = vethNames(endpointId);
    // A pair left by a crash between CreateEndpoint and DeleteEndpoint is replaced.
    await this.deleteEndpoint(key, endpointId);
    // The host end is born inside the network's namespace; the container end stays here for dockerd.
    await run(['ip', 'link', 'add', 'name', names.container, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', names.host, 'mtu', String(mtu), 'netns', ns]);
    try {
      await nsIpBatch(ns, [`link set ${names.host} master ${NS_BRIDGE}`, `link set ${names.host} up`]);
      await run(['ip', 'link', 'set', names.container, 'up']);
    } catch (err) {
      await this.deleteEndpoint(key, endpointId).catch(() => undefined);
      throw err;
    }
    return names;
  }

  async deleteEndpoint(key: string, endpointId: string): Promise<void> {
    const names = vethNames(endpointId);
    const ns = this.nsPath(key);
    if (this.nsExists(key)) await nsIp(ns, 'link', 'del', names.host).catch(() => undefined);
    await run(['ip', 'link', 'del', names.container]).catch(() => undefined);
  }

  async listEndpoints(key: string): Promise<string[]> {
    if (!this.nsExists(key)) return [];
    const out = await nsIp(this.nsPath(key), '-o', 'link', 'show', 'master', NS_BRIDGE);
    return [...out.matchAll(/^\d+: ([^:@]+)[@:]/gm)].map((m) => m[1]);
  }
}
