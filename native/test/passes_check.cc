// Sanitizer harness for the worker passes (npm run test:sanitize): TxPass and RxPass with the real
// TunQueue and send/receive batches, their output caught before any syscall (TunQueue tap,
// UdpSendBatch sink, sockets without fds). Regression tests for the
// datapath defects: GSO stride hang, low-MSS TSO, truncated reads, forged GRO trains, loops.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../encap.h"
#include "../offload.h"
#include "../packet.h"
#include "../passes.h"
#include "../route_table.h"
#include "../tun_queue.h"
#include "../udp_socket.h"
#include "packets.h"

using namespace vxnet;
using namespace vxnet::testpkt;


namespace {

constexpr uint32_t kPeerIp = 0xc6120002;   // 198.18.0.2
constexpr uint32_t kTunIp = 0x0af40100;    // 10.244.1.0
constexpr uint32_t kLocal = 0x0af40102;    // a container here
constexpr uint32_t kRemote = 0x0af40202;   // a container behind the peer

uint32_t pseudo(const uint8_t* ip, size_t l4, uint8_t proto) {
  uint8_t ph[12];
  std::memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  store_be16(ph + 10, static_cast<uint16_t>(l4));
  return csum_partial(ph, 12);
}

bool l4_ok(const uint8_t* ip, size_t len) {
  size_t tot = 0;
  if (!ipv4_header_ok(ip, len, &tot) || tot != len) return false;
  return csum_partial(ip + 20, len - 20, pseudo(ip, len - 20, ip[9])) == 0xffff;
}

// What the sink saw: every datagram, contiguous, with the message it came in.
struct Sent {
  std::vector<std::vector<uint8_t>> dgrams;
  size_t messages = 0;
  bool shape_ok = true;  // every message: <= 64 datagrams, <= 65507 bytes, sizes as UDP_SEGMENT cuts
};

int sink(void* ctx, mmsghdr* msgs, unsigned n) {
  Sent* s = static_cast<Sent*>(ctx);
  for (unsigned i = 0; i < n; ++i) {
    const msghdr& mh = msgs[i].msg_hdr;
    std::vector<uint8_t> all;
    for (size_t k = 0; k < mh.msg_iovlen; ++k) {
      const uint8_t* b = static_cast<const uint8_t*>(mh.msg_iov[k].iov_base);
      all.insert(all.end(), b, b + mh.msg_iov[k].iov_len);  // ASan checks every piece
    }
    size_t seg = all.size();
    for (const cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(const_cast<msghdr*>(&mh), const_cast<cmsghdr*>(cm))) {
      uint16_t v;
      std::memcpy(&v, CMSG_DATA(cm), 2);
      seg = v;
    }
    if (seg == 0 || all.size() > kGsoMaxBytes || (all.size() + seg - 1) / seg > kGsoMaxSegs) s->shape_ok = false;
    for (size_t off = 0; off < all.size(); off += seg) {
      s->dgrams.emplace_back(all.begin() + off, all.begin() + std::min(all.size(), off + seg));
    }
    ++s->messages;
  }
  return static_cast<int>(n);
}

struct Written {
  std::vector<std::vector<uint8_t>> pkts;
  std::vector<VnetHdr> vhs;
};

void tap(void* ctx, const uint8_t* vh, const iovec* iov, size_t niov, size_t len) {
  Written* w = static_cast<Written*>(ctx);
  std::vector<uint8_t> p;
  for (size_t i = 0; i < niov; ++i) {
    const uint8_t* b = static_cast<const uint8_t*>(iov[i].iov_base);
    p.insert(p.end(), b, b + iov[i].iov_len);
  }
  if (p.size() != len) p.clear();
  w->pkts.push_back(p);
  w->vhs.push_back(vnet_load(vh));
}

struct Bed {
  EncapConfig cfg;
  RouteTable* rt = nullptr;
  std::vector<uint16_t> own_ports{8472};
  std::atomic<bool> stopping{false};
  CounterBlock ctr;
  std::vector<std::unique_ptr<UdpSocket>> socks;
  std::vector<UdpSocket*> sock_ptrs;
  std::unique_ptr<PassEnv> env;

