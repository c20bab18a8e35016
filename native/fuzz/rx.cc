// Receive path: datagrams from peers -> rx_decap -> complete_offloaded_csum -> tcp4_super_prepare
// (inner packet above the MTU) or TcpCoalescer::push, TcpCoalescer::flush at the end of each pass,
// exactly as RxPath::inner does, with the datapath's buffers (64 KiB + headroom per message, the
// coalescer's 8 x 64 KiB storage). Every packet that would be written into the TUN is checked.
//
// Input: [config: bit 0 VXLAN, bits 1-2 MTU, bit 3 no destination check, bit 4 VNI 0xffffff]
// then records [ctrl][meta][reps][len:2][bytes], see below. A record is one
// datagram, repeated `reps` times as a train of consecutive TCP segments (sequence numbers
// advanced, checksums re-fixed), so short inputs still drive the coalescer to its limits.
#include <map>
#include <tuple>

#include "fuzz_common.h"

using namespace fuzz;

namespace {

constexpr size_t kBatch = 64;  // DatapathOptions::batch default
constexpr size_t kMtus[4] = {1450, 576, 68, 9000};

// Inner source subnets of the peers behind peer_ip(i) (the stranger gets a peer's subnet).
constexpr uint32_t kSrcNet[8] = {0x0af40100, 0x0af40200, 0x0af40300, 0x0af40400,
                                 0x0af50000, 0x0af40680, 0x0af40000, 0x0af40100};
constexpr uint32_t kSrcMask[8] = {0xffffff00, 0xffffff00, 0xffffff00, 0xffffff00,
                                  0xffff0000, 0xffffff80, 0xffff0000, 0xffffff00};

// ctrl: bits 0-4 fix_packet() on the inner packet, bit 5 a valid VXLAN + Ethernet header,
// bit 6 inner addresses inside the peer's and our subnets, bit 7 ends the pass (flush) after it.
constexpr uint8_t kFixEncap = 1 << 5, kFixAddrs = 1 << 6, kEndPass = 1 << 7;

// FUZZ_TRACE=1 build-fuzz/rx FILE prints every packet written into the TUN.
bool trace() {
  static const bool on = std::getenv("FUZZ_TRACE") != nullptr;
  return on;
}

using FlowSeq = std::tuple<uint32_t, uint32_t, uint16_t, uint16_t, uint32_t>;

struct Harness {
  EncapConfig cfg;
  size_t mtu = 1450;
  size_t overhead = 0;
  uint8_t* bufs = nullptr;    // kBatch messages of kBufStride
  uint8_t* store = nullptr;   // TcpCoalescer::kStorage
  size_t lens[kBatch] = {};
  size_t n = 0;               // messages in this pass
  // TCP segments of this pass whose checksum verified (as received, or completed by us), by
  // flow and sequence number: every coalesced super-packet must be made of exactly these.
  std::map<FlowSeq, std::vector<std::vector<uint8_t>>> verified;
  // Every packet handed to the coalescer (or written as a super-packet) in this pass, in order:
  // each must come out exactly once, and those of one TCP flow in the order they went in.
  struct Pushed {
    std::vector<uint8_t> bytes;
    bool consumed = false;
  };
  std::vector<Pushed> pushed;
  std::map<std::tuple<uint32_t, uint32_t, uint16_t, uint16_t>, size_t> last_out;  // flow -> last id + 1

  // The TCP flow of a packet, when it has ports (TCP, not a non-first fragment).
  static bool flow_of(const uint8_t* p, size_t len, std::tuple<uint32_t, uint32_t, uint16_t, uint16_t>* f) {
    const size_t ihl = ihl_of(p);
    if (p[9] != kTcp || ihl < 20 || ihl + 4 > len || (load_be16(p + 6) & 0x1fff) != 0) return false;
    *f = {load_be32(p + 12), load_be32(p + 16), load_be16(p + ihl), load_be16(p + ihl + 2)};
    return true;
  }
  void record_push(const uint8_t* p, size_t len) { pushed.push_back(Pushed{std::vector<uint8_t>(p, p + len), false}); }
  // Marks the oldest unconsumed pushed packet that `match` accepts as emitted, checking flow order.
  template <typename Match>
  void consume(Match&& match, const char* what) {
    for (size_t id = 0; id < pushed.size(); ++id) {
      Pushed& q = pushed[id];
      if (q.consumed || !match(q.bytes)) continue;
      q.consumed = true;
      std::tuple<uint32_t, uint32_t, uint16_t, uint16_t> f;
      if (flow_of(q.bytes.data(), q.bytes.size(), &f)) {
        size_t& last = last_out[f];
        FUZZ_CHECK(id + 1 > last, "packets of one TCP flow leave in the order they arrived");
        last = id + 1;
      }
      return;
    }
    FUZZ_CHECK(false, what);
  }
  void check_all_out() {
    for (const Pushed& q : pushed) FUZZ_CHECK(q.consumed, "every packet handed to the coalescer comes out");
  }

