// `vxnet daemon` settings: flanneld's flag names, a --config JSON file with the same keys (flags
// win), and validation that names the offending flag. Nothing here touches the host.
import * as fs from 'node:fs';
import path from 'node:path';
import { FieldError } from '../errors';
import { isIPv4 } from '../net/ip';
import { DEFAULT_PREFIX } from '../subnet/lease';
import { DEFAULT_TTL_SECONDS } from '../subnet/manager';
import { DEFAULT_SUBNET_ENV } from '../host/subnet-env';

export interface DaemonOptions {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdCertFile?: string;
  etcdKeyFile?: string;
  etcdCaFile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  /** Underlay interface names or addresses, first usable wins (flanneld --iface, repeatable). */
  iface: string[];
  publicIp?: string;
  subnetFile: string;
  /** Where the snapshot of leases lives (default: the subnet file's directory). */
  stateDir: string;
  ipMasq: boolean;
  /** net-conf.json to write to etcd when <prefix>/config is absent. */
  netConfigFile?: string;
  /** Renew this long before the etcd lease expires (flanneld: minutes, default 60). */
  renewMarginMinutes: number;
  /** TTL of our etcd lease in seconds (flannel: 24 h). */
  leaseTtlSeconds: number;
  healthzIp: string;
  /** 0 disables the metrics/healthz listener. */
  healthzPort: number;
  /** Abstract unix socket name of the control socket (default derived from the subnet file). */
  controlSocket: string;
  logLevel: LogLevelName;
}

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

export const DEFAULT_HEALTHZ_PORT = 8286;

/** A bad flag, config-file setting or value; `field` is what the user typed (e.g. "--etcd-endpoints"). */
export class OptionError extends FieldError {}

type Kind = 'string' | 'list' | 'bool' | 'int';

interface FlagSpec {
  kind: Kind;
  help: string;
  /** Not shown by --help (test and tuning knobs). */
  hidden?: boolean;
}

/** Every flag `vxnet daemon` takes, keyed by its flanneld name. */
export const DAEMON_FLAGS: Record<string, FlagSpec> = {
  'etcd-endpoints': { kind: 'list', help: 'comma-separated etcd client URLs (default http://127.0.0.1:2379)' },
  'etcd-prefix': { kind: 'string', help: `etcd key prefix (default ${DEFAULT_PREFIX})` },
  'etcd-certfile': { kind: 'string', help: 'client certificate file for etcd over TLS' },
  'etcd-keyfile': { kind: 'string', help: 'client key file for etcd over TLS' },
  'etcd-cafile': { kind: 'string', help: 'CA file for etcd over TLS' },
  'etcd-username': { kind: 'string', help: 'etcd user name' },
  'etcd-password': { kind: 'string', help: 'etcd password' },
  iface: { kind: 'list', help: 'underlay interface name or address (repeatable; default: the default-route interface)' },
  'public-ip': { kind: 'string', help: 'address published to peers (default: the interface address)' },
  'subnet-file': { kind: 'string', help: `where to write subnet.env (default ${DEFAULT_SUBNET_ENV})` },
  'state-dir': { kind: 'string', help: 'directory of the lease snapshot used to restart while etcd is down (default: that of --subnet-file)' },
  'ip-masq': { kind: 'bool', help: 'masquerade traffic leaving the overlay network' },
  config: { kind: 'string', help: 'JSON file with any of these settings by flag name (flags win)' },
  'net-config': { kind: 'string', help: 'net-conf.json written to <prefix>/config if that key is absent (never overwrites)' },
  'subnet-lease-renew-margin': { kind: 'int', help: 'renew the lease this many minutes before it expires (default 60)' },
  'subnet-lease-ttl': { kind: 'int', help: 'etcd lease TTL in seconds (default 86400)', hidden: true },
  'healthz-ip': { kind: 'string', help: 'listen address of /metrics and /healthz (default 127.0.0.1)' },
  'healthz-port': { kind: 'int', help: `port of /metrics and /healthz, 0 disables (default ${DEFAULT_HEALTHZ_PORT})` },
  'control-socket': { kind: 'string', help: 'abstract unix socket name for `vxnet status` (default derived from --subnet-file)' },
  'log-level': { kind: 'string', help: 'debug, info, warn or error (default info)' },
};

export type RawSettings = Map<string, string | string[] | boolean>;

/**
 * Parses `--flag value`, `--flag=value`, `-flag` (Go style, as flanneld accepts) against `specs`.
 * Lists may be repeated or comma-separated. Returns settings by flag name and leftover positionals.
 */
