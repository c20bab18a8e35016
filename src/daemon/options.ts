// `vxnet daemon` settings: flanneld's whole command line (each of its flags implemented or refused by
// name with the reason), FLANNELD_<FLAG> environment variables as flanneld reads them, a --config JSON
// file with the same keys, and validation that names the offending flag or variable. Precedence:
// command line, then environment, then --config, then defaults. Nothing here touches the host.
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
  /** Regexes matched against interface addresses, then names, after --iface (flanneld --iface-regex). */
  ifaceRegex: string[];
  /** The interface `ip route get` picks towards this address, after --iface and --iface-regex. */
  ifaceCanReach?: string;
  publicIp?: string;
  subnetFile: string;
  /** Where the snapshot of leases lives (default: the subnet file's directory). */
  stateDir: string;
  ipMasq: boolean;
  /** MASQUERADE with --random-fully where iptables has it (off with --ip-masq-fully-random-disable). */
  ipMasqRandomFully: boolean;
  /** ACCEPT overlay traffic in FORWARD (flanneld --iptables-forward-rules, default on). */
  iptablesForwardRules: boolean;
  /** Period of the iptables rule check (flanneld --iptables-resync, seconds). */
  iptablesResyncSeconds: number;
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
  /** Flags accepted but without effect (as in flanneld without --kube-subnet-mgr), to log at startup. */
  notices: string[];
  /** Serve the Docker network + IPAM plugin (--docker-plugin[=SOCKET]); undefined: off. */
  docker?: DockerOptions;
}

export interface DockerOptions {
  /** The plugin's unix socket (default /run/docker/plugins/vxnet.sock). */
  socket: string;
  /** The Docker Engine API socket: --docker-engine, else DOCKER_HOST's, else /var/run/docker.sock. */
  engineSocket: string;
  /** Create here the Docker networks other hosts created (and remove the ones removed). */
  syncNetworks: boolean;
  /** Namespaces and the driver's state file (default <state-dir>/vxnet-docker). */
  stateDir: string;
  /** Ranges for networks created without --subnet. */
  defaultPool: string;
  defaultPoolSize: number;
}

export const DEFAULT_DOCKER_PLUGIN_SOCKET = '/run/docker/plugins/vxnet.sock';
export const DEFAULT_DOCKER_ENGINE_SOCKET = '/var/run/docker.sock';
export const DEFAULT_DOCKER_POOL = '10.128.0.0/9';
export const DEFAULT_DOCKER_POOL_SIZE = 16;

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevelName = (typeof LOG_LEVELS)[number];

export const DEFAULT_HEALTHZ_PORT = 8286;
/** flanneld's --iptables-resync default. */
export const DEFAULT_IPTABLES_RESYNC_SECONDS = 5;
/** flanneld reads FLANNELD_<FLAG> (upper case, dashes as underscores) for every flag not on the command line. */
export const ENV_PREFIX = 'FLANNELD_';

/** A bad flag, config-file setting or value; `field` is what the user typed (e.g. "--etcd-endpoints"). */
export class OptionError extends FieldError {}

/**
 * list: repeatable and comma-separated; repeat: repeatable, each value whole (a regex may hold commas);
 * optstring: a string whose value comes only with `=` (bare: the default), as a boolean takes it.
 */
type Kind = 'string' | 'list' | 'repeat' | 'bool' | 'int' | 'optstring';

interface FlagSpec {
  kind: Kind;
  help: string;
  /** Not shown by --help (test and tuning knobs). */
  hidden?: boolean;
  /** A flanneld flag vxnet does not implement: why (a boolean one set to false is accepted, having no effect). */
  refused?: string;
  /** Not read from FLANNELD_<FLAG> (flanneld reads --version before its environment). */
  noEnv?: boolean;
}

