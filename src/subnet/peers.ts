// The peer set from the lease records: which leases become routes, which are rejected (malformed,
// outside the network, overlapping) and which are refused (valid, but would loop). A pure function
// of the records, the network config and our own lease; the lease manager calls it on every change.
import { CidrSet } from '../net/cidrset';
import { Cidr, cidrContains, cidrCovers, cidrOverlaps, formatCidr, parseIPv4 } from '../net/ip';
import type { decodeLeaseValue } from './lease';
import type { LeaseRecord } from './registry';
import type { Lease, LeaseAttrs, NetworkConfig } from './types';

export const REJECT_REASONS = ['malformed', 'overlap', 'outside'] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** Valid leases no backend may install: a PublicIP inside the overlay routes back into our own device. */
export const REFUSE_REASONS = ['public_ip_in_network'] as const;
export type RefuseReason = (typeof REFUSE_REASONS)[number];

/** A lease that is well-formed but refused, as status shows it. */
export interface RefusedLease {
  key: string;
  subnet: string;
  publicIp: string;
  reason: RefuseReason;
  detail: string;
}

export interface PeerComputation {
  /** Accepted peers, in address order. */
  peers: Lease[];
  rejected: Map<string, { reason: RejectReason; detail: string; rec: LeaseRecord }>;
  /** `mark` is reason@modRevision: a refusal is counted once per version of the lease. */
  refused: Map<string, RefusedLease & { mark: string }>;
}

export type LeaseDecoder = (rec: LeaseRecord) => ReturnType<typeof decodeLeaseValue>;

/**
 * Valid leases other than ours. Each record is judged in this order: not a subnet key or an
 * undecodable value → malformed; subnet outside the network → outside; PublicIP inside the network →
 * refused; overlapping our lease → overlap. Of the remaining candidates, overlapping ones lose to
 * the older lease (lower createRevision, then key order), so every host that sees the same records
 * computes the same peers.
 */
export function computePeers(
  records: Iterable<LeaseRecord>,
  config: NetworkConfig,
  own: { key: string; subnet: Cidr } | undefined,
  decode: LeaseDecoder,
): PeerComputation {
  const rejected: PeerComputation['rejected'] = new Map();
  const refused: PeerComputation['refused'] = new Map();
  const reject = (rec: LeaseRecord, reason: RejectReason, detail: string) => rejected.set(rec.key, { reason, detail, rec });
  const candidates: { rec: LeaseRecord; subnet: Cidr; attrs: LeaseAttrs }[] = [];
  for (const rec of records) {
    if (own && rec.key === own.key) continue;
    if (!rec.subnet) {
      reject(rec, 'malformed', 'key is not a subnet key (a.b.c.d-len)');
      continue;
    }
    const d = decode(rec);
    if (!d.ok) {
      reject(rec, 'malformed', d.reason);
      continue;
    }
    if (!cidrCovers(config.network, rec.subnet)) {
      reject(rec, 'outside', `${formatCidr(rec.subnet)} is outside ${formatCidr(config.network)}`);
      continue;
    }
    // Checked here once for every backend: encapsulating towards such an address would loop.
    if (cidrContains(config.network, parseIPv4(d.attrs.publicIp))) {
      const reason: RefuseReason = 'public_ip_in_network';
      refused.set(rec.key, {
        key: rec.key,
        subnet: formatCidr(rec.subnet),
        publicIp: d.attrs.publicIp,
        reason,
        detail: `PublicIP ${d.attrs.publicIp} lies inside the overlay network ${formatCidr(config.network)}: traffic to it would route back into our own device`,
        mark: `${reason}@${rec.modRevision}`,
      });
      continue;
    }
    if (own && cidrOverlaps(rec.subnet, own.subnet)) {
      reject(rec, 'overlap', `overlaps our lease ${formatCidr(own.subnet)}`);
      continue;
    }
    candidates.push({ rec, subnet: rec.subnet, attrs: d.attrs });
  }
  candidates.sort((a, b) => a.rec.createRevision - b.rec.createRevision || (a.rec.key < b.rec.key ? -1 : 1));
  const peers: Lease[] = [];
  const accepted = new CidrSet();
  for (const c of candidates) {
    const clash = accepted.overlapping(c.subnet);
    if (clash) {
      reject(c.rec, 'overlap', `overlaps the older lease ${formatCidr(clash)}`);
      continue;
    }
    accepted.add(c.subnet);
    peers.push({ subnet: c.subnet, attrs: c.attrs, revision: c.rec.modRevision });
  }
  peers.sort((a, b) => a.subnet.ip - b.subnet.ip);
  return { peers, rejected, refused };
}
