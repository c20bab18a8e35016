// Transmit then receive through the real passes: a TSO packet read from one host's TUN goes through
// TxPass (cut into segments, encapsulated, appended to GSO messages), each message is received by
// the peer's RxPass as UDP GRO hands it over (GRO-train splitting, rx_decap, checksum completion,
// coalescing, a flush per pass), and what the peer writes into its TUN must be the original data:
// every payload byte once, in order, with the original headers; a plain data packet (ACK, maybe PSH)
// comes out coalesced. Input: as the tx target, [ctrl][virtio_net_hdr][packet].
#include <atomic>
#include <memory>

#include "fuzz_common.h"

#include "../passes.h"
#include "../tun_queue.h"
#include "../udp_socket.h"

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

// What the sender's send batches would hand to sendmmsg: each message's bytes and datagram size.
struct Wire {
  std::vector<std::pair<std::vector<uint8_t>, size_t>> msgs;
};

int capture(void* ctx, mmsghdr* msgs, unsigned n) {
  Wire* w = static_cast<Wire*>(ctx);
  for (unsigned i = 0; i < n; ++i) {
    const msghdr& mh = msgs[i].msg_hdr;
    std::vector<uint8_t> all;
    for (size_t k = 0; k < mh.msg_iovlen; ++k) {
      const uint8_t* b = static_cast<const uint8_t*>(mh.msg_iov[k].iov_base);
      all.insert(all.end(), b, b + mh.msg_iov[k].iov_len);
    }
    size_t seg = all.size();
    if (mh.msg_controllen) {
      uint16_t v;
      std::memcpy(&v, CMSG_DATA(CMSG_FIRSTHDR(&mh)), 2);
      seg = v;
    }
    w->msgs.emplace_back(std::move(all), seg);
  }
  return static_cast<int>(n);
}

void collect(void* ctx, const uint8_t* vh, const iovec* iov, size_t niov, size_t len) {
  std::vector<Out>* out = static_cast<std::vector<Out>*>(ctx);
  Out o{std::vector<uint8_t>(vh, vh + kVnetHdrLen), {}};
  for (size_t i = 0; i < niov; ++i) {
    const uint8_t* b = static_cast<const uint8_t*>(iov[i].iov_base);
    o.pkt.insert(o.pkt.end(), b, b + iov[i].iov_len);
  }
  FUZZ_CHECK(o.pkt.size() == len && len <= 65535 && ipv4_valid(o.pkt.data(), len), "receiver writes valid IPv4");
  out->push_back(std::move(o));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 + kVnetHdrLen) return 0;
  const uint8_t ctrl = data[0];
  const size_t len = size - 1 - kVnetHdrLen;
  if (len > TunQueue::kReadCap - kVnetHdrLen - 1 || len < 40) return 0;
  const bool vx = ctrl & 1;
  EncapConfig tx_cfg = config(vx);
  tx_cfg.local_net = 0x0af40100;
  const EncapConfig rx_cfg = config(vx);
  static const std::vector<uint16_t> ports{8472, 40001};
  static std::atomic<bool> stopping{false};

  static uint8_t* slot = new uint8_t[TunQueue::kSlotStride];
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
  const std::vector<uint8_t> orig(pkt, pkt + len);

  // The sender: the real transmit pass, its sendmmsg captured.
  CounterBlock tx_ctr, rx_ctr;
  const PassEnv tx_env{tx_cfg, kBatch, 1450, 0, 0x0af40100, ports, -1, stopping};
  TunQueue tx_tun(-1, true, kBatch, &tx_ctr);
  std::unique_ptr<UdpSocket> sock = UdpSocket::unbound(ctrl & 0x80);
  UdpSocket* socks[1] = {sock.get()};
  TxPass tx(tx_env, tx_tun, socks, 1, tx_ctr, 100);
  Wire wire;
  tx.set_sink(capture, &wire);
  TunPacket tp{pkt, len, vh, false};
  tx.handle(sender_routes(), tp);
  tx.send_all();
  FUZZ_CHECK(!wire.msgs.empty(), "a plannable TSO packet is sent");

  // The receiver: the real receive pass, one message per sendmmsg message (as UDP GRO delivers a
  // GSO send over a veth), up to kBatch per pass.
  const PassEnv rx_env{rx_cfg, kBatch, 1450, 0, kLocalNet, ports, -1, stopping};
  TunQueue rx_tun(-1, true, kBatch, &rx_ctr);
  std::vector<Out> out;
  rx_tun.set_tap(collect, &out);
  std::unique_ptr<UdpSocket> rsock = UdpSocket::unbound(true);
  RxPass rx(rx_env, *rsock, rx_tun, rx_ctr);
  size_t passes = 0;
  for (size_t i = 0; i < wire.msgs.size(); i += kBatch, ++passes) {
    for (size_t j = i; j < std::min(wire.msgs.size(), i + kBatch); ++j) {
      auto& m = wire.msgs[j];
      rx.message(fixed_routes(), UdpRecvBatch::Msg{m.first.data(), m.first.size(), m.second, kSender, false});
    }
    rx_tun.flush();
  }
  for (size_t d = 0; d < static_cast<size_t>(Drop::Count); ++d) {
    FUZZ_CHECK(rx_ctr.get(static_cast<size_t>(Ctr::Count) + d) == 0, "the peer accepts every segment we send");
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
      // Coalesced: cut as it was sent; a segment longer than the receiver's MTU goes on whole as
      // TSO, cut to that MTU.
      FUZZ_CHECK(h.hdr_len == plan.hdr && (h.gso_size == plan.mss || (plan.hdr + plan.mss > 1450 && h.gso_size == 1450 - plan.hdr)),
                 "re-segmented as it was sent, or to the receiver's MTU");
    }
  }
  FUZZ_CHECK(at == plan.payload, "every payload byte arrives once");
  const uint8_t flags = orig[plan.ihl + 13];
  // (A packet read with total length 0 may be 65536 bytes: one byte more than a coalesced packet.)
  const bool plain = plan.ihl == 20 && (flags & 0x10) && (flags & ~0x18) == 0 && len <= TcpCoalescer::kMaxSuper;
  // At most 64 segments merge into one packet, and a pass ends a merge.
  const size_t most = passes * ((plan.segments + TcpCoalescer::kMaxSegs - 1) / TcpCoalescer::kMaxSegs + 1);
  // (Segments longer than the receiver's MTU go on one by one as TSO packets instead.)
  if (plain && plan.hdr + plan.mss <= 1450) {
    if (out.size() > most) std::fprintf(stderr, "roundtrip: %zu segments of %zu, %zu passes, %zu written\n", plan.segments, plan.mss, passes, out.size());
    FUZZ_CHECK(out.size() <= most, "a plain data packet is coalesced");
  }
  if (plain) FUZZ_CHECK(out.back().pkt[plan.ihl + 13] == flags, "the coalesced packet's flags are the original's");
  return 0;
}
