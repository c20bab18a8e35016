// Sanitizer harness for the packet code (ASan + UBSan via `npm run test:sanitize`): known vectors,
// a TSO segmentation -> GRO coalescing round trip, and random input against every parser.
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../encap.h"
#include "../link_stats.h"
#include "../offload.h"
#include "../packet.h"
#include "../route_table.h"
#include "netlink_reply.h"
#include "packets.h"

using namespace vxnet;
using namespace vxnet::testpkt;



static RouteTable* table() {
  std::vector<RouteSpec> specs;
  for (uint32_t i = 1; i <= 300; ++i) {
    RouteSpec s{};
    s.net = 0x0af40000u | (i << 8);
    s.peer_ip = 0xc6120000u | i;
    s.slot = i;
    s.port = 8472;
    s.prefix_len = 24;
    std::memset(s.mac, static_cast<int>(i), 6);
    specs.push_back(s);
  }
  std::string err;
  RouteTable* rt = RouteTable::build(specs, &err);
  CHECK(rt != nullptr, "route table builds");
  return rt;
}

// Both loops (the scalar one and, where the CPU has AVX2, the vector one) against a byte-wise
// RFC 1071 sum: 6,000 random lengths (2,000 under 300, the rest under 5,000 and ten near 64 KiB)
// at random alignments mod 32 with random seeds, and all-ones data at every alignment mod 32.
static void checksum_matches_reference() {
  std::mt19937 rng(1);
  std::vector<uint8_t> buf(65536 + 64);
  for (auto& x : buf) x = static_cast<uint8_t>(rng());
  const auto matches = [](const uint8_t* b, size_t len, uint32_t seed) {
    uint64_t ref = seed;
    for (size_t i = 0; i + 1 < len; i += 2) ref += load_be16(b + i);
    if (len % 2) ref += static_cast<uint32_t>(b[len - 1]) << 8;
    while (ref >> 16) ref = (ref & 0xffff) + (ref >> 16);
    return csum_partial(b, len, seed) == ref && detail::csum_partial_impl<false>(b, len, seed) == ref;
  };
  bool ok = true;
  for (int n = 0; n < 6000 && ok; ++n) {
    const size_t len = n < 2000 ? rng() % 300 : n < 5990 ? rng() % 5000 : 65536 - rng() % 64;
    ok = matches(buf.data() + rng() % 32, len, rng() % 0x10000);
  }
  CHECK(ok, "csum_partial (scalar and vector loops) equals the RFC 1071 reference");
  // All ones: the largest sums the accumulators see.
  std::vector<uint8_t> ones(65535 + 32, 0xff);
  ok = true;
  for (size_t off = 0; off < 32; ++off) ok = ok && matches(ones.data() + off, 65535, 0xffff) && matches(ones.data() + off, 65534, 0);
  CHECK(ok, "csum_partial of 64 KiB of 0xff");
#if defined(__x86_64__)
  std::printf("  (csum vector loop: %s)\n", detail::csum_avx2_ok() ? "AVX2" : "not on this CPU, scalar checked twice");
#endif
}