const KUBE_ONLY = 'only used with --kube-subnet-mgr; vxnet leases subnets from etcd only';
const FLANNEL_07 = "flanneld 0.7's client/server and multi-network mode, removed from flanneld and not in vxnet";

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
  'iface-regex': { kind: 'repeat', help: 'regex matched against interface addresses, then names, after --iface (repeatable)' },
  'iface-can-reach': { kind: 'string', help: 'use the interface `ip route get ADDRESS` picks, after --iface and --iface-regex' },
  'public-ip': { kind: 'string', help: 'address published to peers (default: the interface address)' },
  'subnet-file': { kind: 'string', help: `where to write subnet.env (default ${DEFAULT_SUBNET_ENV})` },
  'state-dir': { kind: 'string', help: 'directory of the lease snapshot used to restart while etcd is down (default: that of --subnet-file)' },
  'ip-masq': { kind: 'bool', help: 'masquerade traffic leaving the overlay network' },
  'ip-masq-fully-random-disable': { kind: 'bool', help: 'MASQUERADE without --random-fully' },
  'iptables-forward-rules': { kind: 'bool', help: 'ACCEPT overlay traffic in FORWARD, chain VXNET-FWD (default true; =false turns it off)' },
  'iptables-resync': { kind: 'int', help: `check and repair vxnet's iptables rules every N seconds (default ${DEFAULT_IPTABLES_RESYNC_SECONDS})` },
  config: { kind: 'string', help: 'JSON file with any of these settings by flag name (flags win)' },
  'net-config': { kind: 'string', help: 'net-conf.json written to <prefix>/config if that key is absent (never overwrites)' },
  'subnet-lease-renew-margin': { kind: 'int', help: 'renew the lease this many minutes before it expires (default 60)' },
  'subnet-lease-ttl': { kind: 'int', help: 'etcd lease TTL in seconds (default 86400)', hidden: true },
  'healthz-ip': { kind: 'string', help: 'listen address of /metrics and /healthz (default 127.0.0.1)' },
  'healthz-port': { kind: 'int', help: `port of /metrics and /healthz, 0 disables (default ${DEFAULT_HEALTHZ_PORT})` },
  'control-socket': { kind: 'string', help: 'abstract unix socket name for `vxnet status` (default derived from --subnet-file)' },
  'log-level': { kind: 'string', help: 'debug, info, warn or error (default info)' },
  v: { kind: 'int', help: 'klog verbosity as flanneld takes it: 4 or more means --log-level=debug unless that is given' },
  version: { kind: 'bool', help: 'print the version and exit', noEnv: true },
  'net-config-path': { kind: 'string', help: 'accepted and ignored, as flanneld ignores it without --kube-subnet-mgr', hidden: true },
  // vxnet's own: Docker networks across hosts (docs/docker.md).
  'docker-plugin': { kind: 'optstring', help: `serve the Docker network and IPAM driver "vxnet" on this unix socket (bare: ${DEFAULT_DOCKER_PLUGIN_SOCKET})` },
  'docker-engine': { kind: 'string', help: `Docker Engine API socket (default: DOCKER_HOST's unix socket, else ${DEFAULT_DOCKER_ENGINE_SOCKET})` },
  'docker-sync-networks': { kind: 'bool', help: 'create here the vxnet Docker networks other hosts created (and remove the ones removed)' },
  'docker-state-dir': { kind: 'string', help: 'network namespaces and state of the Docker driver (default <state-dir>/vxnet-docker)' },
  'docker-default-pool': { kind: 'string', help: `ranges for networks created without --subnet (default ${DEFAULT_DOCKER_POOL})` },
  'docker-default-pool-size': { kind: 'int', help: `prefix length of those ranges (default ${DEFAULT_DOCKER_POOL_SIZE})` },
  // flanneld flags vxnet refuses, each with its reason.
  'kube-subnet-mgr': { kind: 'bool', help: '', hidden: true, refused: 'the Kubernetes subnet manager is not implemented: vxnet leases subnets from etcd only (--etcd-endpoints)' },
  'kube-api-url': { kind: 'string', help: '', hidden: true, refused: KUBE_ONLY },
  'kube-annotation-prefix': { kind: 'string', help: '', hidden: true, refused: KUBE_ONLY },
  'kubeconfig-file': { kind: 'string', help: '', hidden: true, refused: KUBE_ONLY },
  'set-node-network-unavailable': { kind: 'bool', help: '', hidden: true, refused: KUBE_ONLY },
  'public-ipv6': { kind: 'string', help: '', hidden: true, refused: 'vxnet carries IPv4 only (no IPv6 overlay)' },
  'ip-blackhole-route': { kind: 'bool', help: '', hidden: true, refused: 'not implemented: vxnet adds no blackhole route for the local subnet' },
  vmodule: { kind: 'string', help: '', hidden: true, refused: 'per-file klog verbosity does not exist in vxnet (use -v or --log-level)' },
  log_backtrace_at: { kind: 'string', help: '', hidden: true, refused: 'klog backtraces do not exist in vxnet (use --log-level)' },
  listen: { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  remote: { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  'remote-keyfile': { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  'remote-certfile': { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  'remote-cafile': { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  networks: { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
  'subnet-dir': { kind: 'string', help: '', hidden: true, refused: FLANNEL_07 },
};

/** Go's strconv.ParseBool spellings (flanneld's), plus any letter case of true/false. */
export function parseBool(field: string, value: string): boolean {
  if (/^(1|t|true)$/i.test(value)) return true;
  if (/^(0|f|false)$/i.test(value)) return false;
  throw new OptionError(field, `expects true or false, got ${JSON.stringify(value)}`);
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Stores one occurrence of a flag's value (lists and repeats accumulate). */
function setValue(settings: RawSettings, name: string, spec: FlagSpec, value: string, field: string): void {
  if (spec.kind === 'bool') settings.set(name, parseBool(field, value));
  else if (spec.kind === 'optstring') settings.set(name, value);
  else if (spec.kind === 'list') settings.set(name, [...((settings.get(name) as string[] | undefined) ?? []), ...splitList(value)]);
  else if (spec.kind === 'repeat') settings.set(name, [...((settings.get(name) as string[] | undefined) ?? []), value]);
  else settings.set(name, value);
}

/** The environment variable flanneld reads for a flag: FLANNELD_ETCD_ENDPOINTS for --etcd-endpoints. */
export function envName(flag: string): string {
  return ENV_PREFIX + flag.toUpperCase().replace(/-/g, '_');
}

/**
 * Settings from FLANNELD_<FLAG> variables, as flanneld's flagutil.SetFlagsFromEnv reads them: every
 * flag, an empty value counts as unset, one variable is one value. A bad value names the variable.
 */
export function readEnvSettings(env: NodeJS.ProcessEnv, onCommandLine: ReadonlySet<string> = new Set(), specs: Record<string, FlagSpec> = DAEMON_FLAGS): RawSettings {
  const out: RawSettings = new Map();
  for (const [name, spec] of Object.entries(specs)) {
    // As flanneld: a flag given on the command line is not read from the environment at all.
    if (spec.noEnv || name === 'config' || onCommandLine.has(name)) continue;
    const key = envName(name);
    const value = env[key];
    if (value === undefined || value === '') continue;
    setValue(out, name, spec, value, key);
  }
  return out;
}

export type RawSettings = Map<string, string | string[] | boolean>;

/**
 * Parses `--flag value`, `--flag=value`, `-flag value`, `-flag=value` and bare booleans `--flag`
 * (Go's flag package, as flanneld accepts them) against `specs`. Lists may be repeated or
 * comma-separated; a later scalar wins. Returns settings by flag name and leftover positionals.
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
      // As Go's flag package: a bare boolean is true; a value only with `=`.
      setValue(settings, name, spec, value ?? 'true', `--${name}`);
      continue;
    }
    if (spec.kind === 'optstring') {
      setValue(settings, name, spec, value ?? '', `--${name}`);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new OptionError(`--${name}`, 'needs a value');
      value = argv[++i];
    }
    setValue(settings, name, spec, value, `--${name}`);
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
    } else if (spec.kind === 'list' || spec.kind === 'repeat') {
      if (typeof v === 'string') out.set(key, spec.kind === 'list' ? splitList(v) : [v]);
      else if (Array.isArray(v) && v.every((s) => typeof s === 'string')) out.set(key, v as string[]);
      else throw new OptionError(field, `must be a string or an array of strings, got ${JSON.stringify(v)}`);
    } else if (spec.kind === 'optstring') {
      if (v === true) out.set(key, '');
      else if (typeof v === 'string') out.set(key, v);
      else throw new OptionError(field, `must be true or a socket path, got ${JSON.stringify(v)}`);
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
export function resolveDaemonOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonOptions {
  const { settings: flags, positionals } = parseFlags(argv, DAEMON_FLAGS);
  if (positionals.length > 0) throw new OptionError(positionals[0], 'unexpected argument (flags start with --)');
  const fromEnv = readEnvSettings(env, new Set(flags.keys()));
  const configFile = (flags.get('config') as string | undefined) ?? (fromEnv.get('config') as string | undefined);
  const merged: RawSettings = configFile ? readConfigFile(configFile) : new Map();
  // Where a value came from, for messages: a value from the environment is named by its variable.
  const source = new Map<string, string>();
  for (const [k, v] of fromEnv) {
    merged.set(k, v);
    source.set(k, envName(k));
  }
  for (const [k, v] of flags) {
    merged.set(k, v);
    source.delete(k);
  }
  const field = (k: string) => source.get(k) ?? `--${k}`;
  const str = (k: string) => merged.get(k) as string | undefined;
  const list = (k: string) => merged.get(k) as string[] | undefined;

  for (const [name, spec] of Object.entries(DAEMON_FLAGS)) {
    if (!spec.refused || !merged.has(name)) continue;
    // `--kube-subnet-mgr=false` asks for what vxnet does anyway.
    if (spec.kind === 'bool' && merged.get(name) === false) continue;
    throw new OptionError(field(name), `not supported by vxnet: ${spec.refused}`);
  }
  const notices: string[] = [];
  if (merged.has('net-config-path')) {
    notices.push(`${field('net-config-path')} ignored: flanneld reads it only with --kube-subnet-mgr; vxnet reads the network config from <prefix>/config in etcd (see --net-config)`);
  }

  const endpoints = (list('etcd-endpoints') ?? ['http://127.0.0.1:2379']).map((e) => checkUrl(field('etcd-endpoints'), e));
  if (endpoints.length === 0) throw new OptionError(field('etcd-endpoints'), 'needs at least one URL');

  const prefix = str('etcd-prefix') ?? DEFAULT_PREFIX;
  if (!prefix.startsWith('/') || prefix.length < 2) throw new OptionError(field('etcd-prefix'), `must be an absolute key path such as ${DEFAULT_PREFIX}, got ${JSON.stringify(prefix)}`);

  const cert = checkReadable(field('etcd-certfile'), str('etcd-certfile'));
  const key = checkReadable(field('etcd-keyfile'), str('etcd-keyfile'));
  const ca = checkReadable(field('etcd-cafile'), str('etcd-cafile'));
  if (Boolean(cert) !== Boolean(key)) throw new OptionError(cert ? '--etcd-keyfile' : '--etcd-certfile', 'a client certificate needs both --etcd-certfile and --etcd-keyfile');
  const username = str('etcd-username');
  const password = str('etcd-password');
  if (password !== undefined && !username) throw new OptionError(field('etcd-password'), 'given without --etcd-username');

  const iface = list('iface') ?? [];
  for (const i of iface) {
    if (!isIPv4(i) && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(i)) throw new OptionError(field('iface'), `${JSON.stringify(i)} is neither an interface name nor an IPv4 address`);
  }
  const publicIp = str('public-ip');
  if (publicIp !== undefined && !isIPv4(publicIp)) throw new OptionError(field('public-ip'), `${JSON.stringify(publicIp)} is not an IPv4 address`);

  const subnetFile = str('subnet-file') ?? DEFAULT_SUBNET_ENV;
  if (subnetFile === '' || subnetFile.endsWith('/')) throw new OptionError(field('subnet-file'), `must be a file path, got ${JSON.stringify(subnetFile)}`);

  const stateDir = str('state-dir') ?? path.dirname(subnetFile);
  if (stateDir === '') throw new OptionError(field('state-dir'), 'must be a directory path');

  const netConfigFile = checkReadable(field('net-config'), str('net-config'));

  const ttl = merged.has('subnet-lease-ttl') ? intValue(field('subnet-lease-ttl'), str('subnet-lease-ttl') as string, 10, 10 * 365 * 86400) : DEFAULT_TTL_SECONDS;
  const renewMargin = merged.has('subnet-lease-renew-margin') ? intValue(field('subnet-lease-renew-margin'), str('subnet-lease-renew-margin') as string, 1, 1439) : 60;
  if (merged.has('subnet-lease-renew-margin') && renewMargin * 60 >= ttl) {
    throw new OptionError(field('subnet-lease-renew-margin'), `${renewMargin} min is not shorter than the lease TTL (${ttl} s)`);
  }

  const healthzIp = str('healthz-ip') ?? '127.0.0.1';
  if (!isIPv4(healthzIp)) throw new OptionError(field('healthz-ip'), `${JSON.stringify(healthzIp)} is not an IPv4 address`);
  const healthzPort = merged.has('healthz-port') ? intValue(field('healthz-port'), str('healthz-port') as string, 0, 65535) : DEFAULT_HEALTHZ_PORT;

  const controlSocket = str('control-socket') ?? defaultControlSocket(subnetFile);
  if (controlSocket === '' || Buffer.byteLength(controlSocket) > 100) throw new OptionError(field('control-socket'), 'must be 1..100 bytes');

  const iptablesResyncSeconds = merged.has('iptables-resync')
    ? intValue(field('iptables-resync'), str('iptables-resync') as string, 1, 86400)
    : DEFAULT_IPTABLES_RESYNC_SECONDS;

  const ifaceRegex = list('iface-regex') ?? [];
  for (const re of ifaceRegex) {
    try {
      new RegExp(re);
    } catch (err) {
      throw new OptionError(field('iface-regex'), `${JSON.stringify(re)} is not a valid regular expression: ${(err as Error).message}`);
    }
  }
  const ifaceCanReach = str('iface-can-reach');
  if (ifaceCanReach !== undefined && !isIPv4(ifaceCanReach)) throw new OptionError(field('iface-can-reach'), `${JSON.stringify(ifaceCanReach)} is not an IPv4 address`);

  const verbosity = merged.has('v') ? intValue(field('v'), str('v') as string, 0, 100) : 0;
  const logLevel = (str('log-level') ?? (verbosity >= 4 ? 'debug' : 'info')) as LogLevelName;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new OptionError(field('log-level'), `must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(logLevel)}`);

  const docker = resolveDockerOptions(merged, field, stateDir, env);

  return {
    docker,
    etcdEndpoints: endpoints,
    etcdPrefix: prefix.replace(/\/+$/, ''),
    etcdCertFile: cert,
    etcdKeyFile: key,
    etcdCaFile: ca,
    etcdUsername: username,
    etcdPassword: password,
    iface,
    ifaceRegex,
    ifaceCanReach,
    publicIp,
    subnetFile,
    stateDir,
    ipMasq: merged.get('ip-masq') === true,
    ipMasqRandomFully: merged.get('ip-masq-fully-random-disable') !== true,
    iptablesForwardRules: merged.get('iptables-forward-rules') !== false,
    iptablesResyncSeconds,
    netConfigFile,
    renewMarginMinutes: renewMargin,
    leaseTtlSeconds: ttl,
    healthzIp,
    healthzPort,
    controlSocket,
    logLevel,
    notices,
  };
}

/** The --docker-* flags; any of them without --docker-plugin is an error naming it. */
function resolveDockerOptions(merged: RawSettings, field: (k: string) => string, stateDir: string, env: NodeJS.ProcessEnv): DockerOptions | undefined {
  const others = ['docker-engine', 'docker-sync-networks', 'docker-state-dir', 'docker-default-pool', 'docker-default-pool-size'];
  if (!merged.has('docker-plugin')) {
    const stray = others.find((k) => merged.has(k) && merged.get(k) !== false);
    if (stray) throw new OptionError(field(stray), 'needs --docker-plugin');
    return undefined;
  }
  const sock = merged.get('docker-plugin') as string;
  const socket = sock === '' ? DEFAULT_DOCKER_PLUGIN_SOCKET : sock;
  if (!socket.startsWith('/')) throw new OptionError(field('docker-plugin'), `must be an absolute socket path, got ${JSON.stringify(sock)}`);
  if (Buffer.byteLength(socket) > 107) throw new OptionError(field('docker-plugin'), `${socket}: a unix socket path holds at most 107 bytes`);
  let engineSocket = merged.get('docker-engine') as string | undefined;
  if (engineSocket === undefined) {
    const dh = env.DOCKER_HOST;
    if (dh !== undefined && dh !== '') {
      const m = /^unix:\/\/(\/.+)$/.exec(dh);
      if (!m) throw new OptionError('DOCKER_HOST', `only unix:///path sockets are supported (or pass --docker-engine), got ${JSON.stringify(dh)}`);
      engineSocket = m[1];
    } else {
      engineSocket = DEFAULT_DOCKER_ENGINE_SOCKET;
    }
  } else if (!engineSocket.startsWith('/')) {
    throw new OptionError(field('docker-engine'), `must be an absolute socket path, got ${JSON.stringify(engineSocket)}`);
  }
  const dir = (merged.get('docker-state-dir') as string | undefined) ?? path.join(stateDir, 'vxnet-docker');
  if (dir === '') throw new OptionError(field('docker-state-dir'), 'must be a directory path');
  const pool = (merged.get('docker-default-pool') as string | undefined) ?? DEFAULT_DOCKER_POOL;
  const pm = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(pool);
  if (!pm || !isIPv4(pm[1]) || Number(pm[2]) > 30) throw new OptionError(field('docker-default-pool'), `must be an IPv4 CIDR such as ${DEFAULT_DOCKER_POOL}, got ${JSON.stringify(pool)}`);
  const size = merged.has('docker-default-pool-size') ? intValue(field('docker-default-pool-size'), merged.get('docker-default-pool-size') as string, 8, 28) : DEFAULT_DOCKER_POOL_SIZE;
  if (size < Number(pm[2])) throw new OptionError(field('docker-default-pool-size'), `/${size} is larger than --docker-default-pool ${pool}`);
  return { socket, engineSocket, syncNetworks: merged.get('docker-sync-networks') === true, stateDir: dir, defaultPool: pool, defaultPoolSize: size };
}

/** --help text for the daemon flags. */
export function daemonFlagHelp(): string {
  return Object.entries(DAEMON_FLAGS)
    .filter(([, s]) => !s.hidden)
    .map(([name, s]) => `  --${name}${s.kind === 'bool' ? '' : s.kind === 'optstring' ? '[=VALUE]' : ' VALUE'}`.padEnd(36) + s.help)
    .join('\n') +
    `\n\nEach flag can also come from ${ENV_PREFIX}<FLAG> (e.g. ${envName('etcd-endpoints')}); the command line wins.\n` +
    `flanneld flags vxnet refuses (exit 2, with the reason): ${Object.entries(DAEMON_FLAGS)
      .filter(([, s]) => s.refused)
      .map(([n]) => `--${n}`)
      .join(' ')}`;
}