  Bed() {
    cfg.kind = EncapKind::Vxlan;
    cfg.vni = 1;
    std::memset(cfg.local_mac, 0xaa, 6);
    cfg.local_net = 0x0af40100;
    cfg.local_mask = 0xffffff00;
    RouteSpec r{};
    r.net = 0x0af40200;
    r.prefix_len = 24;
    r.peer_ip = kPeerIp;
    r.port = 8472;
    r.slot = 3;
    std::memset(r.mac, 0xbb, 6);
    std::string err;
    rt = RouteTable::build({r}, &err);
    for (int k = 0; k < 2; ++k) {
      socks.push_back(UdpSocket::unbound(true));
      own_ports.push_back(static_cast<uint16_t>(40001 + k));  // as if bound there
      sock_ptrs.push_back(socks.back().get());
    }
    env.reset(new PassEnv{cfg, 16, 1450, 0, kTunIp, own_ports, -1, stopping});
  }
  ~Bed() { delete rt; }
  uint64_t drops(Drop d) const { return ctr.get(static_cast<size_t>(Ctr::Count) + static_cast<size_t>(d)); }
};

// A TUN read slot: headroom, then the packet.
struct Slot {
  std::vector<uint8_t> buf;
  TunPacket p;
  Slot(const std::vector<uint8_t>& pkt, const VnetHdr& vh) : buf(kHeadroom + pkt.size()) {
    std::memcpy(&buf[kHeadroom], pkt.data(), pkt.size());
    p.pkt = &buf[kHeadroom];
    p.len = pkt.size();
    p.vh = vh;
    p.truncated = false;
  }
};

VnetHdr tso_hdr(uint16_t mss) {
  VnetHdr h;
  h.flags = kVnetFlagNeedsCsum;
  h.gso_type = kVnetGsoTcpV4;
  h.hdr_len = 40;
  h.gso_size = mss;
  h.csum_start = 20;
  h.csum_offset = 16;
  return h;
}

void tso_cases() {
  for (uint16_t mss : {48, 536, 1398}) {
    Bed b;
    TunQueue tun(-1, true, 16, &b.ctr);
    TxPass tx(*b.env, tun, b.sock_ptrs.data(), b.sock_ptrs.size(), b.ctr, 100);
    Sent sent;
    tx.set_sink(sink, &sent);
    const std::vector<uint8_t> super = ipv4_tcp(kLocal, kRemote, 1000, 65535 - 40, 0x18);
    // At MSS 48 two packets need more segment headers than the arena holds: it is reused midway.
    const size_t reps = mss == 48 ? 2 : 1;
    std::vector<std::unique_ptr<Slot>> slots;
    for (size_t r = 0; r < reps; ++r) slots.emplace_back(new Slot(super, tso_hdr(mss)));
    for (auto& s : slots) tx.handle(*b.rt, s->p);
    tx.send_all();
    const size_t segs = (65535 - 40 + mss - 1) / mss;
    if (reps == 2) {
      CHECK(sent.dgrams.size() == 2 * segs, "two low-MSS TSO packets: every segment sent, header arena reused");
      sent.dgrams.resize(segs);
    }
    CHECK(sent.dgrams.size() == segs, ("every segment of a 65535-byte TSO packet is sent, mss " + std::to_string(mss)).c_str());
    CHECK(sent.shape_ok, "GSO messages within the kernel's limits");
    bool ok = true;
    std::vector<uint8_t> payload;
    for (const auto& d : sent.dgrams) {
      ok = ok && d.size() > 22 + 40 && d[0] == 0x08 && l4_ok(&d[22], d.size() - 22);
      if (d.size() > 62) payload.insert(payload.end(), d.begin() + 62, d.end());
    }
    CHECK(ok, "every segment is VXLAN + IPv4/TCP with valid checksums");
    CHECK(payload.size() == super.size() - 40 && std::memcmp(payload.data(), &super[40], payload.size()) == 0,
          "segments carry the payload in order, unchanged");
    CHECK(b.ctr.get(static_cast<size_t>(Ctr::TxPackets)) == reps * segs, "tx_packets counts segments");
  }
  // gso_size so large that one segment cannot be a datagram: dropped, no hang, nothing sent.
  Bed b;
  TunQueue tun(-1, true, 16, &b.ctr);
  TxPass tx(*b.env, tun, b.sock_ptrs.data(), b.sock_ptrs.size(), b.ctr, 100);
  Sent sent;
  tx.set_sink(sink, &sent);
  Slot s(ipv4_tcp(kLocal, kRemote, 1, 65535 - 40, 0x10), tso_hdr(65535));
  tx.handle(*b.rt, s.p);
  tx.send_all();
  CHECK(sent.dgrams.empty() && b.drops(Drop::TxBadIp) == 1, "gso_size 65535: dropped as tx_bad_ip");
  // A TSO packet whose total length field reads 0 (the plan takes the read length): still cut and sent.
  {
    Sent zs;
    tx.set_sink(sink, &zs);
    std::vector<uint8_t> z = ipv4_tcp(kLocal, kRemote, 7, 3000, 0x10);
    store_be16(&z[2], 0);
    Slot zslot(z, tso_hdr(1398));
    tx.handle(*b.rt, zslot.p);
    tx.send_all();
    CHECK(zs.dgrams.size() == 3, "TSO packet with total length 0: three segments sent");
    tx.set_sink(sink, &sent);
  }
  // A cut read is never forwarded.
  Slot t(ipv4_tcp(kLocal, kRemote, 1, 100, 0x10), VnetHdr());
  t.p.truncated = true;
  tx.handle(*b.rt, t.p);
  tx.send_all();
  CHECK(sent.dgrams.empty() && b.drops(Drop::TxTruncated) == 1, "truncated read: tx_truncated");
}

void small_packets_and_loops() {
  Bed b;
  TunQueue tun(-1, true, 16, &b.ctr);
  TxPass tx(*b.env, tun, b.sock_ptrs.data(), b.sock_ptrs.size(), b.ctr, 100);
  Sent sent;
  tx.set_sink(sink, &sent);
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < 10; ++i) slots.emplace_back(new Slot(ipv4_udp(kLocal, kRemote, 18, 5000, 9), VnetHdr()));
  slots.emplace_back(new Slot(ipv4_udp(kLocal, kRemote, 10, 5000, 9), VnetHdr()));  // shorter: ends the train
  for (auto& s : slots) tx.handle(*b.rt, s->p);
  tx.send_all();
  CHECK(sent.dgrams.size() == 11 && sent.messages == 1, "small packets of one flow go out as one GSO train");
  bool ok = true;
  for (const auto& d : sent.dgrams) ok = ok && l4_ok(&d[22], d.size() - 22);
  CHECK(ok && sent.shape_ok, "each small datagram intact");
  // Our own sending socket's datagram routed back into the TUN: dropped, never re-encapsulated.
  Slot loop(ipv4_udp(kTunIp, kRemote, 50, b.own_ports[1], 8472), VnetHdr());
  tx.handle(*b.rt, loop.p);
  tx.send_all();
  CHECK(sent.dgrams.size() == 11 && b.drops(Drop::TxLoop) == 1, "own datagram through the TUN: tx_loop");
  Slot other(ipv4_udp(kLocal, kRemote, 50, b.own_ports[1], 8472), VnetHdr());
  tx.handle(*b.rt, other.p);
  tx.send_all();
  CHECK(sent.dgrams.size() == 12, "a container's datagram with the same port numbers is forwarded");
}