static void segment_then_coalesce_round_trip() {
  const size_t mss = 1398;
  std::vector<uint8_t> super = ipv4_tcp(0x0af40102, 0x0af40202, 1000, mss * 5 + 100, 0x18);
  TcpGso plan;
  CHECK(tcp4_gso_plan(super.data(), super.size(), mss, &plan), "plan a TSO packet");
  CHECK(plan.segments == 6, "six segments");
  TcpCoalescer gro;
  std::vector<std::vector<uint8_t>> out;
  auto emit = [&](const uint8_t* vh, const iovec* iov, size_t niov, size_t len) {
    std::vector<uint8_t> v(vh, vh + kVnetHdrLen);
    for (size_t i = 0; i < niov; ++i) v.insert(v.end(), static_cast<const uint8_t*>(iov[i].iov_base), static_cast<const uint8_t*>(iov[i].iov_base) + iov[i].iov_len);
    CHECK(v.size() == kVnetHdrLen + len, "emitted pieces add up to the length");
    out.push_back(v);
  };
  // The coalescer keeps pointers to pushed packets until it emits them: one buffer per segment.
  std::vector<std::vector<uint8_t>> segs(plan.segments, std::vector<uint8_t>(40 + mss));
  for (size_t i = 0; i < plan.segments; ++i) {
    std::vector<uint8_t>& seg = segs[i];
    const size_t n = tcp4_gso_segment(super.data(), plan, i, seg.data());
    size_t tot = 0;
    CHECK(ipv4_header_ok(seg.data(), n, &tot) && tot == n, "segment has a valid IPv4 header");
    uint8_t ph[12];
    std::memcpy(ph, &seg[12], 8);
    ph[8] = 0;
    ph[9] = 6;
    store_be16(ph + 10, static_cast<uint16_t>(n - 20));
    CHECK(csum_partial(&seg[20], n - 20, csum_partial(ph, 12)) == 0xffff, "segment TCP checksum verifies");
    CHECK(((seg[33] & 0x08) != 0) == (i + 1 == plan.segments), "PSH only on the last segment");
    gro.push(seg.data(), n, emit);
  }
  gro.flush(emit);
  CHECK(out.size() == 1, "segments coalesce into one super-packet");
  if (out.size() == 1) {
    const std::vector<uint8_t>& g = out[0];
    const VnetHdr h = vnet_load(g.data());
    CHECK(h.gso_type == kVnetGsoTcpV4 && h.gso_size == mss && h.flags == kVnetFlagNeedsCsum, "vnet header says TCPv4 GSO");
    CHECK(g.size() - kVnetHdrLen == super.size(), "same length as the original");
    CHECK(std::memcmp(&g[kVnetHdrLen + 40], &super[40], super.size() - 40) == 0, "same payload");
    CHECK(load_be32(&g[kVnetHdrLen + 24]) == 1000, "first sequence number");
  }
  // A corrupted segment is never merged (it is passed on alone for the stack to reject).
  out.clear();
  std::vector<uint8_t> a = ipv4_tcp(1, 2, 0, mss, 0x10), b = ipv4_tcp(1, 2, mss, mss, 0x10);
  b[100] ^= 1;
  gro.push(a.data(), a.size(), emit);
  gro.push(b.data(), b.size(), emit);
  gro.flush(emit);
  CHECK(out.size() == 2, "corrupt segment not coalesced");
}

// A sender that offloaded its checksum leaves the pseudo-header sum in the field: that form, and
// only that form, is completed; everything else is left for the stack to judge.
static void offloaded_checksums() {
  for (size_t payload : {0, 1, 7, 1398}) {
    const std::vector<uint8_t> good = ipv4_tcp(0x0af40202, 0x0af40102, 5, payload, 0x18);
    std::vector<uint8_t> p = good;
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Untouched && p == good, "correct TCP checksum untouched");
    store_be16(&p[36], pseudo(p, 6));
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Completed && p == good, "offloaded TCP checksum completed");
    p = good;
    store_be16(&p[36], static_cast<uint16_t>(load_be16(&good[36]) ^ 0x0101));
    const std::vector<uint8_t> bad = p;
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Untouched && p == bad, "wrong TCP checksum untouched");
    p = good;
    store_be16(&p[36], pseudo(p, 6));
    p[6] = 0x20;  // more fragments
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::NotChecked, "fragment not checked");
  }
  for (size_t payload : {0, 3, 1400}) {
    const std::vector<uint8_t> good = ipv4_udp(0x0af40202, 0x0af40102, payload);
    std::vector<uint8_t> p = good;
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Untouched && p == good, "correct UDP checksum untouched");
    store_be16(&p[26], pseudo(p, 17));
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Completed && p == good, "offloaded UDP checksum completed");
    p = good;
    store_be16(&p[26], 0);
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Untouched && load_be16(&p[26]) == 0, "UDP without checksum untouched");
    p = good;
    store_be16(&p[24], static_cast<uint16_t>(p.size() - 21));
    CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::NotChecked, "UDP length mismatch not checked");
  }
  std::vector<uint8_t> icmp = ipv4_tcp(1, 2, 0, 8, 0x10);
  icmp[9] = 1;
  CHECK(complete_offloaded_csum(icmp.data(), icmp.size()) == L4Csum::NotChecked, "ICMP not checked");

  // A TCP super-packet received whole goes on as TSO only with a verified (or just computed) checksum.
  const size_t mtu = 1450;
  const std::vector<uint8_t> super = ipv4_tcp(0x0af40202, 0x0af40102, 77, 20000, 0x18);
  std::vector<uint8_t> p = super;
  uint8_t vh[kVnetHdrLen];
  CHECK(tcp4_super_prepare(p.data(), p.size(), mtu, false, vh), "verified super-packet prepared");
  VnetHdr h = vnet_load(vh);
  CHECK(h.flags == kVnetFlagNeedsCsum && h.gso_type == kVnetGsoTcpV4 && h.gso_size == mtu - 40 && h.hdr_len == 40 &&
            h.csum_start == 20 && h.csum_offset == 16,
        "super-packet vnet header");
  CHECK(load_be16(&p[36]) == pseudo(p, 6) && std::memcmp(&p[38], &super[38], super.size() - 38) == 0,
        "super-packet checksum field holds the pseudo-header sum, payload unchanged");
  p = super;
  p[5000] ^= 0x40;
  const std::vector<uint8_t> corrupt = p;
  CHECK(!tcp4_super_prepare(p.data(), p.size(), mtu, false, vh) && p == corrupt, "corrupt super-packet refused, unchanged");
  p = super;
  store_be16(&p[36], pseudo(p, 6));
  CHECK(complete_offloaded_csum(p.data(), p.size()) == L4Csum::Completed && p == super, "offloaded super-packet completed");
  std::vector<uint8_t> syn = ipv4_tcp(1, 2, 0, 3000, 0x02);
  CHECK(!tcp4_super_prepare(syn.data(), syn.size(), mtu, false, vh), "SYN is never TSO");
  CHECK(!tcp4_super_prepare(p.data(), p.size(), 40, false, vh), "MTU below the headers refused");
}

