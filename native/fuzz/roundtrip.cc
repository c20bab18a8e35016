// Transmit then receive: a TSO packet read from one host's TUN is segmented and encapsulated as
// TxPath does (tcp4_gso_plan, tcp4_gso_segment, tx_encap), each frame is received by the peer as
// RxPath does (rx_decap, complete_offloaded_csum, TcpCoalescer, a flush every 64 datagrams), and
// what the peer writes into its TUN must be the original data: every payload byte once, in order,
// with the original headers; a plain data packet (ACK, maybe PSH) comes out coalesced, one packet
// per receive pass. Input: as the tx target, [ctrl][virtio_net_hdr][packet].
#include "fuzz_common.h"

using namespace fuzz;

namespace {

constexpr size_t kBatch = 64;
constexpr uint32_t kSender = 0xc6120001;     // 198.18.0.1, owns 10.244.1.0/24 in fixed_routes()
constexpr uint32_t kReceiver = 0xc6120009;   // owns 10.244.9.0/24 (kLocalNet)

const RouteTable& sender_routes() {
  static const RouteTable* rt = [] {
    RouteSpec s{};
    s.net = kLocalNet;
    s.prefix_len = 24;
    s.peer_ip = kReceiver;
    s.port = 8472;
    std::memcpy(s.mac, kLocalMac, 6);  // the receiver's VTEP MAC
    std::string err;
    return RouteTable::build({s}, &err);
  }();
  return *rt;
}

struct Out {
  std::vector<uint8_t> vnet, pkt;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 + kVnetHdrLen) return 0;
  const uint8_t ctrl = data[0];
  const size_t len = size - 1 - kVnetHdrLen;
  if (len > kMaxPacket || len < 40) return 0;
  const bool vx = ctrl & 1;
  EncapConfig tx_cfg = config(vx);
  tx_cfg.local_net = 0x0af40100;
  const EncapConfig rx_cfg = config(vx);
  const size_t overhead = encap_overhead(tx_cfg.kind);

  static uint8_t* slot = new uint8_t[kSlotStride];
  static uint8_t* rbuf = new uint8_t[kBatch * kBufStride];
  static uint8_t* store = new uint8_t[TcpCoalescer::kStorage];
  uint8_t* pkt = slot + kHeadroom;
  std::memcpy(pkt - kVnetHdrLen, data + 1, kVnetHdrLen + len);
  // From 10.244.1.x (the sender's lease) to 10.244.9.x (the receiver's).
  store_be32(pkt + 12, 0x0af40100 | pkt[15]);
  store_be32(pkt + 16, kLocalNet | pkt[19]);
  fix_packet(pkt, len, static_cast<uint8_t>(ctrl >> 1));
  const VnetHdr vh = vnet_load(pkt - kVnetHdrLen);
  if ((vh.gso_type & ~kVnetGsoEcn) != kVnetGsoTcpV4) return 0;
  TcpGso plan;
  if (!tcp4_gso_plan(pkt, len, vh.gso_size, &plan)) return 0;
  const size_t stride = overhead + plan.hdr + plan.mss;
  if (plan.segments * stride > kSegArea) return 0;
  const std::vector<uint8_t> orig(pkt, pkt + len);
  uint8_t* seg = slot + kHeadroom + kMaxPacket;

  std::vector<Out> out;
  auto emit = [&](const uint8_t* v, const uint8_t* p, size_t n) {
    FUZZ_CHECK(n <= 65535 && ipv4_valid(p, n), "receiver writes valid IPv4");
    out.push_back(Out{std::vector<uint8_t>(v, v + kVnetHdrLen), std::vector<uint8_t>(p, p + n)});
  };
  TcpCoalescer gro(store);
  size_t in_pass = 0, passes = 0;
  for (size_t k = 0; k < plan.segments; ++k) {
    uint8_t* ip = seg + k * stride + overhead;
    const size_t sl = tcp4_gso_segment(pkt, plan, k, ip);
    TxResult tx;
    FUZZ_CHECK(tx_encap(tx_cfg, sender_routes(), ip, sl, &tx) == Drop::Count && tx.peer->ip == kReceiver, "segment routed");
    uint8_t* d = rbuf + in_pass * kBufStride + kHeadroom;
    std::memcpy(d, tx.frame, tx.frame_len);
    RxResult rx;
    const Drop dr = rx_decap(rx_cfg, fixed_routes(), kSender, d, tx.frame_len, &rx);
    FUZZ_CHECK(dr == Drop::Count, "the peer accepts every segment we send");
    uint8_t* inner = const_cast<uint8_t*>(rx.inner);
    // Segments carry full checksums: nothing to complete (a full checksum that happens to equal
    // the pseudo-header sum is "completed" to itself).
    const std::vector<uint8_t> before(inner, inner + rx.inner_len);
    complete_offloaded_csum(inner, rx.inner_len);
    FUZZ_CHECK(std::memcmp(inner, before.data(), rx.inner_len) == 0, "segments carry full checksums");
    gro.push(inner, rx.inner_len, emit);
    if (++in_pass == kBatch) {
      gro.flush(emit);
      in_pass = 0;
      ++passes;
    }
  }
  if (in_pass) {
    gro.flush(emit);
    ++passes;
  }

  // Every payload byte once, in order, under the original headers.
  const uint32_t seq0 = load_be32(orig.data() + plan.ihl + 4);
  size_t at = 0;
  for (const Out& o : out) {
    const uint8_t* p = o.pkt.data();
    const size_t n = o.pkt.size();
    FUZZ_CHECK(n >= plan.hdr && ihl_of(p) == plan.ihl, "same IP header length");
    FUZZ_CHECK(std::memcmp(p + 12, orig.data() + 12, plan.ihl - 12) == 0 && p[1] == orig[1] && p[8] == orig[8] &&
                   (p[6] & 0x40) == (orig[6] & 0x40),
               "same addresses, IP options, TOS, TTL, DF");
    const uint8_t* t = p + plan.ihl;
    const uint8_t* ot = orig.data() + plan.ihl;
    FUZZ_CHECK(std::memcmp(t, ot, 4) == 0 && std::memcmp(t + 8, ot + 8, 5) == 0 && std::memcmp(t + 14, ot + 14, 2) == 0 &&
                   std::memcmp(t + 18, ot + 18, plan.hdr - plan.ihl - 18) == 0,
               "same ports, ack, data offset, window, urgent pointer, options");
    FUZZ_CHECK(load_be32(t + 4) == seq0 + static_cast<uint32_t>(at), "data in order");
    FUZZ_CHECK(std::memcmp(p + plan.hdr, orig.data() + plan.hdr + at, n - plan.hdr) == 0, "the original payload");
    at += n - plan.hdr;
    if (o.vnet[1] != kVnetGsoNone) {
      const VnetHdr h = vnet_load(o.vnet.data());
      FUZZ_CHECK(h.gso_size == plan.mss && h.hdr_len == plan.hdr, "re-segmented as it was sent");
    }
  }
  FUZZ_CHECK(at == plan.payload, "every payload byte arrives once");
  const uint8_t flags = orig[plan.ihl + 13];
  // (A packet read with total length 0 may be 65536 bytes: one byte more than a coalesced packet.)
  const bool plain = plan.ihl == 20 && (flags & 0x10) && (flags & ~0x18) == 0 && len <= TcpCoalescer::kMaxSuper;
  if (plain) FUZZ_CHECK(out.size() == passes, "a plain data packet is coalesced into one packet per receive pass");
  if (plain) FUZZ_CHECK(out.back().pkt[plan.ihl + 13] == flags, "the coalesced packet's flags are the original's");
  return 0;
}
