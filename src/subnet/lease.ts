// flannel's etcd lease format: the key <prefix>/subnets/10.244.3.0-24 and the LeaseAttrs JSON value,
// byte-for-byte as flanneld's encoding/json writes it.
import { isIPv6 } from 'node:net';
import { Cidr, formatIPv4, isIPv4, MAC_RE, maskOf, parseIPv4 } from '../net/ip';
import { MAX_VNI } from '../net/wire';
import type { LeaseAttrs } from './types';

export const DEFAULT_PREFIX = '/coreos.com/network';

/** "10.244.3.0-24": flannel's MakeSubnetKey for an IPv4-only lease. */
export function subnetToKey(sn: Cidr): string {
  return `${formatIPv4(sn.ip)}-${sn.prefixLen}`;
}

// flannel's dual-stack keys append "&fc00::-64"; only the IPv4 half matters here.
const KEY_RE = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&[0-9a-f:]+-\d{1,3})?$/i;

/** Parses the last path segment of a lease key; undefined when it is not a canonical IPv4 subnet key. */
export function keyToSubnet(key: string): Cidr | undefined {
  const m = KEY_RE.exec(key.slice(key.lastIndexOf('/') + 1));
  if (!m || !isIPv4(m[1])) return undefined;
  const prefixLen = Number(m[2]);
  if (prefixLen > 32 || (m[2].length > 1 && m[2][0] === '0')) return undefined;
  const ip = parseIPv4(m[1]);
  // Host bits set means the key was not written by flannel's MakeSubnetKey.
  if (((ip & maskOf(prefixLen)) >>> 0) !== ip) return undefined;
  return { ip, prefixLen };
}

/** Full etcd key of a lease: <prefix>/subnets/<a.b.c.d-len>. */
export function leaseKey(prefix: string, sn: Cidr): string {
  return `${subnetsPrefix(prefix)}${subnetToKey(sn)}`;
}

/** The key prefix every lease lives under, with its trailing slash. */
export function subnetsPrefix(prefix: string): string {
  return `${prefix.replace(/\/+$/, '')}/subnets/`;
}

/** The network config key, <prefix>/config. */
export function configKey(prefix: string): string {
  return `${prefix.replace(/\/+$/, '')}/config`;
}

/**
 * Encodes LeaseAttrs exactly as flanneld's json.Marshal does: fields in struct order, PublicIPv6 has no
 * omitempty (so it is written as null when absent), BackendType and BackendData are omitempty.
 */
export function encodeLeaseValue(attrs: LeaseAttrs): string {
  let out = `{"PublicIP":${JSON.stringify(attrs.publicIp)},"PublicIPv6":${attrs.publicIpv6 ? JSON.stringify(attrs.publicIpv6) : 'null'}`;
  if (attrs.backendType) out += `,"BackendType":${JSON.stringify(attrs.backendType)}`;
  if (attrs.backendData !== undefined && attrs.backendData !== null) out += `,"BackendData":${JSON.stringify(attrs.backendData)}`;
  return `${out}}`;
}

export type DecodeResult = { ok: true; attrs: LeaseAttrs } | { ok: false; reason: string };

function fail(reason: string): DecodeResult {
  return { ok: false, reason };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Checks vxlan BackendData the way flannel's vxlan backend would decode it ({"VNI":1,"VtepMAC":"…"}). */
function checkVxlanData(data: unknown): string | undefined {
  if (!isObject(data)) return 'vxlan lease without BackendData object';
  if (typeof data.VtepMAC !== 'string' || !MAC_RE.test(data.VtepMAC)) return `vxlan BackendData.VtepMAC is not a MAC: ${JSON.stringify(data.VtepMAC)}`;
  if (data.VNI !== undefined && (!Number.isInteger(data.VNI) || (data.VNI as number) < 0 || (data.VNI as number) > MAX_VNI)) {
    return `vxlan BackendData.VNI is not a VNI: ${JSON.stringify(data.VNI)}`;
  }
  return undefined;
}

/** Decodes a lease value; a failure carries a short reason for logs and rejection counters. */
export function decodeLeaseValue(text: string): DecodeResult {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return fail('value is not JSON');
  }
  if (!isObject(doc)) return fail('value is not a JSON object');
  const { PublicIP, PublicIPv6, BackendType, BackendData } = doc;
  if (typeof PublicIP !== 'string' || !isIPv4(PublicIP)) return fail(`PublicIP is not an IPv4 address: ${JSON.stringify(PublicIP)}`);
  if (PublicIP === '0.0.0.0') return fail('PublicIP is 0.0.0.0');
  if (PublicIPv6 !== undefined && PublicIPv6 !== null && (typeof PublicIPv6 !== 'string' || !isIPv6(PublicIPv6))) {
    return fail(`PublicIPv6 is not an IPv6 address: ${JSON.stringify(PublicIPv6)}`);
  }
  if (BackendType !== undefined && typeof BackendType !== 'string') return fail(`BackendType is not a string: ${JSON.stringify(BackendType)}`);
  const backendData = BackendData === null ? undefined : BackendData;
  if (BackendType === 'vxlan') {
    const bad = checkVxlanData(backendData);
    if (bad) return fail(bad);
  }
  const attrs: LeaseAttrs = { publicIp: PublicIP, backendType: BackendType ?? '' };
  if (typeof PublicIPv6 === 'string') attrs.publicIpv6 = PublicIPv6;
  if (backendData !== undefined) attrs.backendData = backendData;
  return { ok: true, attrs };
}