static void vectors(const RouteTable& rt) {
  EncapConfig cfg;
  cfg.kind = EncapKind::Vxlan;
  cfg.vni = 1;
  std::memset(cfg.local_mac, 0xaa, 6);
  cfg.local_net = 0x0af40100;
  cfg.local_mask = 0xffffff00;
  std::vector<uint8_t> buf(kHeadroom + 100);
  std::vector<uint8_t> pkt = ipv4_tcp(0x0af40102, 0x0af40505, 1, 20, 0x10);
  std::memcpy(&buf[kHeadroom], pkt.data(), pkt.size());
  TxResult tx;
  CHECK(tx_encap(cfg, rt, &buf[kHeadroom], pkt.size(), &tx) == Drop::Count, "encap to peer 5");
  CHECK(tx.peer && tx.peer->ip == 0xc6120005u, "peer 5 chosen");
  CHECK(tx.frame_len == pkt.size() + 22 && tx.frame[0] == 0x08, "vxlan frame");
  std::vector<uint8_t> back = ipv4_tcp(0x0af40509, 0x0af40102, 1, 20, 0x10);
  std::vector<uint8_t> dg(22 + back.size());
  std::memcpy(dg.data(), tx.frame, 22);
  std::memset(&dg[8], 0xaa, 6);
  std::memcpy(&dg[22], back.data(), back.size());
  RxResult rx;
  CHECK(rx_decap(cfg, rt, 0xc6120005u, dg.data(), dg.size(), &rx) == Drop::Count, "decap from peer 5");
  CHECK(rx_decap(cfg, rt, 0xc6120006u, dg.data(), dg.size(), &rx) == Drop::RxSpoofedSrc, "spoof from peer 6");
}

// A VXLAN datagram (VNI 1, dst MAC aa:..) carrying `inner`.
static std::vector<uint8_t> vxlan_dgram(const std::vector<uint8_t>& inner) {
  std::vector<uint8_t> d(22 + inner.size(), 0);
  d[0] = 0x08;
  d[6] = 1;
  std::memset(&d[8], 0xaa, 6);
  d[20] = 0x08;
  std::memcpy(&d[22], inner.data(), inner.size());
  return d;
}

