// iproute2 as a library: each call runs `ip` (or `bridge`) in the current network namespace and
// throws an error naming the command and the kernel's complaint.
import { execFile, execFileSync, spawn } from 'node:child_process';
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

/**
 * `ip` in the network namespace at `netns`, a path (an nsfs bind mount such as /run/netns/NAME or
 * /run/vxnet/netns/NAME, or /proc/PID/ns/net), through `nsenter --net=PATH`: `ip -n` takes only
 * names under /run/netns. Without `netns`, in the current namespace.
 */
export function ipIn(netns: string | undefined, ...args: string[]): Promise<string> {
  return netns === undefined ? ip(...args) : run('nsenter', [`--net=${netns}`, 'ip', ...args]);
}

/** Sets a sysctl (`key` with `/` separators, so device names may hold dots) in `netns` or here. */
export function sysctlIn(netns: string | undefined, key: string, value: string): Promise<string> {
  const argv = ['sysctl', '-qw', `${key}=${value}`];
  return netns === undefined ? run(argv[0], argv.slice(1)) : run('nsenter', [`--net=${netns}`, ...argv]);
}

export function bridge(...args: string[]): Promise<string> {
  return run('bridge', args);
}

export type BatchTool = 'ip' | 'bridge';

export interface BatchResult {
  /** Why each failed line failed (iproute2's message), by its index in the lines given. */
  failed: Map<number, string>;
  /** What the commands printed (one JSON document per line with `-j`). */
  stdout: string;
}

/** Lines per `-batch` process: few processes, and a bounded replay when one aborts (see runBatch). */
export const BATCH_MAX_LINES = 256;

/**
 * Runs `lines` (commands without the program name) through `<tool> -batch - -force`, a few hundred
 * per process, and says which lines failed. With -force iproute2 goes on after a failed line and
 * reports it as its messages followed by "Command failed -:<line>" on stderr. Some failures end the
 * process instead (iproute2 6.1's `ip neigh` exits on any kernel error, bad arguments exit too): a
 * batch whose end marker was not reached is run again one line per process, which the idempotent
 * replace/del commands we batch allow.
 */
export async function runBatch(tool: BatchTool, lines: readonly string[], options: readonly string[] = []): Promise<BatchResult> {
  const failed = new Map<number, string>();
  let stdout = '';
  for (let start = 0; start < lines.length; start += BATCH_MAX_LINES) {
    const chunk = lines.slice(start, start + BATCH_MAX_LINES);
    let r = await runBatchProcess(tool, chunk, options);
    if (!r.completed) r = await runOneByOne(tool, chunk, options);
    for (const [i, msg] of r.failed) failed.set(start + i, msg);
    stdout += r.stdout;
  }
  return { failed, stdout };
}

/** Failures reported by `-batch -force` on stderr: each line's messages precede its "Command failed -:N". */
export function parseBatchErrors(stderr: string): Map<number, string> {
  const failed = new Map<number, string>();
  let messages: string[] = [];
  for (const raw of stderr.split('\n')) {
    const line = raw.trim();
    const m = /^Command failed (?:-|\S+):(\d+)$/.exec(line);
    if (m) {
      failed.set(Number(m[1]) - 1, messages.join('; ') || 'failed');
      messages = [];
    } else if (line) {
      messages.push(line);
    }
  }
  return failed;
}

interface BatchRun extends BatchResult {
  /** False when the process ended before running every line (which ones ran is unknown). */
  completed: boolean;
}

async function runOneByOne(tool: BatchTool, lines: string[], options: readonly string[]): Promise<BatchRun> {
  const failed = new Map<number, string>();
  let stdout = '';
  for (const [i, line] of lines.entries()) {
    const r = await runBatchProcess(tool, [line], options);
    if (r.failed.size) failed.set(i, r.failed.get(0)!);
    stdout += r.stdout;
  }
  return { failed, stdout, completed: true };
}

/**
 * A last line no iproute2 object name starts with: it fails without touching anything, so its
 * "Command failed" shows that every line before it ran.
 */
const END_MARKER = 'vxnet-end-of-batch';

function runBatchProcess(tool: BatchTool, lines: string[], options: readonly string[]): Promise<BatchRun> {
  for (const line of lines) {
    // The batch reader splits on newlines and honours quotes and comments; our lines never need them.
    if (!line.trim() || /[\n#"'\\]/.test(line)) throw new Error(`${tool} -batch: unsupported line ${JSON.stringify(line)}`);
  }
  return new Promise((resolve, reject) => {
    const child = spawn(tool, [...options, '-batch', '-', '-force'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // A process that aborts early stops reading; the end marker tells what happened.
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => reject(new IpCommandError(`${tool} -batch`, e.message)));
    child.on('close', (code, signal) => {
      const failed = parseBatchErrors(stderr);
      const completed = failed.delete(lines.length);
      if (completed || lines.length !== 1) resolve({ failed, stdout, completed });
      else resolve({ failed: new Map([[0, stderr.trim() || `exited with ${signal ?? `status ${code}`}`]]), stdout, completed: true });
    });
    child.stdin.end([...lines, END_MARKER].map((l) => `${l}\n`).join(''));
  });
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

/** Every interface with its IPv4 addresses, in ifindex order (as `ip -4 addr` lists them). */
export async function interfacesIPv4(): Promise<Array<{ ifname: string; addresses: string[] }>> {
  const out = await ip('-j', '-4', 'addr', 'show');
  const parsed = JSON.parse(out) as Array<{ ifname: string; addr_info?: Array<{ local: string }> }>;
  return parsed.map((l) => ({ ifname: l.ifname, addresses: (l.addr_info ?? []).map((a) => a.local) }));
}

/** Every interface name, in ifindex order (addressed or not). */
export async function interfaceNames(): Promise<string[]> {
  const out = await ip('-j', 'link', 'show');
  return (JSON.parse(out) as Array<{ ifname: string }>).map((l) => l.ifname);
}

/** The device and source address the kernel picks to reach `addr` (`ip route get`). */
export async function routeGet(addr: string): Promise<{ dev?: string; prefsrc?: string }> {
  const out = await ip('-j', '-4', 'route', 'get', addr);
  const parsed = JSON.parse(out) as Array<{ dev?: string; prefsrc?: string }>;
  return parsed[0] ?? {};
}
