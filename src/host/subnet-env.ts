// flannel's /run/flannel/subnet.env: what docker, CNI and mk-docker-opts.sh read to configure the
// local bridge, and what flanneld reads back on restart to ask for the same subnet again.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Cidr, cidrHost, formatCidr, formatIPv4, parseCidr } from '../net/ip';

export const DEFAULT_SUBNET_ENV = '/run/flannel/subnet.env';

export interface SubnetEnv {
  /** FLANNEL_NETWORK: the whole overlay. */
  network: Cidr;
  /** Our lease (network address); FLANNEL_SUBNET holds its first host with the lease's length. */
  subnet: Cidr;
  /** FLANNEL_MTU. */
  mtu: number;
  /** FLANNEL_IPMASQ: whether flannel masquerades (so docker should not). */
  ipMasq: boolean;
}

/** The file body, in flanneld's key order. */
export function formatSubnetEnv(env: SubnetEnv): string {
  const gateway = `${formatIPv4(cidrHost(env.subnet, 1))}/${env.subnet.prefixLen}`;
  return (
    `FLANNEL_NETWORK=${formatCidr(env.network)}\n` +
    `FLANNEL_SUBNET=${gateway}\n` +
    `FLANNEL_MTU=${env.mtu}\n` +
    `FLANNEL_IPMASQ=${env.ipMasq}\n`
  );
}

/** KEY=value lines as a shell (or godotenv) reads them: comments, `export`, quotes. */
function parseEnvLines(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let value = m[2].trim();
    const q = value[0];
    if ((q === '"' || q === "'") && value.endsWith(q) && value.length >= 2) value = value.slice(1, -1);
    else value = value.replace(/\s+#.*$/, '');
    vars.set(m[1], value);
  }
  return vars;
}

export function parseSubnetEnv(text: string): SubnetEnv {
  const vars = parseEnvLines(text);
  const need = (key: string): string => {
    const v = vars.get(key);
    if (v === undefined || v === '') throw new Error(`${key}: missing`);
    return v;
  };
  const cidr = (key: string): Cidr => {
    const text = need(key);
    try {
      return parseCidr(text);
    } catch (e) {
      throw new Error(`${key}: ${(e as Error).message}`);
    }
  };
  const network = cidr('FLANNEL_NETWORK');
  // FLANNEL_SUBNET is the gateway address; masking gives back the leased subnet.
  const subnet = cidr('FLANNEL_SUBNET');
  const mtuText = need('FLANNEL_MTU');
  if (!/^\d+$/.test(mtuText)) throw new Error(`FLANNEL_MTU: not an integer: ${JSON.stringify(mtuText)}`);
  const masq = need('FLANNEL_IPMASQ');
  if (masq !== 'true' && masq !== 'false') throw new Error(`FLANNEL_IPMASQ: must be true or false, got ${JSON.stringify(masq)}`);
  return { network, subnet, mtu: Number(mtuText), ipMasq: masq === 'true' };
}

/** Writes atomically (temp file in the same directory, fsync, rename), keeping an existing file's mode. */
export async function writeSubnetEnv(file: string, env: SubnetEnv): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const mode = await stat(file).then((s) => s.mode & 0o777, () => 0o644);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(formatSubnetEnv(env));
    await fh.chmod(mode);
    await fh.sync();
    await fh.close();
    await rename(tmp, file);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** The previous run's file, or undefined when there is none; a malformed file throws naming the key. */
export async function readSubnetEnv(file: string): Promise<SubnetEnv | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return parseSubnetEnv(text);
  } catch (e) {
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

/**
 * dockerd options as flannel's mk-docker-opts.sh builds them: --bip and --mtu always, and
 * --ip-masq=false only when flannel masquerades itself (omitted otherwise, so docker keeps its
 * default). `ipMasqOpt: false` is the script's -m flag (never emit --ip-masq).
 */
export function dockerOpts(env: SubnetEnv, opts: { ipMasqOpt?: boolean } = {}): string {
  return Object.values(dockerOptVars(env, opts)).join(' ');
}

/** The DOCKER_OPT_* variables, in the script's (alphabetical) order. */
export function dockerOptVars(env: SubnetEnv, opts: { ipMasqOpt?: boolean } = {}): Record<string, string> {
  const vars: Record<string, string> = {
    DOCKER_OPT_BIP: `--bip=${formatIPv4(cidrHost(env.subnet, 1))}/${env.subnet.prefixLen}`,
  };
  if (env.ipMasq && opts.ipMasqOpt !== false) vars.DOCKER_OPT_IPMASQ = '--ip-masq=false';
  vars.DOCKER_OPT_MTU = `--mtu=${env.mtu}`;
  return vars;
}

/** The docker env file mk-docker-opts.sh writes by default (-i and -c). */
export function dockerOptsEnvFile(env: SubnetEnv, opts: { ipMasqOpt?: boolean; key?: string } = {}): string {
  const vars = dockerOptVars(env, opts);
  const lines = Object.entries(vars).map(([k, v]) => `${k}="${v}"`);
  // The script starts from "$DOCKER_OPTS " and appends "opt " for each, hence the spaces.
  lines.push(`${opts.key ?? 'DOCKER_OPTS'}=" ${Object.values(vars).map((v) => `${v} `).join('')}"`);
  return lines.join('\n') + '\n';
}
