// Peer routes as the addon takes them: records laid out as it says (`addon.routeRecord`), per-peer
// counter slots that follow the peer and not the slot, and one network's route state.
import { addon, type NativeDatapath } from './native';
import { Cidr, formatCidr, maskOf, parseIPv4, parseMac } from '../net/ip';

export interface PeerRoute {
  subnet: Cidr;
  publicIp: string;
  port?: number;
  /** The peer's VTEP MAC (vxlan). */
  vtepMac?: string;
}

export interface PeerStats {
  subnet: string;
  publicIp: string;
  txPackets: number;
  txBytes: number;
  rxPackets: number;
  rxBytes: number;
}

/** What route state needs of a native object: publish records, read per-peer counters. */
export type RouteSink = Pick<NativeDatapath, 'setRoutes' | 'peerCounters'>;

/** Stable per-peer counter slots, shared by every network of a datapath (its slots are one space); a reused slot starts from a baseline so counts never leak. */
export class PeerSlots {
  private readonly byKey = new Map<string, number>();
  private readonly baseline = new Map<number, Float64Array>();
  private free: number[] = [];
  private next = 0;

  constructor(private readonly native: RouteSink) {}

  /** Slots for `keys` of network `scope`; that network's other keys give theirs up. */
  assign(scope: number, keys: string[]): number[] {
    const prefix = `${scope}|`;
    const keep = new Set(keys.map((k) => prefix + k));
    for (const [k, slot] of this.byKey) {
      if (k.startsWith(prefix) && !keep.has(k)) {
        this.byKey.delete(k);
        this.free.push(slot);
      }
    }
    return keys.map((key) => {
      const k = prefix + key;
      let slot = this.byKey.get(k);
      if (slot === undefined) {
        slot = this.next < addon.maxPeerSlots ? this.next++ : (this.free.shift() ?? addon.noSlot);
        if (slot !== addon.noSlot) {
          this.baseline.set(slot, this.native.peerCounters(Uint32Array.of(slot)));
          this.byKey.set(k, slot);
        }
      }
      return slot;
    });
  }

  /** Gives up every slot of network `scope`. */
  release(scope: number): void {
    this.assign(scope, []);
  }

  read(slot: number, into: Float64Array, at: number): number[] {
    const base = this.baseline.get(slot);
    return [0, 1, 2, 3].map((k) => into[at + k] - (base ? base[k] : 0));
  }
}

/** The native route records of `routes`, laid out as the addon says (`routeRecord`), with their counter slots. */
export function routeRecords(routes: PeerRoute[], slots: number[], port: number, needMac: boolean, what: string): Buffer {
  const L = addon.routeRecord;
  const buf = Buffer.alloc(routes.length * L.size);
  routes.forEach((r, i) => {
    const at = i * L.size;
    if ((r.subnet.ip & maskOf(r.subnet.prefixLen)) >>> 0 !== r.subnet.ip) {
      throw new Error(`${what}: host bits set in ${formatCidr(r.subnet)}`);
    }
    buf.writeUIntLE(r.subnet.ip, at + L.net.offset, L.net.size);
    buf.writeUIntLE(parseIPv4(r.publicIp), at + L.peerIp.offset, L.peerIp.size);
    buf.writeUIntLE(slots[i], at + L.slot.offset, L.slot.size);
    buf.writeUIntLE(r.port ?? port, at + L.port.offset, L.port.size);
    buf.writeUIntLE(r.subnet.prefixLen, at + L.prefixLen.offset, L.prefixLen.size);
    if (r.vtepMac) parseMac(r.vtepMac).copy(buf, at + L.mac.offset, 0, L.mac.size);
    else if (needMac) throw new Error(`${what}: peer ${formatCidr(r.subnet)} has no VTEP MAC`);
  });
  return buf;
}

/** Routes of one network with their slots: the part of setRoutes/setPeers shared by both. */
export class RouteState {
  routes: PeerRoute[] = [];
  slots: number[] = [];

  constructor(
    private readonly native: RouteSink,
    private readonly peerSlots: PeerSlots,
    private readonly scope: number,
    private readonly port: number,
    private readonly needMac: boolean,
    private readonly what: string,
  ) {}

  set(routes: PeerRoute[]): void {
    const keys = routes.map((r) => formatCidr(r.subnet));
    if (new Set(keys).size !== keys.length) throw new Error(`${this.what}: duplicate subnet in route list`);
    // Validate before any slot changes hands.
    routeRecords(routes, routes.map(() => addon.noSlot), this.port, this.needMac, this.what);
    const slots = this.peerSlots.assign(this.scope, keys);
    const buf = routeRecords(routes, slots, this.port, this.needMac, this.what);
    this.native.setRoutes(buf, this.scope);
    this.routes = routes.slice();
    this.slots = slots;
  }

  peerStats(): PeerStats[] {
    const pc = this.native.peerCounters(Uint32Array.from(this.slots));
    return this.routes.map((r, i) => {
      const [txPackets, txBytes, rxPackets, rxBytes] = this.peerSlots.read(this.slots[i], pc, i * 4);
      return { subnet: formatCidr(r.subnet), publicIp: r.publicIp, txPackets, txBytes, rxPackets, rxBytes };
    });
  }
}
