// IPv4 addresses and CIDR prefixes as plain numbers: cheap to compare, mask and pack for the datapath.

export interface Cidr {
  /** Network address, host-order unsigned 32-bit, already masked. */
  readonly ip: number;
  readonly prefixLen: number;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIPv4(text: string): number {
  const m = IPV4_RE.exec(text);
  if (!m) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const o = Number(m[i]);
    if (o > 255 || (m[i].length > 1 && m[i][0] === '0')) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
    v = v * 256 + o;
  }
  return v >>> 0;
}

export function isIPv4(text: string): boolean {
  try {
    parseIPv4(text);
    return true;
  } catch {
    return false;
  }
}

export function formatIPv4(v: number): string {
  return `${(v >>> 24) & 255}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

export function maskOf(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** Parses "a.b.c.d/len"; with `strict`, host bits must be zero. */
export function parseCidr(text: string, strict = false): Cidr {
  const slash = text.indexOf('/');
  if (slash < 0) throw new Error(`not a CIDR prefix (a.b.c.d/len): ${JSON.stringify(text)}`);
  const ip = parseIPv4(text.slice(0, slash));
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) {
    throw new Error(`prefix length out of range 0..32: ${JSON.stringify(text)}`);
  }
  const prefixLen = Number(lenText);
  const net = (ip & maskOf(prefixLen)) >>> 0;
  if (strict && net !== ip) throw new Error(`host bits set in prefix: ${JSON.stringify(text)}`);
  return { ip: net, prefixLen };
}

export function formatCidr(c: Cidr): string {
  return `${formatIPv4(c.ip)}/${c.prefixLen}`;
}

export function cidrContains(outer: Cidr, ip: number): boolean {
  return ((ip & maskOf(outer.prefixLen)) >>> 0) === outer.ip;
}

/** True when `inner` lies entirely within `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return inner.prefixLen >= outer.prefixLen && cidrContains(outer, inner.ip);
}

export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrCovers(a, b) || cidrCovers(b, a);
}

export function cidrEquals(a: Cidr, b: Cidr): boolean {
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

/** Number of addresses in the prefix (2^(32-len)). */
export function cidrSize(c: Cidr): number {
  return 2 ** (32 - c.prefixLen);
}

/** The n-th address inside the prefix (n = 1 is the usual gateway). */
export function cidrHost(c: Cidr, n: number): number {
  return (c.ip + n) >>> 0;
}

export const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function parseMac(text: string): Buffer {
  if (!MAC_RE.test(text)) throw new Error(`not a MAC address: ${JSON.stringify(text)}`);
  return Buffer.from(text.split(':').map((h) => parseInt(h, 16)));
}

export function formatMac(b: Uint8Array): string {
  return Array.from(b.subarray(0, 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A random locally administered unicast MAC, as the kernel gives a new vxlan device. */
export function randomMac(random: (n: number) => Buffer): string {
  const b = random(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return formatMac(b);
}