export function parseFlags(argv: string[], specs: Record<string, FlagSpec>): { settings: RawSettings; positionals: string[] } {
  const settings: RawSettings = new Map();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const spec = specs[name];
    if (!spec) throw new OptionError(`--${name}`, 'unknown flag (see --help)');
    let value: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (spec.kind === 'bool') {
      if (value === undefined) settings.set(name, true);
      else if (/^(true|1)$/i.test(value)) settings.set(name, true);
      else if (/^(false|0)$/i.test(value)) settings.set(name, false);
      else throw new OptionError(`--${name}`, `expects true or false, got ${JSON.stringify(value)}`);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new OptionError(`--${name}`, 'needs a value');
      value = argv[++i];
    }
    if (spec.kind === 'list') {
      const prev = (settings.get(name) as string[] | undefined) ?? [];
      settings.set(name, [...prev, ...value.split(',').map((s) => s.trim()).filter((s) => s !== '')]);
    } else {
      settings.set(name, value);
    }
  }
  return { settings, positionals };
}

/** Reads a --config file: a JSON object whose keys are flag names. */
export function readConfigFile(file: string): RawSettings {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new OptionError('--config', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new OptionError('--config', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new OptionError('--config', `${file} must hold a JSON object of settings by flag name`);
  }
  const out: RawSettings = new Map();
  for (const [key, v] of Object.entries(doc as Record<string, unknown>)) {
    const spec = DAEMON_FLAGS[key];
    const field = `${file}: ${key}`;
    if (!spec || key === 'config') throw new OptionError(field, 'unknown setting (keys are flag names such as "etcd-endpoints")');
    if (spec.kind === 'bool') {
      if (typeof v !== 'boolean') throw new OptionError(field, `must be true or false, got ${JSON.stringify(v)}`);
      out.set(key, v);
    } else if (spec.kind === 'list') {
      if (typeof v === 'string') out.set(key, v.split(',').map((s) => s.trim()).filter((s) => s !== ''));
      else if (Array.isArray(v) && v.every((s) => typeof s === 'string')) out.set(key, v as string[]);
      else throw new OptionError(field, `must be a string or an array of strings, got ${JSON.stringify(v)}`);
    } else if (spec.kind === 'int') {
      if (typeof v !== 'number' && typeof v !== 'string') throw new OptionError(field, `must be a number, got ${JSON.stringify(v)}`);
      out.set(key, String(v));
    } else {
      if (typeof v !== 'string') throw new OptionError(field, `must be a string, got ${JSON.stringify(v)}`);
      out.set(key, v);
    }
  }
  return out;
}

function intValue(field: string, v: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(v.trim())) throw new OptionError(field, `must be a whole number, got ${JSON.stringify(v)}`);
  const n = Number(v);
  if (n < min || n > max) throw new OptionError(field, `must be in ${min}..${max}, got ${n}`);
  return n;
}