// UDP GRO trains: a forged first datagram must never make the genuine ones after it part of one
// oversized packet (cross-datagram disclosure), nor make them vanish.
static void gro_train_rules() {
  EncapConfig cfg;
  cfg.kind = EncapKind::Vxlan;
  cfg.vni = 1;
  std::memset(cfg.local_mac, 0xaa, 6);
  const size_t mss = 1398;
  std::vector<uint8_t> train;
  for (int i = 0; i < 3; ++i) {
    const std::vector<uint8_t> d = vxlan_dgram(ipv4_tcp(0x0af40509, 0x0af40102, 1 + i * mss, mss, 0x10));
    train.insert(train.end(), d.begin(), d.end());
  }
  const size_t seg = 22 + 40 + mss;
  CHECK(!rx_message_is_one_datagram(cfg, train.data(), train.size(), seg), "genuine train is a train");
  // Forged first datagram claiming exactly the whole train (header checksum fixed up).
  std::vector<uint8_t> forged = train;
  store_be16(&forged[22 + 2], static_cast<uint16_t>(train.size() - 22));
  store_be16(&forged[22 + 10], 0);
  store_be16(&forged[22 + 10], csum_fold(csum_partial(&forged[22], 20)));
  CHECK(!rx_message_is_one_datagram(cfg, forged.data(), forged.size(), seg), "forged first datagram claiming the train: still a train");
  store_be16(&forged[22 + 2], static_cast<uint16_t>(train.size() + 500 - 22));
  store_be16(&forged[22 + 10], 0);
  store_be16(&forged[22 + 10], csum_fold(csum_partial(&forged[22], 20)));
  CHECK(!rx_message_is_one_datagram(cfg, forged.data(), forged.size(), seg), "first datagram claiming more than the train: still a train");
  // A peer kernel's GSO packet delivered whole: one datagram, the cmsg holding the inner MSS.
  const std::vector<uint8_t> whole = vxlan_dgram(ipv4_tcp(0x0af40509, 0x0af40102, 9, 30 * mss, 0x10));
  CHECK(rx_message_is_one_datagram(cfg, whole.data(), whole.size(), mss), "GSO packet received whole is one datagram");
  CHECK(rx_message_is_one_datagram(cfg, whole.data(), whole.size(), whole.size()), "no cmsg: one datagram");
  std::vector<uint8_t> tiny(3, 0);
  CHECK(!rx_message_is_one_datagram(cfg, tiny.data(), tiny.size(), 1), "3 bytes in 1-byte datagrams: a train of shorts");
}

// Flows that differ only in their source port (parallel TCP streams to one server) spread over the
// sending sockets: the outer source ports, and so the receiver's SO_REUSEPORT sockets.
static void flow_hash_spreads() {
  for (size_t socks : {2, 8}) {
    std::vector<int> hits(socks, 0);
    for (uint16_t i = 0; i < 64; ++i) {
      std::vector<uint8_t> p = ipv4_tcp(0x0af40102, 0x0af40202, 1, 10, 0x10);
      store_be16(&p[20], static_cast<uint16_t>(40000 + i));
      ++hits[(static_cast<uint64_t>(flow_hash(p.data(), p.size())) * socks) >> 32];
    }
    bool spread = true;
    for (int h : hits) spread = spread && h >= static_cast<int>(64 / socks / 3);
    CHECK(spread, "64 source ports spread over every sending socket");
  }
}

// Header-only TSO cutting gives byte-for-byte the segments of the contiguous path.
static void header_only_segments() {
  for (size_t mss : {48, 536, 1398}) {
    const std::vector<uint8_t> super = ipv4_tcp(0x0af40102, 0x0af40202, 4242, 20000 + mss / 2, 0x19);
    TcpGso plan;
    CHECK(tcp4_gso_plan(super.data(), super.size(), static_cast<uint16_t>(mss), &plan), "plan");
    bool same = true;
    for (size_t i = 0; i < plan.segments; ++i) {
      std::vector<uint8_t> a(plan.hdr + mss), h(plan.hdr);
      const size_t n = tcp4_gso_segment(super.data(), plan, i, a.data());
      const uint8_t* body;
      size_t blen;
      const size_t m = tcp4_gso_segment_hdr(super.data(), plan, i, h.data(), &body, &blen);
      same = same && n == m && m == plan.hdr + blen && std::memcmp(a.data(), h.data(), plan.hdr) == 0 &&
             std::memcmp(a.data() + plan.hdr, body, blen) == 0 && body >= super.data() && body + blen <= super.data() + super.size();
    }
    CHECK(same, "header-only segments equal the copied ones");
  }
}

// Regressions for what fuzzing (native/fuzz/, docs/datapath.md "Fuzzing") and the issue found.