  uint8_t* msg(size_t i) { return bufs + i * kBufStride; }

  bool inside_pass_buffers(const uint8_t* p, size_t len) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* lo = msg(i) + kHeadroom;
      if (p >= lo && p <= lo + lens[i] && len <= static_cast<size_t>(lo + lens[i] - p)) return true;
    }
    return false;
  }

  void check_tso_header(const uint8_t* vh, const uint8_t* pkt, size_t len) {
    const VnetHdr h = vnet_load(vh);
    FUZZ_CHECK((h.gso_type & ~kVnetGsoEcn) == kVnetGsoTcpV4, "only TCPv4 GSO is written");
    FUZZ_CHECK(h.flags == kVnetFlagNeedsCsum, "a GSO packet carries NEEDS_CSUM");
    FUZZ_CHECK(pkt[9] == kTcp && (load_be16(pkt + 6) & 0x3fff) == 0, "GSO packet is unfragmented TCP");
    const size_t ihl = ihl_of(pkt);
    FUZZ_CHECK(h.csum_start == ihl && h.csum_offset == 16, "csum_start/offset point at the TCP checksum");
    FUZZ_CHECK(ihl + 20 <= len, "TCP header present");
    const size_t hdr = ihl + static_cast<size_t>(pkt[ihl + 12] >> 4) * 4;
    FUZZ_CHECK(h.hdr_len == hdr && hdr < len, "hdr_len is the IP + TCP header, payload follows");
    FUZZ_CHECK(h.gso_size > 0, "gso_size > 0");
    FUZZ_CHECK(load_be16(pkt + ihl + 16) == pseudo(pkt, len - ihl, kTcp), "checksum field holds the pseudo-header sum");
  }

  // The coalescer's output (and the direct writes below go through the same packet checks).
  void emitted(const uint8_t* vh, const uint8_t* pkt, size_t len, bool super = false) {
    if (trace()) {
      std::fprintf(stderr, "rx: emit %zu bytes, gso_type %u gso_size %u%s\n", len, vh[1], vnet_load(vh).gso_size,
                   super ? " (super-packet received whole)" : "");
    }
    FUZZ_CHECK(len >= kIPv4MinHeader && len <= 65535, "emitted length within IPv4 limits");
    const bool from_store = vh >= store && vh < store + TcpCoalescer::kStorage;
    if (from_store) {
      const size_t off = static_cast<size_t>(vh - store);
      const size_t per = kVnetHdrLen + TcpCoalescer::kMaxSuper;
      FUZZ_CHECK(off % per == 0 && pkt == vh + kVnetHdrLen && len <= TcpCoalescer::kMaxSuper, "held packet within its flow buffer");
    } else {
      FUZZ_CHECK(inside_pass_buffers(pkt, len), "direct packet within a received datagram of this pass");
    }
    FUZZ_CHECK(ipv4_valid(pkt, len), "emitted packet is a valid IPv4 packet of its length");
    if (vh[1] == kVnetGsoNone) {
      static const uint8_t zero[kVnetHdrLen] = {};
      FUZZ_CHECK(std::memcmp(vh, zero, kVnetHdrLen) == 0, "non-GSO packet goes with an all-zero vnet header");
      consume([&](const std::vector<uint8_t>& b) { return b.size() == len && std::memcmp(b.data(), pkt, len) == 0; },
              "a non-GSO packet out is one that went in, unchanged");
      return;
    }
    check_tso_header(vh, pkt, len);
    if (super) {  // a super-packet received whole: its header checked by the caller
      consume([&](const std::vector<uint8_t>& b) { return b.size() == len && std::memcmp(b.data(), pkt, len) == 0; },
              "a super-packet out is the one that went in");
      return;
    }
    FUZZ_CHECK(from_store, "only coalesced packets come out of the coalescer as GSO");
    // Provenance: each gso_size chunk is one verified segment of this flow, in sequence.
    const VnetHdr h = vnet_load(vh);
    const uint32_t seq0 = load_be32(pkt + 24);
    for (size_t off = h.hdr_len; off < len; off += h.gso_size) {
      const size_t chunk = std::min<size_t>(h.gso_size, len - off);
      const FlowSeq key{load_be32(pkt + 12), load_be32(pkt + 16), load_be16(pkt + 20), load_be16(pkt + 22),
                        seq0 + static_cast<uint32_t>(off - h.hdr_len)};
      bool found = false;
      auto it = verified.find(key);
      if (it != verified.end()) {
        for (const auto& v : it->second) found = found || (v.size() == chunk && std::memcmp(v.data(), pkt + off, chunk) == 0);
      }
      FUZZ_CHECK(found, "every chunk of a coalesced packet is a verified segment received in this pass");
      consume(
          [&](const std::vector<uint8_t>& b) {
            if (b.size() < 40 || ihl_of(b.data()) != 20) return false;
            const size_t bh = 20 + static_cast<size_t>(b[32] >> 4) * 4;
            return bh == h.hdr_len && b.size() - bh == chunk && std::memcmp(b.data() + 12, pkt + 12, 12) == 0 &&
                   load_be32(b.data() + 24) == std::get<4>(key) && std::memcmp(b.data() + bh, pkt + off, chunk) == 0;
          },
          "each chunk of a coalesced packet is a segment that went in, once");
    }
  }

  struct Emit {
    Harness* h;
    void operator()(const uint8_t* vh, const uint8_t* pkt, size_t len) const { h->emitted(vh, pkt, len); }
  };

  // RxPath::inner.
  void inner(TcpCoalescer& gro, uint32_t src, uint8_t* dgram, size_t len) {
    RxResult res;
    const Drop d = rx_decap(cfg, fixed_routes(), src, dgram, len, &res);
    if (d != Drop::Count) {
      FUZZ_CHECK(d < Drop::Count, "a drop reason");
      return;
    }
    FUZZ_CHECK(res.peer && res.peer->ip == src, "peer is the sender");
    FUZZ_CHECK(res.inner == dgram + overhead && res.inner_len <= len - overhead, "inner packet within the datagram");
    FUZZ_CHECK(ipv4_valid(res.inner, res.inner_len), "decapsulated packet is valid IPv4");
    FUZZ_CHECK((load_be32(res.inner + 12) & res.peer->mask) == res.peer->net, "inner source inside the peer's subnet");
    if (cfg.local_mask) FUZZ_CHECK((load_be32(res.inner + 16) & kLocalMask) == kLocalNet, "inner destination inside our subnet");
    if (cfg.kind == EncapKind::Vxlan) {
      const uint32_t vni = (static_cast<uint32_t>(dgram[4]) << 16) | (static_cast<uint32_t>(dgram[5]) << 8) | dgram[6];
      FUZZ_CHECK((dgram[0] & 0x08) && vni == cfg.vni, "VXLAN I flag and VNI checked");
      FUZZ_CHECK(std::memcmp(dgram + 8, kLocalMac, 6) == 0 && load_be16(dgram + 20) == kEtherTypeIPv4, "MAC, EtherType checked");
    }
    uint8_t* pkt = const_cast<uint8_t*>(res.inner);
    const size_t plen = res.inner_len;
    const std::vector<uint8_t> before(pkt, pkt + plen);
    const L4Csum c = complete_offloaded_csum(pkt, plen);
    const bool completed = c == L4Csum::Completed;
    if (completed) {
      FUZZ_CHECK(pkt[9] == kTcp || pkt[9] == kUdp, "only TCP/UDP completed");
      FUZZ_CHECK(l4_csum_ok(pkt, plen, pkt[9]), "a completed checksum verifies");
      if (pkt[9] == kUdp) FUZZ_CHECK(load_be16(pkt + ihl_of(pkt) + 6) != 0, "completed UDP checksum is never 0 (RFC 768)");
      const size_t field = ihl_of(pkt) + (pkt[9] == kTcp ? 16 : 6);
      FUZZ_CHECK(std::memcmp(pkt, before.data(), field) == 0 &&
                     std::memcmp(pkt + field + 2, before.data() + field + 2, plen - field - 2) == 0,
                 "completion changes only the checksum field");
    } else {
      FUZZ_CHECK(std::memcmp(pkt, before.data(), plen) == 0, "a packet not completed is unchanged");
    }
    const bool tcp_ok = pkt[9] == kTcp && plen >= ihl_of(pkt) + 20 && l4_csum_ok(pkt, plen, kTcp);
    if (tcp_ok && ihl_of(pkt) == 20 && plen >= 40 && (load_be16(pkt + 6) & 0x3fff) == 0) {
      const size_t hdr = 20 + static_cast<size_t>(pkt[32] >> 4) * 4;
      if (hdr <= plen) {
        verified[FlowSeq{load_be32(pkt + 12), load_be32(pkt + 16), load_be16(pkt + 20), load_be16(pkt + 22), load_be32(pkt + 24)}]
            .emplace_back(pkt + hdr, pkt + plen);
      }
    }
    uint8_t vh[kVnetHdrLen];
    if (plen > mtu) {
      const std::vector<uint8_t> pre(pkt, pkt + plen);
      if (tcp4_super_prepare(pkt, plen, mtu, completed, vh)) {
        FUZZ_CHECK(tcp_ok, "a super-packet goes on as TSO only with a verified TCP checksum");
        FUZZ_CHECK(plen <= 65535 && ipv4_valid(pkt, plen), "super-packet is valid IPv4");
        check_tso_header(vh, pkt, plen);
        const VnetHdr h = vnet_load(vh);
        FUZZ_CHECK(h.hdr_len + h.gso_size == mtu, "segments of the super-packet fit the MTU");
        FUZZ_CHECK(((h.gso_type & kVnetGsoEcn) != 0) == ((pkt[ihl_of(pkt) + 13] & 0x80) != 0), "ECN flag iff CWR");
        record_push(pkt, plen);
        gro.flush_flow_of(pkt, plen, Emit{this});
        emitted(vh, pkt, plen, true);
        return;
      }
      FUZZ_CHECK(std::memcmp(pkt, pre.data(), plen) == 0, "a refused super-packet is unchanged");
    }
    record_push(pkt, plen);
    gro.push(pkt, plen, Emit{this}, completed);
  }
};

