// Hand-built packets for byte-vector tests and microbenchmarks: IPv4 with correct checksums, VXLAN frames.
import { parseIPv4, parseMac } from '../net/ip';

export function ipChecksum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export interface Ipv4Spec {
  src: string;
  dst: string;
  proto?: number;
  ttl?: number;
  id?: number;
  payload?: Buffer;
}

export function ipv4(spec: Ipv4Spec): Buffer {
  const payload = spec.payload ?? Buffer.from('0800f7ff00000000', 'hex'); // ICMP echo request
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + payload.length, 2);
  h.writeUInt16BE(spec.id ?? 0x1234, 4);
  h[8] = spec.ttl ?? 64;
  h[9] = spec.proto ?? 1;
  h.writeUInt32BE(parseIPv4(spec.src), 12);
  h.writeUInt32BE(parseIPv4(spec.dst), 16);
  h.writeUInt16BE(ipChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

export function vxlanHeader(vni: number, flags = 0x08): Buffer {
  const b = Buffer.alloc(8);
  b[0] = flags;
  b[4] = (vni >>> 16) & 255;
  b[5] = (vni >>> 8) & 255;
  b[6] = vni & 255;
  return b;
}

export function ethernet(dst: string, src: string, etherType = 0x0800): Buffer {
  const b = Buffer.alloc(14);
  parseMac(dst).copy(b, 0);
  parseMac(src).copy(b, 6);
  b.writeUInt16BE(etherType, 12);
  return b;
}

export function vxlanFrame(vni: number, dstMac: string, srcMac: string, inner: Buffer, etherType = 0x0800): Buffer {
  return Buffer.concat([vxlanHeader(vni), ethernet(dstMac, srcMac, etherType), inner]);
}
