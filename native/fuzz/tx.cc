// Transmit path: one TUN read (10-byte virtio_net_hdr + packet, as the kernel hands it over with
// IFF_VNET_HDR) through what TxPath::handle does with it: vnet_load, then for TCPv4 GSO
// tcp4_gso_plan + tcp4_gso_segment into the slot's segment area (real headroom and 128 KiB area)
// and tx_encap of each segment, otherwise vnet_finish_csum (NEEDS_CSUM) and tx_encap; ICMP
// unreachable on no route. Every segment and frame is checked.
//
// Input: [ctrl][virtio_net_hdr:10][packet]. ctrl: bit 0 VXLAN, bits 1-5 fix_packet() (bits 0-4),
// bit 6 destination := a routed address, bit 7 csum_start/offset := the packet's real L4 checksum.
#include "fuzz_common.h"

using namespace fuzz;

namespace {

uint8_t* slot() {
  static uint8_t* s = new uint8_t[kSlotStride];
  return s;
}

void check_icmp(const uint8_t* pkt, size_t len) {
  uint8_t reply[kIcmpReplyMax];
  const EncapConfig cfg = config(false);
  const size_t n = build_icmp_unreachable(cfg, pkt, len, reply);
  FUZZ_CHECK(n <= kIcmpReplyMax, "ICMP reply within kIcmpReplyMax");
  if (n) FUZZ_CHECK(ipv4_valid(reply, n) && reply[9] == 1, "ICMP reply is a valid IPv4 ICMP packet");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 + kVnetHdrLen) return 0;
  const uint8_t ctrl = data[0];
  const EncapConfig cfg = config(ctrl & 1);
  const size_t overhead = encap_overhead(cfg.kind);
  const RouteTable& rt = fixed_routes();
  size_t len = size - 1 - kVnetHdrLen;
  if (len > kMaxPacket) return 0;  // more than one TUN read can return

  uint8_t* s = slot();
  unpoison(s, kSlotStride);
  uint8_t* pkt = s + kHeadroom;
  uint8_t* rd = pkt - kVnetHdrLen;
  std::memcpy(rd, data + 1, kVnetHdrLen + len);
  if (len >= kIPv4MinHeader) {
    if (ctrl & (1 << 6)) store_be32(pkt + 16, 0x0af40000u | (static_cast<uint32_t>(1 + pkt[17] % 6) << 8) | pkt[19]);
    if ((ctrl & (1 << 7))) {
      const size_t ihl = ihl_of(pkt);
      VnetHdr v = vnet_load(rd);
      v.csum_start = static_cast<uint16_t>(ihl);
      v.csum_offset = pkt[9] == kUdp ? 6 : 16;
      vnet_store(rd, v);
    }
    fix_packet(pkt, len, static_cast<uint8_t>(ctrl >> 1));
  }
  const std::vector<uint8_t> orig(pkt, pkt + len);
  // Nothing past the bytes read may be read; the segment area is written before it is read.
  poison(s, kHeadroom - std::max(kVnetHdrLen, overhead));
  poison(pkt + len, kMaxPacket - len);
  uint8_t* seg = s + kHeadroom + kMaxPacket;

