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
  std::vector<size_t> message_of;  // per datagram: the index of its message
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
      s->message_of.push_back(s->messages);
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

// A transmit pass over a Bed, what it sends caught by `sink` in `sent`.
struct TxRig {
  Bed b;
  TunQueue tun{-1, true, 16, &b.ctr};
  TxPass tx{*b.env, tun, b.sock_ptrs.data(), b.sock_ptrs.size(), b.ctr, 100};
  Sent sent;
  TxRig() { tx.set_sink(sink, &sent); }
};

void tso_cases() {
  for (uint16_t mss : {48, 536, 1398}) {
    TxRig rig;
    auto& [b, tun, tx, sent] = rig;
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
  TxRig rig;
  auto& [b, tun, tx, sent] = rig;
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
  TxRig rig;
  auto& [b, tun, tx, sent] = rig;
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

// Two flows that share a sending socket, interleaved in one pass (A A B B A A ...): every message
// holds one flow's datagrams. A receiver steers a GSO message as a whole by its first datagram's
// inner flow, so a mixed message put the second flow's datagrams on the first one's socket, and
// TCP was reordered whenever the two flows' sockets differed (docs/datapath.md, "Under bulk load",
// step 4).
void one_flow_per_message() {
  TxRig rig;
  auto& [b, tun, tx, sent] = rig;
  const auto sock_of = [&](uint16_t sport) {
    const auto p = ipv4_udp(kLocal, kRemote, 18, sport, 9);
    return (static_cast<uint64_t>(flow_hash(p.data(), p.size())) * b.sock_ptrs.size()) >> 32;
  };
  uint16_t other = 5001;
  while (sock_of(other) != sock_of(5000)) ++other;
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < 12; ++i) slots.emplace_back(new Slot(ipv4_udp(kLocal, kRemote, 18, (i / 2) % 2 ? other : 5000, 9), VnetHdr()));
  for (auto& s : slots) tx.handle(*b.rt, s->p);
  tx.send_all();
  CHECK(sent.dgrams.size() == 12 && sent.messages == 6, "two interleaved flows on one socket: a message per run of one flow");
  bool one = sent.message_of.size() == sent.dgrams.size();
  for (size_t i = 1; one && i < sent.dgrams.size(); ++i) {
    const bool same_flow = load_be16(&sent.dgrams[i][42]) == load_be16(&sent.dgrams[i - 1][42]);
    one = sent.message_of[i] != sent.message_of[i - 1] || same_flow;
  }
  CHECK(one, "no message holds datagrams of two flows");
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

// ---- several networks on one receive pass: demultiplexed by VNI, each checked against its own peers

constexpr uint32_t kVniA = 4100, kVniB = 4101;
constexpr uint32_t kPeerAOnly = 0xc6120003;  // 198.18.0.3: a peer of network A only

// One network of a multi-network bed: its configuration, peers, TUN queue (tap) and counters.
struct NetSide {
  EncapConfig cfg;
  RouteTable* rt = nullptr;
  std::unique_ptr<PassEnv> env;
  CounterBlock ctr;
  std::unique_ptr<TunQueue> tun;
  Written w;
  RxNet rx;
  NetSide(uint32_t vni, uint8_t mac, uint32_t local, uint32_t peer_net, CounterBlock& peers_of, const std::vector<uint16_t>& ports,
          std::atomic<bool>& stopping, TunBuffers* bufs, bool a_only_peer)
      : ctr(&peers_of) {
    cfg.kind = EncapKind::Vxlan;
    cfg.vni = vni;
    std::memset(cfg.local_mac, mac, 6);
    cfg.local_net = local;
    cfg.local_mask = 0xffffff00;
    std::vector<RouteSpec> specs;
    RouteSpec r{};
    r.net = peer_net;
    r.prefix_len = 24;
    r.peer_ip = kPeerIp;
    r.port = 8472;
    r.slot = vni == kVniA ? 1 : 2;
    std::memset(r.mac, 0xbb, 6);
    specs.push_back(r);
    if (a_only_peer) {
      r.net = peer_net + 0x100;  // the next /24
      r.peer_ip = kPeerAOnly;
      r.slot = 3;
      specs.push_back(r);
    }
    std::string err;
    rt = RouteTable::build(specs, &err);
    env.reset(new PassEnv{cfg, 16, 1450, 0, local, ports, -1, stopping});
    tun.reset(new TunQueue(-1, true, 16, &ctr, bufs));
    tun->set_tap(tap, &w);
    rx.env = env.get();
    rx.table = rt;
    rx.tun = tun.get();
    rx.ctr = &ctr;
  }
  ~NetSide() { delete rt; }
  uint64_t get(Ctr c) const { return ctr.get(static_cast<size_t>(c)); }
  uint64_t drops(Drop d) const { return ctr.get(static_cast<size_t>(Ctr::Count) + static_cast<size_t>(d)); }
  uint64_t all_drops() const {
    uint64_t n = 0;
    for (size_t d = 0; d < static_cast<size_t>(Drop::Count); ++d) n += drops(static_cast<Drop>(d));
    return n;
  }
};

std::vector<uint8_t> vxlan_to(uint32_t vni, uint8_t mac, const std::vector<uint8_t>& inner, bool iflag = true) {
  std::vector<uint8_t> d(22 + inner.size(), 0);
  d[0] = iflag ? 0x08 : 0;
  d[4] = static_cast<uint8_t>(vni >> 16);
  d[5] = static_cast<uint8_t>(vni >> 8);
  d[6] = static_cast<uint8_t>(vni);
  std::memset(&d[8], mac, 6);
  d[20] = 0x08;
  std::memcpy(&d[22], inner.data(), inner.size());
  return d;
}

struct MultiBed {
  std::vector<uint16_t> ports{8472, 40001};
  std::atomic<bool> stopping{false};
  CounterBlock base;  // the datapath level: what belongs to no network, and the shared peer slots
  TunBuffers bufs{16};
  std::unique_ptr<UdpSocket> sock = UdpSocket::unbound(true);
  // `overlap`: both networks use the same addresses (their TUNs live in different namespaces).
  std::unique_ptr<NetSide> a, b;
  RxNets nets;
  std::unique_ptr<RxPass> rx;
  explicit MultiBed(bool overlap) {
    a.reset(new NetSide(kVniA, 0xaa, 0x0af40100, 0x0af40200, base, ports, stopping, &bufs, true));
    b.reset(overlap ? new NetSide(kVniB, 0xaa, 0x0af40100, 0x0af40200, base, ports, stopping, &bufs, false)
                    : new NetSide(kVniB, 0xcc, 0x0af50100, 0x0af50200, base, ports, stopping, &bufs, false));
    nets.add(&b->rx);  // any order: kept in VNI order
    nets.add(&a->rx);
    rx.reset(new RxPass(EncapKind::Vxlan, 16, *sock, base, nets));
  }
  uint64_t base_drops(Drop d) const { return base.get(static_cast<size_t>(Ctr::Count) + static_cast<size_t>(d)); }
  size_t send(uint32_t src, std::vector<uint8_t>& d) {
    const size_t n = rx->message(UdpRecvBatch::Msg{d.data(), d.size(), d.size(), src, false});
    rx->flush();
    return n;
  }
};

void multi_network_demux() {
  MultiBed m(false);
  NetSide& a = *m.a;
  NetSide& b = *m.b;
  CHECK(m.nets.size() == 2 && m.nets.find(kVniA) == &a.rx && m.nets.find(kVniB) == &b.rx && !m.nets.find(4102), "RxNets finds each VNI");
  CHECK(!m.nets.add(&a.rx), "a VNI is served once");
  // B's frame: written only into B's TUN.
  auto fb = vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af50202, 0x0af50102, 40));
  m.send(kPeerIp, fb);
  CHECK(b.w.pkts.size() == 1 && a.w.pkts.empty(), "a frame for network B is written only into B's TUN");
  CHECK(b.get(Ctr::RxPackets) == 1 && a.get(Ctr::RxPackets) == 0 && b.all_drops() == 0, "and counted by B only");
  if (b.w.pkts.size() == 1) CHECK(b.w.pkts[0].size() == 68 && load_be32(&b.w.pkts[0][16]) == 0x0af50102, "the inner packet, whole");
  auto fa = vxlan_to(kVniA, 0xaa, ipv4_udp(0x0af40202, 0x0af40102, 40));
  m.send(kPeerIp, fa);
  CHECK(a.w.pkts.size() == 1 && b.w.pkts.size() == 1, "a frame for network A is written only into A's TUN");
  // Per-peer counters: datapath-wide slots, each network's peer its own.
  CHECK(m.base.peer_get(1 * kPeerCounters + 2) == 1 && m.base.peer_get(2 * kPeerCounters + 2) == 1, "per-peer slots shared, one per network's peer");

  // A VNI that is none of ours: counted at the datapath level, by the one-network order of checks.
  auto fu = vxlan_to(4200, 0xaa, ipv4_udp(0x0af40202, 0x0af40102, 40));
  m.send(kPeerIp, fu);
  CHECK(m.base_drops(Drop::RxBadVni) == 1, "unknown VNI from a peer: rx_bad_vni at the datapath");
  m.send(0xc6120063, fu);
  CHECK(m.base_drops(Drop::RxUnknownPeer) == 1, "unknown VNI from a stranger: rx_unknown_peer at the datapath");
  auto fn = vxlan_to(4200, 0xaa, ipv4_udp(0x0af40202, 0x0af40102, 40), false);
  m.send(kPeerIp, fn);
  CHECK(m.base_drops(Drop::RxVxlanFlags) == 1, "unknown VNI without the I flag: rx_vxlan_flags at the datapath");
  std::vector<uint8_t> tiny(30, 0);
  m.send(kPeerIp, tiny);
  CHECK(m.base_drops(Drop::RxShort) == 1, "too short to name a network: rx_short at the datapath");
  CHECK(a.all_drops() == 0 && b.all_drops() == 0 && a.w.pkts.size() == 1 && b.w.pkts.size() == 1, "none of it reached or was counted by a network");

  // Spoofing across networks: the peer's lease of A used on B's VNI, A's local subnet as the
  // destination on B's VNI, and a peer of A only sending on B's VNI.
  auto s1 = vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af40202, 0x0af50102, 40));
  m.send(kPeerIp, s1);
  CHECK(b.drops(Drop::RxSpoofedSrc) == 1, "A's lease as the source on B's VNI: rx_spoofed_src in B");
  auto s2 = vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af50202, 0x0af40102, 40));
  m.send(kPeerIp, s2);
  CHECK(b.drops(Drop::RxWrongDst) == 1, "A's local subnet as the destination on B's VNI: rx_wrong_dst in B");
  auto s3 = vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af40302, 0x0af50102, 40));
  m.send(kPeerAOnly, s3);
  CHECK(b.drops(Drop::RxUnknownPeer) == 1, "a peer of A only, on B's VNI: rx_unknown_peer in B");
  auto s4 = vxlan_to(kVniB, 0xaa, ipv4_udp(0x0af50202, 0x0af50102, 40));
  m.send(kPeerIp, s4);
  CHECK(b.drops(Drop::RxDstMac) == 1, "A's VTEP MAC on B's VNI: rx_dst_mac in B");
  auto s5 = vxlan_to(kVniA, 0xaa, ipv4_udp(0x0af40302, 0x0af40102, 40));
  m.send(kPeerAOnly, s5);
  CHECK(a.w.pkts.size() == 2 && b.w.pkts.size() == 1 && a.drops(Drop::RxSpoofedSrc) == 0, "the peer of A only is accepted on A's VNI");
  CHECK(a.all_drops() == 0 && b.w.pkts.size() == 1 && m.base_drops(Drop::RxBadVni) == 1, "B wrote none of the spoofed frames, A counted none");

  // One message, a GRO train mixing both networks' datagrams (one peer, one 4-tuple): split and
  // each datagram demultiplexed.
  std::vector<uint8_t> train;
  for (int i = 0; i < 4; ++i) {
    const bool to_a = i % 2 == 0;
    const auto d = to_a ? vxlan_to(kVniA, 0xaa, ipv4_udp(0x0af40202, 0x0af40102, 40, 7000 + i))
                        : vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af50202, 0x0af50102, 40, 7000 + i));
    train.insert(train.end(), d.begin(), d.end());
  }
  const size_t seg = 22 + 68;
  UdpRecvBatch::Msg tm{train.data(), train.size(), seg, kPeerIp, false};
  CHECK(m.rx->message(tm) == 4, "a mixed train: four datagrams");
  m.rx->flush();
  CHECK(a.w.pkts.size() == 4 && b.w.pkts.size() == 3, "two written into each network's TUN");
  bool own = true;
  for (const auto& p : a.w.pkts) own = own && p.size() >= 20 && (load_be32(&p[16]) >> 8) == 0x0af401;
  for (const auto& p : b.w.pkts) own = own && p.size() >= 20 && (load_be32(&p[16]) >> 8) == 0x0af501;
  CHECK(own, "each TUN got only its own network's packets");

  // GRO-train framing with several VNIs: a first datagram claiming the whole message does not
  // swallow a datagram of another network of ours behind it.
  std::vector<uint8_t> forged = vxlan_to(kVniA, 0xaa, ipv4_udp(0x0af40202, 0x0af40102, 40));
  const auto genuine = vxlan_to(kVniB, 0xcc, ipv4_udp(0x0af50202, 0x0af50102, 40));
  forged.insert(forged.end(), genuine.begin(), genuine.end());
  store_be16(&forged[22 + 2], static_cast<uint16_t>(forged.size() - 22));
  store_be16(&forged[22 + 10], 0);
  store_be16(&forged[22 + 10], csum_fold(csum_partial(&forged[22], 20)));
  const uint32_t both[2] = {kVniA, kVniB};
  CHECK(!rx_message_is_one_datagram(EncapKind::Vxlan, VniSet{both, 2}, forged.data(), forged.size(), seg),
        "a boundary holding network B's packet: a train, not one datagram");
  CHECK(rx_message_is_one_datagram(EncapKind::Vxlan, VniSet{both, 1}, forged.data(), forged.size(), seg),
        "(for a receiver serving only A, B's VNI is not ours)");
  UdpRecvBatch::Msg fm{forged.data(), forged.size(), seg, kPeerIp, false};
  const size_t b_before = b.w.pkts.size();
  CHECK(m.rx->message(fm) == 2, "forged + genuine: two datagrams");
  m.rx->flush();
  CHECK(b.w.pkts.size() == b_before + 1 && a.drops(Drop::RxBadIp) == 1, "the genuine B datagram delivered, the forged one dropped by A");
}