std::vector<uint8_t> vxlan(const std::vector<uint8_t>& inner) {
  std::vector<uint8_t> d(22 + inner.size(), 0);
  d[0] = 0x08;
  d[6] = 1;
  std::memset(&d[8], 0xaa, 6);
  d[20] = 0x08;
  std::memcpy(&d[22], inner.data(), inner.size());
  return d;
}

void rx_cases() {
  Bed b;
  TunQueue tun(-1, true, 16, &b.ctr);
  Written w;
  tun.set_tap(tap, &w);
  UdpSocket dummy;
  RxPass rx(*b.env, dummy, tun, b.ctr);
  const size_t mss = 1398;
  std::vector<uint8_t> train;
  for (int i = 0; i < 4; ++i) {
    const auto d = vxlan(ipv4_tcp(kRemote, kLocal, 1 + i * mss, mss, 0x10));
    train.insert(train.end(), d.begin(), d.end());
  }
  // Forged first datagram (same size) claiming the whole train.
  store_be16(&train[22 + 2], static_cast<uint16_t>(train.size() - 22));
  store_be16(&train[22 + 10], 0);
  store_be16(&train[22 + 10], csum_fold(csum_partial(&train[22], 20)));
  UdpRecvBatch::Msg m{train.data(), train.size(), 22 + 40 + mss, kPeerIp, false};
  CHECK(rx.message(*b.rt, m) == 4, "a train of four datagrams");
  tun.flush();
  CHECK(b.drops(Drop::RxBadIp) == 1, "forged first datagram dropped as rx_bad_ip");
  CHECK(w.pkts.size() == 1 && w.vhs[0].gso_type == kVnetGsoTcpV4 && w.pkts[0].size() == 40 + 3 * mss,
        "the three genuine datagrams coalesce into one super-packet");
  if (w.pkts.size() == 1) CHECK(load_be32(&w.pkts[0][24]) == 1 + mss, "starting at the first genuine sequence number");
  bool leak = false;
  for (const auto& p : w.pkts) leak = leak || p.size() > 40 + 3 * mss;
  CHECK(!leak, "nothing written carries another datagram's bytes");
  // Zero-length message: counted.
  UdpRecvBatch::Msg z{train.data(), 0, 0, kPeerIp, false};
  rx.message(*b.rt, z);
  CHECK(b.drops(Drop::RxShort) == 1, "zero-length datagram counted as rx_short");
}