function checkUrl(field: string, ep: string): string {
  let u: URL;
  try {
    u = new URL(ep);
  } catch {
    throw new OptionError(field, `${JSON.stringify(ep)} is not a URL (expected http://host:port)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new OptionError(field, `${JSON.stringify(ep)}: scheme must be http or https`);
  }
  if (!u.hostname) throw new OptionError(field, `${JSON.stringify(ep)} has no host`);
  if ((u.pathname && u.pathname !== '/') || u.search || u.hash) {
    throw new OptionError(field, `${JSON.stringify(ep)}: expected just scheme://host:port`);
  }
  return `${u.protocol}//${u.host}`;
}

function checkReadable(field: string, file: string | undefined): string | undefined {
  if (file === undefined) return undefined;
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch (err) {
    throw new OptionError(field, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return file;
}

/** Abstract socket name of a daemon's control socket: one per subnet file, so daemons never collide. */
export function defaultControlSocket(subnetFile: string): string {
  return `vxnet:${path.resolve(subnetFile)}`.slice(0, 100);
}

/** Validates merged settings (config file under flags) into DaemonOptions. */
export function resolveDaemonOptions(argv: string[]): DaemonOptions {
  const { settings: flags, positionals } = parseFlags(argv, DAEMON_FLAGS);
  if (positionals.length > 0) throw new OptionError(positionals[0], 'unexpected argument (flags start with --)');
  const configFile = flags.get('config') as string | undefined;
  const merged: RawSettings = configFile ? readConfigFile(configFile) : new Map();
  for (const [k, v] of flags) merged.set(k, v);
  const str = (k: string) => merged.get(k) as string | undefined;
  const list = (k: string) => merged.get(k) as string[] | undefined;

  const endpoints = (list('etcd-endpoints') ?? ['http://127.0.0.1:2379']).map((e) => checkUrl('--etcd-endpoints', e));
  if (endpoints.length === 0) throw new OptionError('--etcd-endpoints', 'needs at least one URL');

  const prefix = str('etcd-prefix') ?? DEFAULT_PREFIX;
  if (!prefix.startsWith('/') || prefix.length < 2) throw new OptionError('--etcd-prefix', `must be an absolute key path such as ${DEFAULT_PREFIX}, got ${JSON.stringify(prefix)}`);

  const cert = checkReadable('--etcd-certfile', str('etcd-certfile'));
  const key = checkReadable('--etcd-keyfile', str('etcd-keyfile'));
  const ca = checkReadable('--etcd-cafile', str('etcd-cafile'));
  if (Boolean(cert) !== Boolean(key)) throw new OptionError(cert ? '--etcd-keyfile' : '--etcd-certfile', 'a client certificate needs both --etcd-certfile and --etcd-keyfile');
  const username = str('etcd-username');
  const password = str('etcd-password');
  if (password !== undefined && !username) throw new OptionError('--etcd-password', 'given without --etcd-username');

  const iface = list('iface') ?? [];
  for (const i of iface) {
    if (!isIPv4(i) && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(i)) throw new OptionError('--iface', `${JSON.stringify(i)} is neither an interface name nor an IPv4 address`);
  }
  const publicIp = str('public-ip');
  if (publicIp !== undefined && !isIPv4(publicIp)) throw new OptionError('--public-ip', `${JSON.stringify(publicIp)} is not an IPv4 address`);

  const subnetFile = str('subnet-file') ?? DEFAULT_SUBNET_ENV;
  if (subnetFile === '' || subnetFile.endsWith('/')) throw new OptionError('--subnet-file', `must be a file path, got ${JSON.stringify(subnetFile)}`);

  const stateDir = str('state-dir') ?? path.dirname(subnetFile);
  if (stateDir === '') throw new OptionError('--state-dir', 'must be a directory path');

  const netConfigFile = checkReadable('--net-config', str('net-config'));

  const ttl = merged.has('subnet-lease-ttl') ? intValue('--subnet-lease-ttl', str('subnet-lease-ttl') as string, 10, 10 * 365 * 86400) : DEFAULT_TTL_SECONDS;
  const renewMargin = merged.has('subnet-lease-renew-margin') ? intValue('--subnet-lease-renew-margin', str('subnet-lease-renew-margin') as string, 1, 1440) : 60;
  if (merged.has('subnet-lease-renew-margin') && renewMargin * 60 >= ttl) {
    throw new OptionError('--subnet-lease-renew-margin', `${renewMargin} min is not shorter than the lease TTL (${ttl} s)`);
  }

  const healthzIp = str('healthz-ip') ?? '127.0.0.1';
  if (!isIPv4(healthzIp)) throw new OptionError('--healthz-ip', `${JSON.stringify(healthzIp)} is not an IPv4 address`);
  const healthzPort = merged.has('healthz-port') ? intValue('--healthz-port', str('healthz-port') as string, 0, 65535) : DEFAULT_HEALTHZ_PORT;

  const controlSocket = str('control-socket') ?? defaultControlSocket(subnetFile);
  if (controlSocket === '' || Buffer.byteLength(controlSocket) > 100) throw new OptionError('--control-socket', 'must be 1..100 bytes');

  const logLevel = (str('log-level') ?? 'info') as LogLevelName;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new OptionError('--log-level', `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`);

  return {
    etcdEndpoints: endpoints,
    etcdPrefix: prefix.replace(/\/+$/, ''),
    etcdCertFile: cert,
    etcdKeyFile: key,
    etcdCaFile: ca,
    etcdUsername: username,
    etcdPassword: password,
    iface,
    publicIp,
    subnetFile,
    stateDir,
    ipMasq: merged.get('ip-masq') === true,
    netConfigFile,
    renewMarginMinutes: renewMargin,
    leaseTtlSeconds: ttl,
    healthzIp,
    healthzPort,
    controlSocket,
    logLevel,
  };
}

/** --help text for the daemon flags. */
export function daemonFlagHelp(): string {
  return Object.entries(DAEMON_FLAGS)
    .filter(([, s]) => !s.hidden)
    .map(([name, s]) => `  --${name}${s.kind === 'bool' ? '' : ' VALUE'}`.padEnd(36) + s.help)
    .join('\n');
}