Harness* harness() {
  static Harness* h = [] {
    auto* x = new Harness();
    x->bufs = new uint8_t[kBatch * kBufStride];
    x->store = new uint8_t[TcpCoalescer::kStorage];
    return x;
  }();
  return h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = *harness();
  Reader in(data, size);
  const uint8_t conf = in.u8();
  h.cfg = config(conf & 1);
  h.mtu = kMtus[(conf >> 1) & 3];
  if (conf & 0x08) h.cfg.local_mask = 0;  // destination check off (as with no lease mask)
  if (conf & 0x10) h.cfg.vni = 0xffffff;
  h.overhead = encap_overhead(h.cfg.kind);
  h.verified.clear();
  h.pushed.clear();
  h.last_out.clear();
  TcpCoalescer gro(h.store);  // one per worker, reused pass after pass
  h.n = 0;
  unpoison(h.bufs, kBatch * kBufStride);
  std::vector<uint32_t> srcs;
  bool more = in.left() > 0;
  while (more) {
    const uint8_t ctrl = in.u8();
    const uint8_t meta = in.u8();
    const size_t reps = 1 + in.u8() % 64;
    size_t len = 0;
    const uint8_t* bytes = in.take(std::min<size_t>(in.u16(), kMaxPacket), &len);
    more = in.left() > 0;
    for (size_t r = 0; r < reps && h.n < kBatch; ++r) {
      uint8_t* m = h.msg(h.n) + kHeadroom;
      std::memcpy(m, bytes, len);
      if ((ctrl & kFixEncap) && h.cfg.kind == EncapKind::Vxlan && len >= kVxlanHeader + kEthHeader) {
        std::memset(m, 0, kVxlanHeader);
        m[0] = 0x08;
        m[6] = 1;
        std::memcpy(m + kVxlanHeader, kLocalMac, 6);
        store_be16(m + kVxlanHeader + 12, kEtherTypeIPv4);
      }
      if (len >= h.overhead + kIPv4MinHeader) {
        uint8_t* ip = m + h.overhead;
        const size_t ilen = len - h.overhead;
        const size_t pi = meta & 7;
        if (ctrl & kFixAddrs) {
          store_be32(ip + 12, (load_be32(ip + 12) & ~kSrcMask[pi]) | kSrcNet[pi]);
          store_be32(ip + 16, (load_be32(ip + 16) & ~kLocalMask) | kLocalNet);
        }
        const size_t ihl = ihl_of(ip);
        if (r > 0 && ip[9] == kTcp && ihl >= 20 && ihl + 20 <= ilen) {  // next segment of the train
          const size_t thl = static_cast<size_t>(ip[ihl + 12] >> 4) * 4;
          const size_t pay = ihl + thl <= ilen ? ilen - ihl - thl : 0;
          store_be32(ip + ihl + 4, load_be32(ip + ihl + 4) + static_cast<uint32_t>(r * pay));
          store_be16(ip + 4, static_cast<uint16_t>(load_be16(ip + 4) + r));
        }
        fix_packet(ip, ilen, ctrl);
      }
      h.lens[h.n] = len;
      srcs.push_back(peer_ip(meta));
      ++h.n;
    }
    if ((ctrl & kEndPass) || h.n == kBatch || !more) {
      // One recvmmsg worth: poison what was not received, then handle and flush.
      for (size_t i = 0; i < h.n; ++i) {
        poison(h.msg(i), kHeadroom);
        poison(h.msg(i) + kHeadroom + h.lens[i], kMaxPacket - h.lens[i]);
      }
      for (size_t i = 0; i < h.n; ++i) h.inner(gro, srcs[i], h.msg(i) + kHeadroom, h.lens[i]);
      gro.flush(Harness::Emit{&h});
      h.check_all_out();
      h.pushed.clear();
      h.last_out.clear();
      unpoison(h.bufs, kBatch * kBufStride);
      h.n = 0;
      srcs.clear();
      h.verified.clear();
    }
  }
  return 0;
}