// RFC 768: a UDP checksum that computes to 0 goes out as 0xffff, on transmit (vnet_finish_csum)
// and when a peer's offloaded checksum is completed (complete_offloaded_csum).
static void udp_zero_checksum() {
  std::vector<uint8_t> p = ipv4_udp(0x0af40102, 0x0af40202, 20);
  // Make the sum over the UDP part (pseudo-header sum in the field) 0xffff: the last payload word
  // takes the complement of the sum without it.
  store_be16(&p[26], pseudo(p, 17));
  store_be16(&p[p.size() - 2], 0);
  store_be16(&p[p.size() - 2], csum_fold(csum_partial(&p[20], p.size() - 20)));
  CHECK(csum_fold(csum_partial(&p[20], p.size() - 20)) == 0, "crafted UDP packet's checksum computes to 0");
  std::vector<uint8_t> t = p;
  CHECK(vnet_finish_csum(t.data(), t.size(), 20, 6) && load_be16(&t[26]) == 0xffff, "NEEDS_CSUM UDP: computed 0 sent as 0xffff");
  CHECK(csum_partial(&t[20], t.size() - 20, pseudo(t, 17)) == 0xffff, "0xffff verifies");
  std::vector<uint8_t> r = p;
  CHECK(complete_offloaded_csum(r.data(), r.size()) == L4Csum::Completed && load_be16(&r[26]) == 0xffff,
        "offloaded UDP checksum completed to 0 stored as 0xffff");
  // TCP has no "no checksum" value: a computed 0 stays 0.
  std::vector<uint8_t> tcp = ipv4_tcp(1, 2, 0, 20, 0x10);
  store_be16(&tcp[36], pseudo(tcp, 6));
  store_be16(&tcp[tcp.size() - 2], 0);
  store_be16(&tcp[tcp.size() - 2], csum_fold(csum_partial(&tcp[20], tcp.size() - 20)));
  CHECK(vnet_finish_csum(tcp.data(), tcp.size(), 20, 16) && load_be16(&tcp[36]) == 0, "TCP computed 0 stays 0");
  // A field at the UDP offset of a non-UDP packet is not UDP's.
  std::vector<uint8_t> other = p;
  other[9] = 99;
  CHECK(vnet_finish_csum(other.data(), other.size(), 20, 6) && load_be16(&other[26]) == 0, "not UDP: 0 stays 0");
}

// RFC 1122 3.2.2: no ICMP error about a datagram to a multicast/broadcast (or other non-host)
// destination, nor towards a source that is not one host; the quote stops at the total length.
static void icmp_rfc1122() {
  EncapConfig cfg;
  cfg.icmp_src = 0x0af40101;
  uint8_t out[kIcmpReplyMax];
  auto reply = [&](uint32_t src, uint32_t dst) {
    std::vector<uint8_t> p = ipv4_udp(src, dst, 12);
    return build_icmp_unreachable(cfg, p.data(), p.size(), out);
  };
  CHECK(reply(0x0af40102, 0x0a630101) == 20 + 8 + 20 + 8, "unicast to unicast: a reply");
  const uint32_t bad[] = {0x00000000, 0x00010203, 0x7f000001, 0x7fffffff, 0xe0000001, 0xe00000fb, 0xefffffff,
                          0xf0000001, 0xfffffffe, 0xffffffff};
  for (uint32_t a : bad) {
    CHECK(reply(a, 0x0a630101) == 0, "no reply towards a zero/loopback/multicast/class-E/broadcast source");
    CHECK(reply(0x0af40102, a) == 0, "no reply about a zero/loopback/multicast/class-E/broadcast destination");
  }
  CHECK(reply(0x01000001, 0xdfffffff) > 0 && reply(0xdfffffff, 0x01000001) > 0, "1.0.0.1 and 223.255.255.255 are hosts");
  // Unknown ICMP types count as errors (as Linux); echo requests get a reply.
  std::vector<uint8_t> icmp = ipv4_udp(0x0af40102, 0x0a630101, 12);
  icmp[9] = 1;
  icmp[20] = 8;
  CHECK(build_icmp_unreachable(cfg, icmp.data(), icmp.size(), out) > 0, "echo request: a reply");
  icmp[20] = 42;
  CHECK(build_icmp_unreachable(cfg, icmp.data(), icmp.size(), out) == 0, "unknown ICMP type: no reply");
  // Quote: header + 8 bytes, never past the total length (here 24: 4 data bytes, then padding).
  std::vector<uint8_t> shortp = ipv4_udp(0x0af40102, 0x0a630101, 12);
  store_be16(&shortp[2], 24);
  const size_t n = build_icmp_unreachable(cfg, shortp.data(), shortp.size(), out);
  CHECK(n == 28 + 24 && std::memcmp(out + 28, shortp.data(), 24) == 0, "quote stops at the offender's total length");
}