// One TCP flow (same addresses, ports, consecutive sequence numbers) whose segments arrive
// alternately on the two networks (overlapping address ranges): a coalescer per network, never one
// super-packet with segments of both.
void multi_network_coalescing() {
  MultiBed m(true);
  NetSide& a = *m.a;
  NetSide& b = *m.b;
  const size_t mss = 1000, n = 12;
  std::vector<std::vector<uint8_t>> frames;
  std::vector<bool> on_a;
  for (size_t i = 0; i < n; ++i) {
    const bool to_a = (i / 3) % 2 == 0;  // 0-2 A, 3-5 B, 6-8 A, 9-11 B
    auto seg = ipv4_tcp(kRemote, kLocal, static_cast<uint32_t>(1 + i * mss), mss, 0x10);
    frames.push_back(vxlan_to(to_a ? kVniA : kVniB, 0xaa, seg));
    on_a.push_back(to_a);
  }
  for (auto& f : frames) m.rx->message(UdpRecvBatch::Msg{f.data(), f.size(), f.size(), kPeerIp, false});
  m.rx->flush();
  // Which segments each written packet carries, from its sequence number and length.
  auto check_side = [&](const Written& w, bool side_a, size_t* segs) {
    bool ok = true;
    for (const auto& p : w.pkts) {
      if (p.size() < 40) return false;
      const size_t first = (load_be32(&p[24]) - 1) / mss;
      const size_t count = (p.size() - 40) / mss;
      for (size_t k = first; k < first + count; ++k) ok = ok && k < n && on_a[k] == side_a;
      *segs += count;
    }
    return ok;
  };
  size_t segs_a = 0, segs_b = 0;
  CHECK(check_side(a.w, true, &segs_a), "network A's TUN got only A's segments");
  CHECK(check_side(b.w, false, &segs_b), "network B's TUN got only B's segments");
  CHECK(segs_a == 6 && segs_b == 6, "every segment written once, into its own network");
  CHECK(a.get(Ctr::TunGroWrites) >= 1 && b.get(Ctr::TunGroWrites) >= 1, "each network coalesced its own consecutive segments");
  bool merged_ok = true;
  for (const auto* w : {&a.w, &b.w}) {
    for (size_t i = 0; i < w->pkts.size(); ++i) merged_ok = merged_ok && (w->vhs[i].gso_type == kVnetGsoNone || w->pkts[i].size() <= 40 + 3 * mss);
  }
  CHECK(merged_ok, "no super-packet longer than one network's run of three segments");
}

