// flannel's net-conf.json (the etcd key <prefix>/config): parsed and checked with flannel's rules,
// every error naming the offending field. The Backend section's own fields belong to the backend
// (src/backend/registry.ts checkBackendConfig).
import { Cidr, cidrContains, cidrCovers, formatIPv4, isIPv4, maskOf, parseCidr, parseIPv4 } from '../net/ip';
import { FieldError } from '../errors';
import type { BackendConfig, NetworkConfig } from './types';

/** A net-conf.json problem; `field` is the JSON path ("Network", "Backend.VNI", or "config" for the whole document). */
export class ConfigError extends FieldError {}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function parseNetwork(v: unknown): Cidr {
  if (v === undefined || v === null || v === '') throw new ConfigError('Network', 'required (an IPv4 CIDR such as 10.244.0.0/16)');
  if (typeof v !== 'string') throw new ConfigError('Network', 'must be a string such as "10.244.0.0/16"');
  if (v.includes(':')) {
    throw new ConfigError('Network', `must be an IPv4 CIDR, got ${JSON.stringify(v)}`);
  }
  try {
    return parseCidr(v, true);
  } catch (err) {
    throw new ConfigError('Network', (err as Error).message);
  }
}

/** flannel's CheckNetworkConfig SubnetLen rule: explicit values must leave four subnets; defaults adapt to small networks. */
function parseSubnetLen(v: unknown, network: Cidr): number {
  // flannel treats 0 (Go's zero value) the same as absent.
  if (v === undefined || v === null || v === 0) {
    if (network.prefixLen > 28) {
      throw new ConfigError('Network', `too small (/${network.prefixLen}): the minimum useful network is /28`);
    }
    return network.prefixLen <= 22 ? 24 : network.prefixLen + 2;
  }
  if (!isInt(v) || v < 0) throw new ConfigError('SubnetLen', `must be a whole number, got ${JSON.stringify(v)}`);
  if (v > 30) throw new ConfigError('SubnetLen', `must be at most 30 (each host needs a gateway and a bridge), got ${v}`);
  if (v < network.prefixLen + 2) {
    throw new ConfigError(
      'SubnetLen',
      `must be at least /${network.prefixLen + 2} so the /${network.prefixLen} network holds four subnets, got ${v}`,
    );
  }
  return v;
}

function parseBound(field: 'SubnetMin' | 'SubnetMax', v: unknown, network: Cidr, subnetLen: number, dflt: number): number {
  if (v === undefined || v === null || v === '') return dflt;
  if (typeof v !== 'string' || !isIPv4(v)) throw new ConfigError(field, `must be an IPv4 address, got ${JSON.stringify(v)}`);
  const ip = parseIPv4(v);
  // flannel reads 0.0.0.0 as "not set".
  if (ip === 0) return dflt;
  if (!cidrContains(network, ip)) throw new ConfigError(field, `${v} is outside the Network`);
  if (((ip & maskOf(subnetLen)) >>> 0) !== ip) throw new ConfigError(field, `${v} is not on a /${subnetLen} (SubnetLen) boundary`);
  return ip;
}

function parseBackend(v: unknown): BackendConfig {
  // Without a Backend section flanneld runs udp.
  if (v === undefined || v === null) return { type: 'udp', raw: {} };
  if (!isObject(v)) throw new ConfigError('Backend', 'must be an object such as {"Type": "vxlan"}');
  const raw: Record<string, unknown> = { ...v };
  const type = raw.Type;
  // As flannel: the config names the backend; every other Backend field is the backend's to read
  // (src/backend/registry.ts: checkBackendConfig, and each backend's descriptor).
  if (type === undefined || type === '') throw new ConfigError('Backend.Type', 'required, such as "vxlan" (udp, vxlan, host-gw)');
  if (typeof type !== 'string') throw new ConfigError('Backend.Type', `must be a string such as "vxlan", got ${JSON.stringify(type)}`);
  return { type, raw };
}

/** Parses and validates net-conf.json text; throws ConfigError naming the field at fault. */
export function parseNetworkConfig(json: string): NetworkConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (err) {
    throw new ConfigError('config', `not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw new ConfigError('config', 'must be a JSON object such as {"Network": "10.244.0.0/16"}');
  const network = parseNetwork(doc.Network);
  const subnetLen = parseSubnetLen(doc.SubnetLen, network);
  const size = 2 ** (32 - subnetLen);
  // Like flannel, skip the first subnet (its .0 would be the network address) and end at the last one.
  const subnetMin = parseBound('SubnetMin', doc.SubnetMin, network, subnetLen, network.ip + size);
  const subnetMax = parseBound('SubnetMax', doc.SubnetMax, network, subnetLen, network.ip + 2 ** (32 - network.prefixLen) - size);
  if (subnetMin > subnetMax) {
    throw new ConfigError('SubnetMax', `${formatIPv4(subnetMax)} is below SubnetMin ${formatIPv4(subnetMin)}`);
  }
  const backend = parseBackend(doc.Backend);
  return { network, subnetLen, subnetMin, subnetMax, backend };
}

/** Number of leasable subnets in SubnetMin..SubnetMax. */
export function subnetCount(cfg: NetworkConfig): number {
  return (cfg.subnetMax - cfg.subnetMin) / 2 ** (32 - cfg.subnetLen) + 1;
}

/** The i-th leasable subnet (0-based) in SubnetMin..SubnetMax. */
export function subnetAt(cfg: NetworkConfig, i: number): Cidr {
  return { ip: (cfg.subnetMin + i * 2 ** (32 - cfg.subnetLen)) >>> 0, prefixLen: cfg.subnetLen };
}

/** flannel's isSubnetConfigCompat: right length, inside the Network, within SubnetMin..SubnetMax. */
export function subnetFitsConfig(cfg: NetworkConfig, sn: Cidr): boolean {
  return sn.prefixLen === cfg.subnetLen && cidrCovers(cfg.network, sn) && sn.ip >= cfg.subnetMin && sn.ip <= cfg.subnetMax;
}