// tcp4_gso_plan: a segment must fit one UDP datagram with its encapsulation (a gso_size of 65535
// made the datapath's per-message segment count 0 and its send loop spin); a gso_size beyond the
// payload is one segment of the payload's size.
static void gso_plan_limits() {
  TcpGso plan;
  std::vector<uint8_t> small = ipv4_tcp(1, 2, 0, 1000, 0x18);
  CHECK(tcp4_gso_plan(small.data(), small.size(), 65535, &plan) && plan.segments == 1 && plan.mss == 1000,
        "gso_size beyond the payload: one segment, mss = payload");
  CHECK(plan.hdr + plan.mss + 22 <= 65507, "that segment fits a UDP datagram with VXLAN");
  std::vector<uint8_t> big = ipv4_tcp(1, 2, 0, kMaxTcpSegment - 40 + 1, 0x18);
  CHECK(!tcp4_gso_plan(big.data(), big.size(), 65535, &plan), "a segment above kMaxTcpSegment is refused");
  CHECK(tcp4_gso_plan(big.data(), big.size(), 1448, &plan) && plan.segments == (kMaxTcpSegment - 40 + 1 + 1447) / 1448,
        "the same packet with MSS 1448 is planned");
  std::vector<uint8_t> edge = ipv4_tcp(1, 2, 0, kMaxTcpSegment - 40, 0x18);
  CHECK(tcp4_gso_plan(edge.data(), edge.size(), 65535, &plan) && plan.hdr + plan.mss == kMaxTcpSegment,
        "a segment of exactly kMaxTcpSegment is planned");
  std::vector<uint8_t> max = ipv4_tcp(1, 2, 0, 65535 - 40, 0x10);
  CHECK(tcp4_gso_plan(max.data(), max.size(), 1448, &plan) && plan.segments == 46, "a 65535-byte TSO packet: 46 segments");
}

// A packet of a held flow that the coalescer cannot take (IP options, a TCP header shorter than
// 20 bytes, a first fragment) leaves after the flow's held data, never before it (fuzz target rx).
static void coalescer_keeps_order() {
  TcpCoalescer gro;
  std::vector<uint32_t> seqs;
  auto emit = [&](const uint8_t*, const iovec* iov, size_t, size_t len) {
    const uint8_t* pkt = static_cast<const uint8_t*>(iov[0].iov_base);
    const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
    seqs.push_back(len >= ihl + 8 && iov[0].iov_len >= ihl + 8 ? load_be32(pkt + ihl + 4) : 0);
  };
  const size_t mss = 1000;
  for (int kind = 0; kind < 3; ++kind) {
    seqs.clear();
    std::vector<uint8_t> a = ipv4_tcp(0x0af40102, 0x0af40902, 100, mss, 0x10);
    std::vector<uint8_t> b = ipv4_tcp(0x0af40102, 0x0af40902, 100 + mss, mss, 0x10);
    if (kind == 0) {  // TCP data offset 4 (16 bytes): malformed, cannot be parsed
      b[32] = 4 << 4;
    } else if (kind == 1) {  // IP options (IHL 6)
      b.insert(b.begin() + 20, {1, 1, 1, 0});
      b[0] = 0x46;
      store_be16(&b[2], static_cast<uint16_t>(b.size()));
    } else {  // first fragment
      b[6] |= 0x20;
    }
    store_be16(&b[10], 0);
    store_be16(&b[10], csum_fold(csum_partial(b.data(), static_cast<size_t>(b[0] & 0x0f) * 4)));
    gro.push(a.data(), a.size(), emit);
    gro.push(b.data(), b.size(), emit);
    gro.flush(emit);
    CHECK(seqs.size() == 2 && seqs[0] == 100 && seqs[1] == 100 + mss, "held segment leaves before the flow's next packet");
  }
}