// UDP: a train of one flow's datagrams is written as one GSO_UDP_L4 packet; a UDP super-packet
// read from the TUN is cut into datagrams with their own headers and checksums.
void udp_offloads() {
  Bed b;
  TunQueue tun(-1, true, 16, &b.ctr);
  Written w;
  tun.set_tap(tap, &w);
  UdpSocket dummy;
  RxPass rx(*b.env, dummy, tun, b.ctr);
  std::vector<uint8_t> train;
  const size_t n = 20, payload = 18;
  for (size_t i = 0; i < n; ++i) {
    const auto d = vxlan(ipv4_udp(kRemote, kLocal, i + 1 == n ? 5 : payload, 7000, 9));
    train.insert(train.end(), d.begin(), d.end());
  }
  std::vector<uint8_t> bad = vxlan(ipv4_udp(kRemote, kLocal, payload, 7000, 9));
  bad.back() ^= 0x10;  // a corrupt datagram of the same flow: never merged
  UdpRecvBatch::Msg m{train.data(), train.size(), 22 + 28 + payload, kPeerIp, false};
  UdpRecvBatch::Msg mb{bad.data(), bad.size(), bad.size(), kPeerIp, false};
  rx.message(*b.rt, mb);
  rx.message(*b.rt, m);
  tun.flush();
  CHECK(w.pkts.size() == 2, "corrupt datagram alone, the train as one packet");
  if (w.pkts.size() == 2) {
    CHECK(w.vhs[0].gso_type == kVnetGsoNone, "the corrupt one is written first, unmarked");
    const VnetHdr& h = w.vhs[1];
    CHECK(h.gso_type == kVnetGsoUdpL4 && h.gso_size == payload && h.hdr_len == 28 && h.flags == kVnetFlagNeedsCsum &&
              h.csum_start == 20 && h.csum_offset == 6,
          "GSO_UDP_L4 virtio header");
    CHECK(w.pkts[1].size() == 28 + (n - 1) * payload + 5 && load_be16(&w.pkts[1][2]) == w.pkts[1].size(),
          "merged length covers every datagram");
  }
  // Read side: a 3000-byte UDP super-packet with gso_size 1000.
  TxPass tx(*b.env, tun, b.sock_ptrs.data(), b.sock_ptrs.size(), b.ctr, 100);
  Sent sent;
  tx.set_sink(sink, &sent);
  std::vector<uint8_t> super = ipv4_udp(kLocal, kRemote, 2500, 443, 4433);
  VnetHdr vh;
  vh.flags = kVnetFlagNeedsCsum;
  vh.gso_type = kVnetGsoUdpL4;
  vh.hdr_len = 28;
  vh.gso_size = 1000;
  vh.csum_start = 20;
  vh.csum_offset = 6;
  Slot s(super, vh);
  tx.handle(*b.rt, s.p);
  tx.send_all();
  bool ok = sent.dgrams.size() == 3 && sent.messages == 1;
  std::vector<uint8_t> pl;
  for (const auto& d : sent.dgrams) {
    ok = ok && l4_ok(&d[22], d.size() - 22) && load_be16(&d[22 + 24]) == d.size() - 22 - 20;
    pl.insert(pl.end(), d.begin() + 22 + 28, d.end());
  }
  CHECK(ok && sent.shape_ok, "UDP super-packet cut into 3 datagrams with their own lengths and checksums, one GSO send");
  CHECK(pl.size() == 2500 && std::memcmp(pl.data(), &super[28], 2500) == 0, "payload unchanged, in order");
}

void truncated_read() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) {
    CHECK(false, "socketpair");
    return;
  }
  const int big = 1 << 20;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  CounterBlock ctr;
  TunQueue q(sv[1], true, 4, &ctr);
  std::vector<uint8_t> long_one(TunQueue::kReadCap + 9, 0x45), short_one(kVnetHdrLen + 60, 0x45);
  const bool sent = ::write(sv[0], long_one.data(), long_one.size()) == static_cast<ssize_t>(long_one.size()) &&
                    ::write(sv[0], short_one.data(), short_one.size()) == static_cast<ssize_t>(short_one.size());
  CHECK(sent, "wrote two packets into the socketpair");
  ::close(sv[0]);
  TunPacket out[4];
  bool drained = false;
  const size_t n = q.read(4, out, &drained);
  CHECK(n >= 2 && out[0].truncated && !out[1].truncated && out[1].len == 60, "a cut read is flagged, the next one is whole");
  ::close(sv[1]);
}

}  // namespace

int main() {
  tso_cases();
  small_packets_and_loops();
  rx_cases();
  udp_offloads();
  truncated_read();
  std::printf("passes-check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
