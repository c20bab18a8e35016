// libFuzzer target: the real receive pass (native/passes.h RxPass). The input is one pass worth of
// received messages (claimed source peer, UDP_GRO size, bytes), handed to RxPass::message() exactly
// as recvmmsg returns them, each in its own region of a buffer of the real size (the coalescers hold
// pointers into it until the flush). What follows is the datapath's own code: GRO-train splitting,
// rx_decap, checksum completion, super-packet preparation, TCP and UDP coalescing, flush. Every
// packet the TUN queue would write (its tap) is checked. VXLAN inputs go to a pass serving two
// networks (VNI 1 and 2, control bit 0x40 picks one), each written packet checked against the
// network whose TUN it was written into.
#include <atomic>
#include <memory>

#include "fuzz_common.h"

#include "../passes.h"
#include "../tun_queue.h"
#include "../udp_socket.h"

namespace {

using namespace fuzz;

struct Seen {
  size_t max_dgram = 0;  // longest message handed to the pass
  std::vector<std::pair<const uint8_t*, size_t>> msgs;  // where each message lies
};

// One network's TUN: what may be written into it.
struct TapCtx {
  const Seen* seen = nullptr;
  uint32_t local_net;          // its lease: every inner destination lies inside
  const RouteTable* table;     // its peers: every inner source lies inside one of their leases
};

void check_write(void* ctx, const uint8_t* vh, const iovec* iov, size_t niov, size_t len) {
  const TapCtx* tap = static_cast<const TapCtx*>(ctx);
  const Seen* seen = tap->seen;
  std::vector<uint8_t> pkt;
  for (size_t i = 0; i < niov; ++i) {
    const uint8_t* b = static_cast<const uint8_t*>(iov[i].iov_base);
    pkt.insert(pkt.end(), b, b + iov[i].iov_len);  // ASan: every piece lies in a live buffer
  }
  FUZZ_CHECK(pkt.size() == len && len >= kIPv4MinHeader && len <= 65535, "written length matches its pieces");
  FUZZ_CHECK(ipv4_valid(pkt.data(), len), "a valid IPv4 packet of its length");
  FUZZ_CHECK((load_be32(pkt.data() + 16) & kLocalMask) == tap->local_net, "written into the TUN of the network whose lease it is for");
  FUZZ_CHECK(tap->table->lookup(load_be32(pkt.data() + 12)) != nullptr, "its source is a lease of one of that network's peers");
  const VnetHdr h = vnet_load(vh);
  if (h.gso_type == kVnetGsoNone) {
    FUZZ_CHECK(h.flags == 0, "a plain packet is never marked checksum-valid");
    FUZZ_CHECK(len <= seen->max_dgram, "a plain packet is never longer than the message it came in");
    if (niov == 1) {
      const uint8_t* b = static_cast<const uint8_t*>(iov[0].iov_base);
      bool inside = false;
      for (const auto& m : seen->msgs) inside = inside || (b >= m.first && b + len <= m.first + m.second);
      FUZZ_CHECK(inside, "a packet written as received lies inside one received message");
    }
    return;
  }
  FUZZ_CHECK(h.flags == kVnetFlagNeedsCsum && h.gso_size > 0 && h.hdr_len < len, "merged packet header consistent");
  const uint8_t type = h.gso_type & static_cast<uint8_t>(~kVnetGsoEcn);  // ECN: a super-packet with CWR
  FUZZ_CHECK(type == kVnetGsoTcpV4 || (type == kVnetGsoUdpL4 && h.gso_type == type), "a GSO type we write");
  FUZZ_CHECK(pkt[9] == (type == kVnetGsoTcpV4 ? 6 : 17), "GSO type matches the protocol");
}

// Makes the datagram at `d` (len bytes) pass the cheap checks, as steered by `ctrl`.
void fix_datagram(const EncapConfig& cfg, uint8_t* d, size_t len, uint8_t ctrl) {
  const size_t hdr = encap_overhead(cfg.kind);
  if (len < hdr) return;
  if (cfg.kind == EncapKind::Vxlan && (ctrl & 0x80)) {
    d[0] = 0x08;
    d[4] = 0;
    d[5] = 0;
    d[6] = (ctrl & 0x40) ? 2 : 1;  // VXLAN: network 1 or network 2
    std::memcpy(d + 8, kLocalMac, 6);
    store_be16(d + 20, kEtherTypeIPv4);
  }
  fix_packet(d + hdr, len - hdr, ctrl);
}

// Network 2 of the VXLAN configuration (VNI 2): its own lease 10.244.8.0/24 and its own peers,
// 198.18.0.1-4 with their /24s only. Datagrams for it are checked against these alone, so a
// datagram valid for network 1 (e.g. from 198.18.0.5-7, or to 10.244.9.0/24) never reaches it.
constexpr uint32_t kLocalNet2 = 0x0af40800;
const RouteTable& second_routes() {
  static const RouteTable* rt = [] {
    std::vector<RouteSpec> specs;
    for (uint32_t i = 1; i <= 4; ++i) {
      RouteSpec r{};
      r.net = 0x0af40000u | (i << 8);
      r.prefix_len = 24;
      r.peer_ip = 0xc6120000u | i;
      r.port = 8472;
      r.slot = 100 + i;
      specs.push_back(r);
    }
    std::string err;
    const RouteTable* t = RouteTable::build(specs, &err);
    if (!t) std::abort();
    return t;
  }();
  return *rt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<uint8_t[]> buf(new uint8_t[UdpRecvBatch::kBufSize * 4]);
  static const std::vector<uint16_t> ports{8472, 40001};
  static std::atomic<bool> stopping{false};
  Reader in(data, size);
  const EncapConfig cfg = config(in.u8() & 1);
  // One pass state per configuration, reused run after run as a worker reuses its own (every
  // run ends with a flush, so nothing is held from one run to the next).
  // udp: one network (the single-network pass). VXLAN: two networks on one pass, demultiplexed
  // by VNI, each with its own TUN queue (coalescers) and peers, sharing the read buffers.
  static CounterBlock ctr;
  static CounterBlock ctr2(&ctr);
  static const EncapConfig cfgs[2] = {config(false), config(true)};
  static const EncapConfig cfg2 = [] {
    EncapConfig c = config(true);
    c.vni = 2;
    c.local_net = kLocalNet2;
    return c;
  }();
  static const PassEnv envs[2] = {{cfgs[0], 16, 1450, 0, 0x0af40900, ports, -1, stopping},
                                  {cfgs[1], 16, 1450, 0, 0x0af40900, ports, -1, stopping}};
  static const PassEnv env2{cfg2, 16, 1450, 0, kLocalNet2, ports, -1, stopping};
  static TunQueue tun(-1, true, 16, &ctr);
  static TunBuffers shared(16);
  static TunQueue tun1(-1, true, 16, &ctr, &shared);
  static TunQueue tun2(-1, true, 16, &ctr2, &shared);
  static RxNet net1{&envs[1], &fixed_routes(), &tun1, &ctr, false};
  static RxNet net2{&env2, &second_routes(), &tun2, &ctr2, false};
  static RxNets nets = [] {
    RxNets n;
    n.add(&net1);
    n.add(&net2);
    return n;
  }();
  static std::unique_ptr<UdpSocket> sock = UdpSocket::unbound(true);
  static RxPass udp_rx(envs[0], *sock, tun, ctr);
  static RxPass vxlan_rx(EncapKind::Vxlan, 16, *sock, ctr, nets);
  const bool vxlan = cfg.kind == EncapKind::Vxlan;
  Seen seen;
  TapCtx tap1{&seen, kLocalNet, &fixed_routes()};
  TapCtx tap2{&seen, kLocalNet2, &second_routes()};
  tun.set_tap(check_write, &tap1);
  tun1.set_tap(check_write, &tap1);
  tun2.set_tap(check_write, &tap2);
  for (int m = 0; m < 4 && in.left() > 6; ++m) {
    const uint32_t src = peer_ip(in.u8());
    const uint8_t ctrl = in.u8();
    size_t seg = in.u16();
    size_t len = 0;
    const uint8_t* p = in.take(in.u16(), &len);
    uint8_t* d = buf.get() + m * UdpRecvBatch::kBufSize;
    if (len) std::memcpy(d, p, len);
    if (seg == 0 || seg > len) seg = len;
    // A train: every datagram gets the same fix-ups, so coalescing is reached.
    for (size_t off = 0; off < len && seg; off += seg) fix_datagram(cfg, d + off, std::min(seg, len - off), ctrl);
    seen.max_dgram = std::max(seen.max_dgram, len);
    seen.msgs.emplace_back(d, len);
    const UdpRecvBatch::Msg msg{d, len, seg, src, false};
    if (vxlan) {
      vxlan_rx.message(msg);
    } else {
      udp_rx.message(fixed_routes(), msg);
    }
  }
  tun.flush();
  vxlan_rx.flush();
  return 0;
}