// Random bytes (and random mutations of good packets) into every parser: must never crash or read
// out of bounds, and whatever is accepted must be a well-formed IPv4 packet.
static void fuzz(const RouteTable& rt) {
  std::mt19937 rng(42);
  TcpCoalescer gro;
  size_t accepted = 0, emitted_bad = 0;
  auto emit = [&](const uint8_t*, const iovec* iov, size_t niov, size_t len) {
    std::vector<uint8_t> pkt;
    for (size_t i = 0; i < niov; ++i) pkt.insert(pkt.end(), static_cast<const uint8_t*>(iov[i].iov_base), static_cast<const uint8_t*>(iov[i].iov_base) + iov[i].iov_len);
    size_t tot = 0;
    if (pkt.size() != len || !ipv4_header_ok(pkt.data(), len, &tot) || tot != len) ++emitted_bad;
  };
  for (int iter = 0; iter < 200000; ++iter) {
    const size_t len = rng() % 200;
    std::vector<uint8_t> heap(len);  // exact size: ASan flags any over-read
    if (iter % 2 && len >= 62) {
      std::vector<uint8_t> good = ipv4_tcp(0x0af40000u | ((1 + rng() % 300) << 8) | 9, 0x0af40102, rng(), 20, 0x10);
      std::memset(heap.data(), 0, len);
      heap[0] = 0x08;
      heap[6] = 1;
      std::memset(&heap[8], 0xaa, 6);
      heap[20] = 0x08;
      std::memcpy(&heap[22], good.data(), std::min(good.size(), len - 22));
      for (int m = rng() % 4; m > 0; --m) heap[rng() % len] = static_cast<uint8_t>(rng());
    } else {
      for (auto& x : heap) x = static_cast<uint8_t>(rng());
    }
    for (int kind = 0; kind < 2; ++kind) {
      EncapConfig cfg;
      cfg.kind = kind ? EncapKind::Vxlan : EncapKind::Udp;
      std::memset(cfg.local_mac, 0xaa, 6);
      RxResult rx;
      const uint32_t src = 0xc6120000u | (rng() % 302);
      if (rx_decap(cfg, rt, src, heap.data(), heap.size(), &rx) == Drop::Count) {
        ++accepted;
        size_t tot = 0;
        CHECK(ipv4_header_ok(rx.inner, rx.inner_len, &tot) && tot == rx.inner_len, "accepted packet is well-formed");
        CHECK(rx.inner >= heap.data() && rx.inner + rx.inner_len <= heap.data() + heap.size(), "inner within datagram");
        gro.push(rx.inner, rx.inner_len, emit);
        std::vector<uint8_t> inner(rx.inner, rx.inner + rx.inner_len);  // exact size again
        const bool done = complete_offloaded_csum(inner.data(), inner.size()) == L4Csum::Completed;
        uint8_t vh[kVnetHdrLen];
        if (tcp4_super_prepare(inner.data(), inner.size(), 20 + rng() % 100, done, vh)) {
          CHECK(vnet_load(vh).gso_size > 0, "prepared super-packet has a segment size");
        }
        gro.flush_flow_of(inner.data(), inner.size(), emit);
      }
      gro.flush(emit);  // held packets point into `heap`, freed after this iteration
    }
    std::vector<uint8_t> tx(kHeadroom + len);
    if (len) std::memcpy(&tx[kHeadroom], heap.data(), len);
    EncapConfig cfg;
    cfg.kind = EncapKind::Vxlan;
    TxResult res;
    tx_encap(cfg, rt, &tx[kHeadroom], len, &res);
    uint8_t reply[kIcmpReplyMax];
    if (build_icmp_unreachable(cfg, heap.data(), len, reply) > kIcmpReplyMax) CHECK(false, "icmp reply within bound");
    TcpGso plan;
    if (tcp4_gso_plan(heap.data(), len, static_cast<uint16_t>(1 + rng() % 64), &plan) && plan.segments < 64) {
      std::vector<uint8_t> seg(plan.hdr + plan.mss);
      for (size_t i = 0; i < plan.segments; ++i) tcp4_gso_segment(heap.data(), plan, i, seg.data());
    }
    std::vector<uint8_t> copy(heap);
    if (len) vnet_finish_csum(copy.data(), copy.size(), static_cast<uint16_t>(rng() % 256), static_cast<uint16_t>(rng() % 64));
  }
  gro.flush(emit);
  CHECK(emitted_bad == 0, "coalescer only emits well-formed packets");
  std::printf("fuzz: %zu random datagrams accepted as valid (all well-formed)\n", accepted);
}

