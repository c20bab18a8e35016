#include "offload.h"

#include <cstring>

#include "packet.h"

namespace vxnet {

namespace {

constexpr uint8_t kProtoTcp = 6;
constexpr uint8_t kTcpFin = 0x01, kTcpPsh = 0x08, kTcpAck = 0x10, kTcpCwr = 0x80;

constexpr uint8_t kProtoUdp = 17;

// Sum of the TCP/UDP pseudo-header (RFC 793, RFC 768): addresses, protocol, L4 length.
uint32_t pseudo_sum(const uint8_t* ip, size_t l4_len, uint8_t proto = kProtoTcp) {
  uint8_t ph[12];
  std::memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  store_be16(ph + 10, static_cast<uint16_t>(l4_len));
  return csum_partial(ph, sizeof ph);
}

// The NEEDS_CSUM field (csum_start, csum_offset) is the UDP checksum of an IPv4 packet.
bool is_udp_csum(const uint8_t* pkt, size_t len, size_t csum_start, size_t csum_offset) {
  if (len < kIPv4MinHeader || (pkt[0] >> 4) != 4 || pkt[9] != kProtoUdp || csum_offset != 6) return false;
  return csum_start == static_cast<size_t>(pkt[0] & 0x0f) * 4;
}

void ip_fix(uint8_t* ip, size_t ihl, size_t tot, uint16_t id) {
  store_be16(ip + 2, static_cast<uint16_t>(tot));
  store_be16(ip + 4, id);
  store_be16(ip + 10, 0);
  store_be16(ip + 10, csum_fold(csum_partial(ip, ihl)));
}

}  // namespace

VnetHdr vnet_load(const uint8_t* p) {
  VnetHdr h;
  h.flags = p[0];
  h.gso_type = p[1];
  std::memcpy(&h.hdr_len, p + 2, 2);
  std::memcpy(&h.gso_size, p + 4, 2);
  std::memcpy(&h.csum_start, p + 6, 2);
  std::memcpy(&h.csum_offset, p + 8, 2);
  return h;
}

void vnet_store(uint8_t* p, const VnetHdr& h) {
  p[0] = h.flags;
  p[1] = h.gso_type;
  std::memcpy(p + 2, &h.hdr_len, 2);
  std::memcpy(p + 4, &h.gso_size, 2);
  std::memcpy(p + 6, &h.csum_start, 2);
  std::memcpy(p + 8, &h.csum_offset, 2);
}

bool vnet_finish_csum(uint8_t* pkt, size_t len, uint16_t csum_start, uint16_t csum_offset) {
  const size_t field = static_cast<size_t>(csum_start) + csum_offset;
  if (csum_start >= len || field + 2 > len) return false;
  // The field is seeded with the pseudo-header sum; summing over it completes the checksum.
  uint16_t c = csum_fold(csum_partial(pkt + csum_start, len - csum_start));
  // RFC 768: a UDP checksum that computes to 0 is sent as all ones (0 means "no checksum").
  if (c == 0 && is_udp_csum(pkt, len, csum_start, csum_offset)) c = 0xffff;
  store_be16(pkt + field, c);
  return true;
}

L4Csum complete_offloaded_csum(uint8_t* pkt, size_t len) {
  if (len < kIPv4MinHeader) return L4Csum::NotChecked;
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  if (ihl < kIPv4MinHeader || ihl > len) return L4Csum::NotChecked;
  // A fragment's checksum covers the reassembled datagram; senders complete it before fragmenting.
  if ((load_be16(pkt + 6) & 0x3fff) != 0) return L4Csum::NotChecked;
  const uint8_t proto = pkt[9];
  const size_t l4_len = len - ihl;
  size_t field;
  if (proto == kProtoTcp) {
    if (l4_len < 20) return L4Csum::NotChecked;
    field = ihl + 16;
  } else if (proto == kProtoUdp) {
    if (l4_len < 8 || load_be16(pkt + ihl + 4) != l4_len) return L4Csum::NotChecked;
    field = ihl + 6;
  } else {
    return L4Csum::NotChecked;
  }
  // The pseudo-header sum is never 0 (the protocol word is not), so UDP's "no checksum" never matches.
  const uint32_t ph = pseudo_sum(pkt, l4_len, proto);
  if (load_be16(pkt + field) != ph) return L4Csum::Untouched;
  // Summing over the field (which holds the pseudo-header sum) completes the checksum; should the
  // field have held a full checksum equal to that sum by chance, the result is that same value.
  uint16_t c = csum_fold(csum_partial(pkt + ihl, l4_len));
  if (proto == kProtoUdp && c == 0) c = 0xffff;  // RFC 768: a computed zero is sent as all ones
  store_be16(pkt + field, c);
  return L4Csum::Completed;
}

bool tcp4_super_prepare(uint8_t* pkt, size_t len, size_t mtu, bool csum_ok, uint8_t* vnet_out) {
  if (len < kIPv4MinHeader + 20 || len > 65535 || (pkt[0] >> 4) != 4 || pkt[9] != kProtoTcp) return false;
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  if (ihl < kIPv4MinHeader || ihl + 20 > len || load_be16(pkt + 2) != len) return false;
  if ((load_be16(pkt + 6) & 0x3fff) != 0) return false;
  const size_t thl = static_cast<size_t>(pkt[ihl + 12] >> 4) * 4;
  const size_t hdr = ihl + thl;
  if (thl < 20 || hdr >= len || hdr >= mtu) return false;
  // SYN/RST/URG segments are never GSO; only data with ACK (and PSH/FIN/CWR/ECE) is re-segmented.
  const uint8_t flags = pkt[ihl + 13];
  if ((flags & (0x02 | 0x04 | 0x20)) != 0 || (flags & kTcpAck) == 0) return false;
  const size_t tcp_len = len - ihl;
  const uint32_t ph = pseudo_sum(pkt, tcp_len);
  if (!csum_ok && csum_partial(pkt + ihl, tcp_len, ph) != 0xffff) return false;
  store_be16(pkt + ihl + 16, static_cast<uint16_t>(ph));
  VnetHdr h;
  h.flags = kVnetFlagNeedsCsum;
  h.gso_type = static_cast<uint8_t>(kVnetGsoTcpV4 | ((flags & kTcpCwr) ? kVnetGsoEcn : 0));
  h.hdr_len = static_cast<uint16_t>(hdr);
  h.gso_size = static_cast<uint16_t>(mtu - hdr);
  h.csum_start = static_cast<uint16_t>(ihl);
  h.csum_offset = 16;
  vnet_store(vnet_out, h);
  return true;
}

bool tcp4_gso_plan(const uint8_t* pkt, size_t len, uint16_t gso_size, TcpGso* plan) {
  if (len < kIPv4MinHeader + 20 || (pkt[0] >> 4) != 4 || gso_size == 0) return false;
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  if (ihl < kIPv4MinHeader || pkt[9] != kProtoTcp) return false;
  if ((load_be16(pkt + 6) & 0x3fff) != 0) return false;  // fragments are never TSO
  const size_t tot = load_be16(pkt + 2);
  if (tot != 0 && tot != len) return false;  // the kernel sets it to the super-packet length
  if (ihl + 20 > len) return false;
  const size_t thl = static_cast<size_t>(pkt[ihl + 12] >> 4) * 4;
  if (thl < 20 || ihl + thl > len) return false;
  plan->ihl = ihl;
  plan->hdr = ihl + thl;
  plan->payload = len - plan->hdr;
  if (plan->payload == 0) return false;
  // A gso_size beyond the payload means one segment: the whole packet (its stride is then the
  // packet, not 64 KiB). A segment must fit one UDP datagram with its encapsulation, or no GSO
  // send could carry it (and a sender's per-message segment count would be 0).
  plan->mss = gso_size < plan->payload ? gso_size : plan->payload;
  if (plan->hdr + plan->mss > kMaxTcpSegment) return false;
  plan->segments = (plan->payload + plan->mss - 1) / plan->mss;
  return true;
}

size_t tcp4_gso_segment_hdr(const uint8_t* pkt, const TcpGso& plan, size_t i, uint8_t* hdr_out,
                            const uint8_t** payload, size_t* payload_len) {
  const size_t off = i * plan.mss;
  const size_t chunk = plan.payload - off < plan.mss ? plan.payload - off : plan.mss;
  std::memcpy(hdr_out, pkt, plan.hdr);
  const size_t tot = plan.hdr + chunk;
  ip_fix(hdr_out, plan.ihl, tot, static_cast<uint16_t>(load_be16(pkt + 4) + i));
  uint8_t* tcp = hdr_out + plan.ihl;
  store_be32(tcp + 4, load_be32(pkt + plan.ihl + 4) + static_cast<uint32_t>(off));
  // As tcp_gso_segment: FIN and PSH only on the last segment, CWR only on the first.
  if (i + 1 != plan.segments) tcp[13] &= static_cast<uint8_t>(~(kTcpFin | kTcpPsh));
  if (i != 0) tcp[13] &= static_cast<uint8_t>(~kTcpCwr);
  store_be16(tcp + 16, 0);
  const size_t tcp_len = tot - plan.ihl;
  const uint8_t* body = pkt + plan.hdr + off;
  // The TCP header is a multiple of 4 bytes long, so the sum chains across the two pieces (RFC 1071).
  const uint32_t sum = csum_partial(body, chunk, csum_partial(tcp, plan.hdr - plan.ihl, pseudo_sum(hdr_out, tcp_len)));
  store_be16(tcp + 16, csum_fold(sum));
  *payload = body;
  *payload_len = chunk;
  return tot;
}

size_t tcp4_gso_segment(const uint8_t* pkt, const TcpGso& plan, size_t i, uint8_t* out) {
  const uint8_t* body;
  size_t chunk;
  const size_t tot = tcp4_gso_segment_hdr(pkt, plan, i, out, &body, &chunk);
  std::memcpy(out + plan.hdr, body, chunk);
  return tot;
}

bool TcpCoalescer::parse(const uint8_t* pkt, size_t len, bool csum_ok, Key* k) {
  // Only option-less IPv4 carrying TCP, unfragmented, exactly `len` long.
  if (len < 40 || pkt[0] != 0x45 || pkt[9] != kProtoTcp) return false;
  if ((load_be16(pkt + 6) & 0x3fff) != 0 || load_be16(pkt + 2) != len) return false;
  const size_t thl = static_cast<size_t>(pkt[32] >> 4) * 4;
  if (thl < 20 || 20 + thl > len) return false;
  k->saddr = load_be32(pkt + 12);
  k->daddr = load_be32(pkt + 16);
  k->sport = load_be16(pkt + 20);
  k->dport = load_be16(pkt + 22);
  k->seq = load_be32(pkt + 24);
  k->hdr = 20 + thl;
  k->payload = len - k->hdr;
  k->flags = pkt[33];
  k->mergeable = k->payload > 0 && (k->flags & ~(kTcpAck | kTcpPsh)) == 0 && (k->flags & kTcpAck);
  // A merged super-packet is handed up as checksum-verified, so each segment must verify here;
  // a corrupt one is passed on alone for the stack to reject.
  if (k->mergeable && !csum_ok) k->mergeable = csum_partial(pkt + 20, len - 20, pseudo_sum(pkt, len - 20)) == 0xffff;
  return true;
}

int TcpCoalescer::find(const Key& k) const {
  for (size_t i = 0; i < kFlows; ++i) {
    const Flow& f = flows_[i];
    if (f.used && f.saddr == k.saddr && f.daddr == k.daddr && f.sport == k.sport && f.dport == k.dport) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool TcpCoalescer::merge(size_t i, const Key& k, const uint8_t* pkt) {
  Flow& f = flows_[i];
  if (!k.mergeable || f.closed || k.hdr != f.hdr || k.seq != f.next_seq || k.payload > f.mss) return false;
  if (f.len + k.payload > kMaxSuper || f.segments >= kMaxSegs) return false;
  const uint8_t* held = f.first;
  // Same TOS, TTL and DF; same ack, data offset, window and options (as the kernel's tcp_gro_receive).
  if (pkt[1] != held[1] || pkt[8] != held[8] || (pkt[6] & 0x40) != (held[6] & 0x40)) return false;
  if (std::memcmp(pkt + 28, held + 28, 5) != 0) return false;  // ack + data offset
  if (std::memcmp(pkt + 34, held + 34, 2) != 0) return false;  // window
  if (std::memcmp(pkt + 40, held + 40, f.hdr - 40) != 0) return false;  // options
  f.iov[1 + f.segments] = iovec{const_cast<uint8_t*>(pkt + k.hdr), k.payload};
  f.len += k.payload;
  f.next_seq += static_cast<uint32_t>(k.payload);
  ++f.segments;
  if (k.flags & kTcpPsh) f.psh = true;
  if (k.payload < f.mss || (k.flags & kTcpPsh)) f.closed = true;
  return true;
}

void TcpCoalescer::hold(size_t i, const Key& k, const uint8_t* pkt, size_t len) {
  Flow& f = flows_[i];
  f.used = true;
  f.closed = (k.flags & kTcpPsh) != 0;
  f.psh = false;
  f.saddr = k.saddr;
  f.daddr = k.daddr;
  f.sport = k.sport;
  f.dport = k.dport;
  f.next_seq = k.seq + static_cast<uint32_t>(k.payload);
  f.hdr = k.hdr;
  f.mss = k.payload;
  f.len = len;
  f.segments = 1;
  f.first = pkt;
  f.iov[1] = iovec{const_cast<uint8_t*>(pkt + k.hdr), k.payload};
}

void TcpCoalescer::finish(size_t i) {
  Flow& f = flows_[i];
  uint8_t* ip = f.head + kVnetHdrLen;
  std::memcpy(ip, f.first, f.hdr);
  if (f.psh) ip[33] |= kTcpPsh;
  ip_fix(ip, 20, f.len, load_be16(ip + 4));
  // Checksum left partial (pseudo-header sum in the field): the stack takes the payload as
  // verified, which it is: parse() checked every merged segment's own TCP checksum.
  store_be16(ip + 20 + 16, static_cast<uint16_t>(pseudo_sum(ip, f.len - 20)));
  VnetHdr h;
  h.flags = kVnetFlagNeedsCsum;
  h.gso_type = kVnetGsoTcpV4;
  h.hdr_len = static_cast<uint16_t>(f.hdr);
  h.gso_size = static_cast<uint16_t>(f.mss);
  h.csum_start = 20;
  h.csum_offset = 16;
  vnet_store(f.head, h);
  f.iov[0] = iovec{ip, f.hdr};
}

bool udp4_gso_plan(const uint8_t* pkt, size_t len, uint16_t gso_size, UdpGso* plan) {
  if (len < kIPv4MinHeader + 8 || (pkt[0] >> 4) != 4 || gso_size == 0 || pkt[9] != kProtoUdp) return false;
  const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
  if (ihl < kIPv4MinHeader || ihl + 8 > len || load_be16(pkt + 2) != len) return false;
  if ((load_be16(pkt + 6) & 0x3fff) != 0) return false;
  plan->ihl = ihl;
  plan->payload = len - ihl - 8;
  plan->seg = gso_size;
  if (plan->payload == 0) return false;
  plan->segments = (plan->payload + plan->seg - 1) / plan->seg;
  return true;
}

size_t udp4_gso_segment_hdr(const uint8_t* pkt, const UdpGso& plan, size_t i, uint8_t* hdr_out,
                            const uint8_t** payload, size_t* payload_len) {
  const size_t off = i * plan.seg;
  const size_t chunk = plan.payload - off < plan.seg ? plan.payload - off : plan.seg;
  const size_t hdr = plan.ihl + 8;
  std::memcpy(hdr_out, pkt, hdr);
  const size_t tot = hdr + chunk;
  ip_fix(hdr_out, plan.ihl, tot, static_cast<uint16_t>(load_be16(pkt + 4) + i));
  uint8_t* udp = hdr_out + plan.ihl;
  store_be16(udp + 4, static_cast<uint16_t>(8 + chunk));
  store_be16(udp + 6, 0);
  const uint8_t* body = pkt + hdr + off;
  uint16_t c = csum_fold(csum_partial(body, chunk, csum_partial(udp, 8, pseudo_sum(hdr_out, 8 + chunk, kProtoUdp))));
  if (c == 0) c = 0xffff;  // RFC 768: a computed zero is sent as all ones
  store_be16(udp + 6, c);
  *payload = body;
  *payload_len = chunk;
  return tot;
}

bool UdpCoalescer::parse(const uint8_t* pkt, size_t len, bool csum_ok, Key* k) {
  if (len < 28 || pkt[0] != 0x45 || pkt[9] != kProtoUdp) return false;
  if ((load_be16(pkt + 6) & 0x3fff) != 0 || load_be16(pkt + 2) != len) return false;
  k->saddr = load_be32(pkt + 12);
  k->daddr = load_be32(pkt + 16);
  k->sport = load_be16(pkt + 20);
  k->dport = load_be16(pkt + 22);
  k->has_ports = true;
  if (load_be16(pkt + 24) != len - 20) return false;
  k->payload = len - 28;
  if (k->payload == 0 || load_be16(pkt + 26) == 0) return false;  // no payload, or no checksum to trust
  // Merged datagrams are handed up as verified: each must verify here.
  return csum_ok || csum_partial(pkt + 20, len - 20, pseudo_sum(pkt, len - 20, kProtoUdp)) == 0xffff;
}

int UdpCoalescer::find(const Key& k) const {
  for (size_t i = 0; i < kFlows; ++i) {
    const Flow& f = flows_[i];
    if (f.used && f.k.saddr == k.saddr && f.k.daddr == k.daddr && f.k.sport == k.sport && f.k.dport == k.dport) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

bool UdpCoalescer::merge(size_t i, const Key& k, const uint8_t* pkt, size_t len) {
  Flow& f = flows_[i];
  if (f.closed || f.segments >= kMaxSegs || k.payload > f.seg || f.len + k.payload > 65535) return false;
  const uint8_t* held = f.pkts[0];
  // Same TOS, TTL and DF (the merged packet carries the first one's header).
  if (pkt[1] != held[1] || pkt[8] != held[8] || (pkt[6] & 0x40) != (held[6] & 0x40)) return false;
  f.pkts[f.segments] = pkt;
  f.lens[f.segments] = len;
  f.iov[1 + f.segments] = iovec{const_cast<uint8_t*>(pkt + 28), k.payload};
  ++f.segments;
  f.len += k.payload;
  if (k.payload < f.seg) f.closed = true;
  return true;
}

void UdpCoalescer::hold(size_t i, const Key& k, const uint8_t* pkt, size_t len) {
  Flow& f = flows_[i];
  f.used = true;
  f.closed = false;
  f.k = k;
  f.seg = k.payload;
  f.len = len;
  f.segments = 1;
  f.pkts[0] = pkt;
  f.lens[0] = len;
  f.iov[1] = iovec{const_cast<uint8_t*>(pkt + 28), k.payload};
}

void UdpCoalescer::finish(size_t i) {
  Flow& f = flows_[i];
  uint8_t* ip = f.head + kVnetHdrLen;
  std::memcpy(ip, f.pkts[0], 28);
  ip_fix(ip, 20, f.len, load_be16(ip + 4));
  // The stack cuts the packet into datagrams of `seg` payload bytes and sets each length; the
  // checksum is left partial: every merged datagram's own checksum verified in parse().
  store_be16(ip + 24, static_cast<uint16_t>(f.len - 20));
  store_be16(ip + 26, static_cast<uint16_t>(pseudo_sum(ip, f.len - 20, kProtoUdp)));
  VnetHdr h;
  h.flags = kVnetFlagNeedsCsum;
  h.gso_type = kVnetGsoUdpL4;
  h.hdr_len = 28;
  h.gso_size = static_cast<uint16_t>(f.seg);
  h.csum_start = 20;
  h.csum_offset = 6;
  vnet_store(f.head, h);
  f.iov[0] = iovec{ip, 28};
}

}  // namespace vxnet
