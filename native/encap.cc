#include "encap.h"

#include <cstring>

#include "packet.h"

namespace vxnet {

const char* drop_name(Drop d) {
  static const char* const kNames[] = {
#define VXNET_X(e, name, doc) name,
      VXNET_DROPS(VXNET_X)
#undef VXNET_X
  };
  return name_at(kNames, static_cast<size_t>(d));
}

bool ipv4_header_ok(const uint8_t* p, size_t avail, size_t* total) {
  if (avail < kIPv4MinHeader) return false;
  if ((p[0] >> 4) != 4) return false;
  const size_t ihl = static_cast<size_t>(p[0] & 0x0f) * 4;
  if (ihl < kIPv4MinHeader || ihl > avail) return false;
  const size_t tot = load_be16(p + 2);
  if (tot < ihl || tot > avail) return false;
  if (csum_fold(csum_partial(p, ihl)) != 0) return false;
  *total = tot;
  return true;
}

Drop tx_route(const RouteTable& rt, const uint8_t* pkt, size_t len, TxResult* out, size_t* tot) {
  if (len < kIPv4MinHeader) return Drop::TxShort;
  if ((pkt[0] >> 4) != 4) return Drop::TxNotIPv4;
  // The local stack built this header; check lengths (we rely on them) but not the checksum.
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  const size_t t = load_be16(pkt + 2);
  if (ihl < kIPv4MinHeader || t < ihl || t > len) return Drop::TxBadIp;
  const uint32_t dst = load_be32(pkt + 16);
  out->dst = dst;
  const Peer* peer = rt.lookup(dst);
  if (!peer) return Drop::TxNoRoute;
  out->peer = peer;
  *tot = t;
  return Drop::Count;
}

uint8_t* encap_header(const EncapConfig& cfg, const Peer& peer, uint8_t* ip) {
  if (cfg.kind == EncapKind::Udp) return ip;
  uint8_t* f = ip - (kVxlanHeader + kEthHeader);
  // VXLAN header: flags (I), 24 reserved bits, VNI, 8 reserved bits.
  f[0] = 0x08;
  f[1] = f[2] = f[3] = 0;
  f[4] = static_cast<uint8_t>(cfg.vni >> 16);
  f[5] = static_cast<uint8_t>(cfg.vni >> 8);
  f[6] = static_cast<uint8_t>(cfg.vni);
  f[7] = 0;
  uint8_t* eth = f + kVxlanHeader;
  std::memcpy(eth, peer.mac, 6);
  std::memcpy(eth + 6, cfg.local_mac, 6);
  store_be16(eth + 12, kEtherTypeIPv4);
  return f;
}

Drop tx_encap(const EncapConfig& cfg, const RouteTable& rt, uint8_t* pkt, size_t len, TxResult* out) {
  size_t tot = 0;
  const Drop d = tx_route(rt, pkt, len, out, &tot);
  if (d != Drop::Count) return d;
  out->frame = encap_header(cfg, *out->peer, pkt);
  out->frame_len = tot + encap_overhead(cfg.kind);
  return Drop::Count;
}

namespace {

// murmur3's finalizer: every input bit reaches every output bit.
uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

}  // namespace

uint32_t flow_hash(const uint8_t* pkt, size_t len) {
  if (len < kIPv4MinHeader) return 0;
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  uint32_t h = fmix32(load_be32(pkt + 12) ^ 0x9E3779B1u);
  h = fmix32(h ^ load_be32(pkt + 16));
  h ^= pkt[9];
  const bool first_frag = (load_be16(pkt + 6) & 0x3fff) == 0;
  if ((pkt[9] == 6 || pkt[9] == 17) && first_frag && ihl >= kIPv4MinHeader && ihl + 4 <= len) {
    h ^= load_be32(pkt + ihl) * 0x27D4EB2Fu;
  }
  return fmix32(h);
}

namespace {

// Does a well-formed encapsulated packet for us start at `d` (`len` bytes available)?
bool encapsulated_packet_at(EncapKind kind, const VniSet& ours, const uint8_t* d, size_t len) {
  const size_t hdr = encap_overhead(kind);
  if (len < hdr + kIPv4MinHeader) return false;
  if (kind == EncapKind::Vxlan) {
    if ((d[0] & 0x08) == 0 || !ours.has(vxlan_vni(d))) return false;
    if (load_be16(d + kVxlanHeader + 12) != kEtherTypeIPv4) return false;
  }
  size_t tot = 0;
  return ipv4_header_ok(d + hdr, len - hdr, &tot);
}

}  // namespace

bool VniSet::has(uint32_t vni) const {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    if (sorted[mid] < vni) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < n && sorted[lo] == vni;
}

bool rx_message_is_one_datagram(EncapKind kind, const VniSet& ours, const uint8_t* data, size_t len, size_t seg) {
  if (seg == 0 || seg >= len) return true;
  const size_t hdr = encap_overhead(kind);
  if (len < hdr + kIPv4MinHeader) return false;
  // The first inner packet must claim exactly the whole message, header checksum valid.
  size_t tot = 0;
  if (!ipv4_header_ok(data + hdr, len - hdr, &tot) || hdr + tot != len) return false;
  for (size_t off = seg; off < len; off += seg) {
    const size_t n = len - off < seg ? len - off : seg;
    if (encapsulated_packet_at(kind, ours, data + off, n)) return false;
  }
  return true;
}

Drop rx_decap(const EncapConfig& cfg, const RouteTable& rt, uint32_t src_ip, const uint8_t* dgram, size_t len,
              RxResult* out) {
  const size_t hdr = encap_overhead(cfg.kind);
  if (len < hdr + kIPv4MinHeader) return Drop::RxShort;

  const Peer* const* cands = nullptr;
  const size_t ncand = rt.by_public_ip(src_ip, &cands);
  if (ncand == 0) return Drop::RxUnknownPeer;

  if (cfg.kind == EncapKind::Vxlan) {
    // RFC 7348 5: the I flag must be set; reserved bits are ignored on receipt.
    if ((dgram[0] & 0x08) == 0) return Drop::RxVxlanFlags;
    if (vxlan_vni(dgram) != cfg.vni) return Drop::RxBadVni;
    const uint8_t* eth = dgram + kVxlanHeader;
    if (std::memcmp(eth, cfg.local_mac, 6) != 0) return Drop::RxDstMac;
    if (load_be16(eth + 12) != kEtherTypeIPv4) return Drop::RxEtherType;
  }

  const uint8_t* ip = dgram + hdr;
  size_t tot = 0;
  if (!ipv4_header_ok(ip, len - hdr, &tot)) return Drop::RxBadIp;

  const uint32_t src = load_be32(ip + 12);
  const Peer* from = nullptr;
  for (size_t i = 0; i < ncand; ++i) {
    if ((src & cands[i]->mask) == cands[i]->net) {
      from = cands[i];
      break;
    }
  }
  if (!from) return Drop::RxSpoofedSrc;
  const uint32_t dst = load_be32(ip + 16);
  if (cfg.local_mask != 0 && (dst & cfg.local_mask) != cfg.local_net) return Drop::RxWrongDst;

  out->peer = from;
  out->inner = ip;
  out->inner_len = tot;
  return Drop::Count;
}

namespace {

// An address that names one host (RFC 1122 3.2.1.3): not 0/8 ("this network"), 127/8 (loopback),
// 224/4 (multicast), nor 240/4 (class E, with the limited broadcast 255.255.255.255).
bool single_host(uint32_t a) {
  const uint32_t top = a >> 24;
  return top != 0 && top != 127 && top < 224;
}

}  // namespace

size_t build_icmp_unreachable(const EncapConfig& cfg, const uint8_t* off, size_t len, uint8_t* out) {
  if (len < kIPv4MinHeader) return 0;
  const size_t ihl = static_cast<size_t>(off[0] & 0x0f) * 4;
  if ((off[0] >> 4) != 4 || ihl < kIPv4MinHeader || ihl > len) return 0;
  const uint16_t frag = load_be16(off + 6);
  if ((frag & 0x1fff) != 0) return 0;  // not the first fragment
  const uint32_t src = load_be32(off + 12);
  const uint32_t dst = load_be32(off + 16);
  // RFC 1122 3.2.2: never about a datagram to a broadcast or multicast address, nor one whose
  // source is not a single host (zero, loopback, broadcast, multicast, class E).
  if (!single_host(src) || !single_host(dst)) return 0;
  if (off[9] == kProtoIcmp) {
    if (len < ihl + 1) return 0;
    const uint8_t type = off[ihl];
    // Only queries (echo, timestamp, ...) may provoke an error; never an error about an error.
    // Unknown types (above 18) count as errors, as in Linux's icmp_send().
    if (type > 18 || type == 3 || type == 4 || type == 5 || type == 11 || type == 12) return 0;
  }
  // RFC 792: the offender's header and its first 8 data bytes, not bytes beyond its total
  // length (a TSO packet read from the TUN may carry 0 there: then what was read).
  const size_t tot = load_be16(off + 2);
  const size_t avail = tot >= ihl && tot <= len ? tot : len;
  const size_t quoted = ihl + (avail - ihl < 8 ? avail - ihl : 8);
  const size_t total = kIPv4MinHeader + 8 + quoted;
  uint8_t* ip = out;
  std::memset(ip, 0, kIPv4MinHeader + 8);
  ip[0] = 0x45;
  store_be16(ip + 2, static_cast<uint16_t>(total));
  ip[8] = 64;  // TTL
  ip[9] = kProtoIcmp;
  store_be32(ip + 12, cfg.icmp_src ? cfg.icmp_src : dst);
  store_be32(ip + 16, src);
  store_be16(ip + 10, csum_fold(csum_partial(ip, kIPv4MinHeader)));
  uint8_t* icmp = ip + kIPv4MinHeader;
  icmp[0] = 3;  // destination unreachable
  icmp[1] = 0;  // net unreachable
  std::memcpy(icmp + 8, off, quoted);
  store_be16(icmp + 2, csum_fold(csum_partial(icmp, 8 + quoted)));
  return total;
}

}  // namespace vxnet