// VniSet: membership by binary search over the sorted VNIs a datapath serves.
static void vni_set_membership() {
  const VniSet empty{nullptr, 0};
  CHECK(!empty.has(0) && !empty.has(1), "no VNI is in the empty set");
  const uint32_t one_vni[1] = {4100};
  const VniSet one{one_vni, 1};
  CHECK(one.has(4100) && !one.has(4099) && !one.has(4101), "one VNI");
  const uint32_t seven_vnis[7] = {0, 1, 2, 4096, 4100, 0xfffffe, 0xffffff};
  const VniSet seven{seven_vnis, 7};
  bool all = true;
  for (uint32_t v : seven_vnis) all = all && seven.has(v);
  CHECK(all, "every member of a set of seven is found");
  bool none = true;
  for (uint32_t v : {3u, 4095u, 4097u, 4099u, 4101u, 0xfffffdu, 0x1000000u, 0xffffffffu}) none = none && !seven.has(v);
  CHECK(none, "no non-member is found, below, between or above the members");
  const uint8_t hdr[8] = {0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0};
  CHECK(vxlan_vni(hdr) == 0x123456, "vxlan_vni reads bytes 4-6");
}

static void link_stats_parser() {
  uint64_t v = 0;
  const auto r64 = link_reply(5, 1234567890123ull, true, false);
  CHECK(parse_link_tx_dropped(r64.data(), r64.size(), 5, &v) && v == 1234567890123ull, "tx_dropped from IFLA_STATS64");
  const auto r32 = link_reply(5, 4242, false, true);
  CHECK(parse_link_tx_dropped(r32.data(), r32.size(), 5, &v) && v == 4242, "tx_dropped from IFLA_STATS");
  CHECK(!parse_link_tx_dropped(r64.data(), r64.size(), 6, &v), "another device's reply is not ours");
  const auto err = link_reply(5, 1, true, false, NLMSG_ERROR);
  CHECK(!parse_link_tx_dropped(err.data(), err.size(), 5, &v), "an error reply holds no counter");
  bool cut_ok = true;
  for (size_t n = 0; n < r64.size(); ++n) {
    std::vector<uint8_t> cut(r64.begin(), r64.begin() + static_cast<long>(n));  // exact size: ASan sees any overread
    if (parse_link_tx_dropped(cut.data(), cut.size(), 5, &v)) cut_ok = false;
  }
  CHECK(cut_ok, "no truncation of the reply parses");
  // A header that claims more than the buffer, and attributes that claim too much or too little.
  std::vector<uint8_t> lie = r64;
  const uint32_t big = static_cast<uint32_t>(lie.size() + 8);
  std::memcpy(&lie[0], &big, sizeof big);
  CHECK(!parse_link_tx_dropped(lie.data(), lie.size(), 5, &v), "message longer than the buffer refused");
  const size_t first_attr = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifinfomsg));
  for (uint16_t bad : {uint16_t{0}, uint16_t{3}, static_cast<uint16_t>(r64.size())}) {
    lie = r64;
    std::memcpy(&lie[first_attr], &bad, sizeof bad);
    CHECK(!parse_link_tx_dropped(lie.data(), lie.size(), 5, &v), "attribute length out of bounds refused");
  }
  // Random mutations of a good reply: never a crash or an out-of-bounds read.
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> m = i % 2 ? r64 : r32;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) m[rng() % m.size()] = static_cast<uint8_t>(rng());
    m.resize(rng() % (m.size() + 1));
    (void)parse_link_tx_dropped(m.data(), m.size(), 5, &v);
  }
  CHECK(true, "random link replies parsed without fault");
}

int main() {
  RouteTable* rt = table();
  if (!rt) return 1;
  checksum_matches_reference();
  segment_then_coalesce_round_trip();
  offloaded_checksums();
  vectors(*rt);
  gro_train_rules();
  header_only_segments();
  flow_hash_spreads();
  udp_zero_checksum();
  icmp_rfc1122();
  gso_plan_limits();
  coalescer_keeps_order();
  vni_set_membership();
  link_stats_parser();
  fuzz(*rt);
  delete rt;
  std::printf("native-check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