  const VnetHdr vh = vnet_load(rd);
  const uint8_t gso_type = vh.gso_type & static_cast<uint8_t>(~kVnetGsoEcn);
  if (gso_type == kVnetGsoTcpV4) {
    TcpGso plan;
    if (!tcp4_gso_plan(pkt, len, vh.gso_size, &plan)) return 0;
    FUZZ_CHECK(plan.hdr >= 40 && plan.hdr <= len && plan.payload == len - plan.hdr && plan.payload > 0, "plan lengths");
    FUZZ_CHECK(plan.mss > 0 && plan.mss <= vh.gso_size && plan.segments == (plan.payload + plan.mss - 1) / plan.mss,
               "plan segments");
    FUZZ_CHECK(plan.hdr + plan.mss <= kMaxTcpSegment, "a planned segment fits one UDP datagram with any encapsulation");
    const size_t stride = overhead + plan.hdr + plan.mss;
    // TxPath::handle: at least one segment per GSO message, else its loop never advances.
    FUZZ_CHECK(kGsoMaxBytes / stride >= 1, "one segment fits one UDP GSO message");
    if (plan.segments * stride > kSegArea) return 0;  // dropped as tx_bad_ip (the datapath chunks these)
    const uint32_t seq0 = load_be32(pkt + plan.ihl + 4);
    size_t off = 0;
    for (size_t k = 0; k < plan.segments; ++k) {
      uint8_t* ip = seg + k * stride + overhead;
      const size_t sl = tcp4_gso_segment(pkt, plan, k, ip);
      FUZZ_CHECK(sl > plan.hdr && sl <= plan.hdr + plan.mss, "segment length within the stride");
      FUZZ_CHECK(ipv4_valid(ip, sl) && ip[9] == kTcp, "segment is a valid IPv4 packet");
      FUZZ_CHECK(l4_csum_ok(ip, sl, kTcp), "segment TCP checksum verifies");
      FUZZ_CHECK(load_be32(ip + plan.ihl + 4) == seq0 + static_cast<uint32_t>(off), "segment sequence number");
      FUZZ_CHECK(std::memcmp(ip + plan.hdr, orig.data() + plan.hdr + off, sl - plan.hdr) == 0, "segment payload");
      // Headers as the original but for length, id, checksums, sequence number and flags.
      FUZZ_CHECK(ip[0] == orig[0] && ip[1] == orig[1] && std::memcmp(ip + 6, orig.data() + 6, 4) == 0 &&
                     std::memcmp(ip + 12, orig.data() + 12, plan.ihl - 12) == 0,
                 "segment IP header as the original");
      FUZZ_CHECK(load_be16(ip + 4) == static_cast<uint16_t>(load_be16(orig.data() + 4) + k), "IP id advances per segment");
      const uint8_t* t = ip + plan.ihl;
      const uint8_t* ot = orig.data() + plan.ihl;
      FUZZ_CHECK(std::memcmp(t, ot, 4) == 0 && std::memcmp(t + 8, ot + 8, 5) == 0 && std::memcmp(t + 14, ot + 14, 2) == 0 &&
                     std::memcmp(t + 18, ot + 18, plan.hdr - plan.ihl - 18) == 0,
                 "segment TCP header as the original");
      uint8_t want = ot[13];
      if (k + 1 != plan.segments) want &= static_cast<uint8_t>(~0x09);  // FIN, PSH: last segment only
      if (k != 0) want &= static_cast<uint8_t>(~0x80);                  // CWR: first segment only
      FUZZ_CHECK(t[13] == want, "segment TCP flags");
      off += sl - plan.hdr;
      TxResult res;
      const Drop d = tx_encap(cfg, rt, ip, sl, &res);
      if (d != Drop::Count) {
        FUZZ_CHECK(d == Drop::TxNoRoute && k == 0, "only the route can fail, and for all segments alike");
        check_icmp(pkt, len);
        return 0;
      }
      FUZZ_CHECK(res.frame == ip - overhead && res.frame_len == sl + overhead, "frame in place, inside the stride");
    }
    FUZZ_CHECK(off == plan.payload, "segments carry the whole payload");
    FUZZ_CHECK(std::memcmp(pkt, orig.data(), len) == 0, "segmentation leaves the read packet unchanged");
    return 0;
  }
  if (gso_type != kVnetGsoNone) return 0;  // tx_bad_ip
  if (vh.flags & kVnetFlagNeedsCsum) {
    if (!vnet_finish_csum(pkt, len, vh.csum_start, vh.csum_offset)) return 0;  // tx_bad_ip
    const size_t field = static_cast<size_t>(vh.csum_start) + vh.csum_offset;
    FUZZ_CHECK(field + 2 <= len, "checksum field inside the packet");
    // The field held the pseudo-header sum P: the region now sums to ~P, and with P (the
    // receiver's pseudo-header) verifies. Only for a field at an even offset, as the kernel sets it.
    if (vh.csum_offset % 2 == 0) {
      FUZZ_CHECK(csum_partial(pkt + vh.csum_start, len - vh.csum_start, load_be16(orig.data() + field)) == 0xffff,
                 "completed checksum verifies");
    }
    FUZZ_CHECK(std::memcmp(pkt, orig.data(), field) == 0 && std::memcmp(pkt + field + 2, orig.data() + field + 2, len - field - 2) == 0,
               "only the checksum field changes");
    if (len >= kIPv4MinHeader && pkt[9] == kUdp && (pkt[0] >> 4) == 4 && vh.csum_start == ihl_of(pkt) && vh.csum_offset == 6) {
      FUZZ_CHECK(load_be16(pkt + field) != 0, "a computed UDP checksum of 0 is sent as 0xffff (RFC 768)");
    }
  }
  TxResult res;
  const Drop d = tx_encap(cfg, rt, pkt, len, &res);
  if (d == Drop::TxNoRoute) check_icmp(pkt, len);
  if (d != Drop::Count) return 0;
  FUZZ_CHECK(res.peer != nullptr && res.peer->net == (res.dst & res.peer->mask), "peer owns the destination");
  FUZZ_CHECK(res.frame == pkt - overhead && res.frame_len >= overhead + kIPv4MinHeader && res.frame_len <= overhead + len,
             "frame inside headroom + packet");
  FUZZ_CHECK(res.frame_len - overhead == load_be16(pkt + 2), "frame carries the IP total length");
  return 0;
}