// Transmit: each network's pass encapsulates with its own VNI towards its own peers; two passes
// of one worker share the TUN read slots and the segment-header arena.
void multi_network_tx() {
  MultiBed m(false);
  NetSide& a = *m.a;
  NetSide& b = *m.b;
  std::vector<std::unique_ptr<UdpSocket>> socks;
  std::vector<UdpSocket*> ptrs;
  for (int k = 0; k < 2; ++k) {
    socks.push_back(UdpSocket::unbound(true));
    ptrs.push_back(socks.back().get());
  }
  TxPass txa(*a.env, *a.tun, ptrs.data(), ptrs.size(), a.ctr, 100);
  TxPass txb(*b.env, *b.tun, ptrs.data(), ptrs.size(), b.ctr, 100);
  Sent sa, sb;
  txa.set_sink(sink, &sa);
  txb.set_sink(sink, &sb);
  // MSS 48: a 65495-byte TSO packet needs 1365 segment headers, so the second network's pass finds
  // the shared arena mostly used by the first's (already sent) and must reuse it.
  const auto super_a = ipv4_tcp(0x0af40102, 0x0af40202, 1, 65535 - 40, 0x10);
  const auto super_b = ipv4_tcp(0x0af50102, 0x0af50202, 1, 65535 - 40, 0x10);
  Slot pa(super_a, tso_hdr(48));
  Slot pb(super_b, tso_hdr(48));
  txa.handle(*a.rt, pa.p);
  txa.send_all();
  txb.handle(*b.rt, pb.p);
  txb.send_all();
  const size_t segs = (65535 - 40 + 47) / 48;
  CHECK(sa.dgrams.size() == segs && sb.dgrams.size() == segs, "every segment of each network's TSO packet sent");
  bool vni_ok = true, payload_ok = true;
  std::vector<uint8_t> pl_a, pl_b;
  for (const auto& d : sa.dgrams) {
    vni_ok = vni_ok && d.size() > 62 && vxlan_vni(d.data()) == kVniA && l4_ok(&d[22], d.size() - 22);
    if (d.size() > 62) pl_a.insert(pl_a.end(), d.begin() + 62, d.end());
  }
  for (const auto& d : sb.dgrams) {
    vni_ok = vni_ok && d.size() > 62 && vxlan_vni(d.data()) == kVniB && l4_ok(&d[22], d.size() - 22);
    if (d.size() > 62) pl_b.insert(pl_b.end(), d.begin() + 62, d.end());
  }
  payload_ok = pl_a.size() == super_a.size() - 40 && std::memcmp(pl_a.data(), &super_a[40], pl_a.size()) == 0 &&
               pl_b.size() == super_b.size() - 40 && std::memcmp(pl_b.data(), &super_b[40], pl_b.size()) == 0;
  CHECK(vni_ok, "A's segments carry VNI 4100, B's VNI 4101, all with valid checksums");
  CHECK(payload_ok, "payloads intact through the shared header arena");
  // A destination only network A routes: no route in B (and an ICMP error into B's TUN only).
  Slot pc(ipv4_udp(0x0af50102, 0x0af40202, 20), VnetHdr());
  txb.handle(*b.rt, pc.p);
  txb.send_all();
  CHECK(b.drops(Drop::TxNoRoute) == 1 && sb.dgrams.size() == segs && a.drops(Drop::TxNoRoute) == 0, "A's peers are not B's routes");
}

}  // namespace

int main() {
  tso_cases();
  small_packets_and_loops();
  one_flow_per_message();
  rx_cases();
  udp_offloads();
  truncated_read();
  multi_network_demux();
  multi_network_coalescing();
  multi_network_tx();
  std::printf("passes-check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
