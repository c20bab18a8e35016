// A worker's two passes, each a pipeline over one batch:
//   TxPass: TUN queue --read batch--> cut TSO / complete checksums --> route --> encapsulate in place
//           --> UDP send batches (one per sending socket, i.e. outer source port) --sendmmsg-->
//   RxPass: UDP --recvmmsg batch--> split GRO trains --> validate, decapsulate --> complete checksums
//           --> TUN queue (coalesce) --writev-->
// They see only what they are handed (PassEnv, their queue, sockets and counters), never the Datapath.
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "counters.h"
#include "encap.h"
#include "offload.h"
#include "route_table.h"
#include "tun_queue.h"
#include "udp_socket.h"

namespace vxnet {

inline uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Token bucket for generated ICMP errors: `rate` per second sustained, the same as burst; no reply
// is better than a reply storm.
class IcmpLimiter {
 public:
  explicit IcmpLimiter(uint32_t rate) : rate_(rate), tokens_(rate), last_(mono_ns()) {}
  bool take() {
    const uint64_t now = mono_ns();
    tokens_ += static_cast<double>(now - last_) * 1e-9 * rate_;
    if (tokens_ > rate_) tokens_ = rate_;
    last_ = now;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  const double rate_;
  double tokens_;
  uint64_t last_;
};

// What a worker's passes need from the datapath, handed over explicitly (read-only after start).
struct PassEnv {
  const EncapConfig& encap;
  size_t batch;
  size_t mtu;
  uint32_t bind_ip;
  uint32_t tun_ip;
  const std::vector<uint16_t>& own_ports;
  int stop_fd;
  const std::atomic<bool>& stopping;
};

// TUN -> peers: read batch -> (cut TSO) -> route -> encapsulate in place -> send batch.
class TxPass {
 public:
  TxPass(const PassEnv& env, TunQueue& tun, UdpSocket* const* socks, size_t nsocks, CounterBlock& ctr,
         uint32_t icmp_per_sec)
      : env_(env),
        tun_(tun),
        socks_(socks),
        nsocks_(nsocks),
        ctr_(ctr),
        overhead_(encap_overhead(env.encap.kind)),
        pkts_(new TunPacket[env.batch]),
        icmp_(icmp_per_sec) {
    for (size_t i = 0; i < nsocks_; ++i) out_.push_back(std::make_unique<UdpSendBatch>(socks_[i]->gso()));
  }

  // Returns true when the TUN queue was drained, false when a full batch was read.
  bool run(const RouteTable& table, size_t* handled) {
    bool drained = false;
    const size_t n = tun_.read(env_.batch, pkts_.get(), &drained);
    for (size_t i = 0; i < n; ++i) handle(table, pkts_[i]);
    send_all();
    *handled += n;
    return drained;
  }

  // One packet as read: cut, routed, encapsulated and queued (sent by send_all()).
  void handle(const RouteTable& table, TunPacket& p) {
    if (p.truncated) {
      ctr_.drop(Drop::TxTruncated);
      return;
    }
    const uint8_t gso_type = p.vh.gso_type & static_cast<uint8_t>(~kVnetGsoEcn);
    if (gso_type == kVnetGsoTcpV4) {
      tso(table, p);
      return;
    }
    if (gso_type == kVnetGsoUdpL4) {
      uso(table, p);
      return;
    }
    if (gso_type != kVnetGsoNone) {  // IPv6 GSO: never enabled, never expected
      ctr_.drop(Drop::TxBadIp);
      return;
    }
    // The stack left the checksum to us (CHECKSUM_PARTIAL): complete it, peers get full checksums.
    if ((p.vh.flags & kVnetFlagNeedsCsum) && !vnet_finish_csum(p.pkt, p.len, p.vh.csum_start, p.vh.csum_offset)) {
      ctr_.drop(Drop::TxBadIp);
      return;
    }
    TxResult r;
    size_t tot = 0;
    if (!route(table, p, &r, &tot)) return;
    uint8_t* f = encap_header(env_.encap, *r.peer, p.pkt);
    add(flow_hash(p.pkt, tot), *r.peer, f, tot + overhead_, nullptr, 0, static_cast<uint32_t>(tot));
  }

  // Sends every queued message.
  void send_all() {
    for (size_t i = 0; i < nsocks_; ++i) send(i);
  }
  // Tests and fuzzing: every send batch hands its messages to `sink` instead of the socket.
  void set_sink(UdpSendBatch::Sink sink, void* ctx) {
    for (auto& b : out_) b->set_sink(sink, ctx);
  }

 private:
  // A TSO super-packet: segments with headers built in the TUN queue's arena, payload in place.
  void tso(const RouteTable& table, TunPacket& p) {
    ctr_.add(Ctr::TunTsoReads, 1);
    TcpGso plan;
    if (!tcp4_gso_plan(p.pkt, p.len, p.vh.gso_size, &plan) || overhead_ + plan.hdr + plan.mss > kMaxDatagram) {
      ctr_.drop(Drop::TxBadIp);
      return;
    }
    // The plan checked the lengths (a TSO packet's total length may read 0): only the route is left.
    const Peer* peer = table.lookup(load_be32(p.pkt + 16));
    if (!peer) {
      drop(Drop::TxNoRoute, p);
      return;
    }
    cut(*peer, flow_hash(p.pkt, p.len), plan.segments, [&](size_t k) { return tun_.tso_segment(p, plan, k); });
  }

  // Encapsulates and queues `segments` segments, segment k made by segment(k) in the header arena.
  template <typename Segment>
  void cut(const Peer& peer, uint32_t flow, size_t segments, Segment&& segment) {
    for (size_t k = 0; k < segments; ++k) {
      if (tun_.hdr_free() == 0) {  // every header handed out is in a pending message: send them
        send_all();
        tun_.hdr_reset();
      }
      const TsoSegment s = segment(k);
      uint8_t* f = encap_header(env_.encap, peer, s.hdr);
      add(flow, peer, f, overhead_ + s.hdr_len, s.payload, s.payload_len, static_cast<uint32_t>(s.hdr_len + s.payload_len));
    }
  }

  // A UDP super-packet (a local sender's UDP_SEGMENT send): cut into datagrams like TSO.
  void uso(const RouteTable& table, TunPacket& p) {
    ctr_.add(Ctr::TunUsoReads, 1);
    UdpGso plan;
    if (!udp4_gso_plan(p.pkt, p.len, p.vh.gso_size, &plan) || overhead_ + plan.ihl + 8 + plan.seg > kMaxDatagram) {
      ctr_.drop(Drop::TxBadIp);
      return;
    }
    TxResult r;
    size_t tot = 0;
    if (!route(table, p, &r, &tot)) return;
    cut(*r.peer, flow_hash(p.pkt, tot), plan.segments, [&](size_t k) { return tun_.uso_segment(p, plan, k); });
  }

  // Routes a packet that is sent as it is (not cut by TCP): false, counted, when it has no peer, is
  // malformed, or is one of our own datagrams come back through the TUN.
  bool route(const RouteTable& table, const TunPacket& p, TxResult* r, size_t* tot) {
    const Drop d = tx_route(table, p.pkt, p.len, r, tot);
    if (d != Drop::Count) {
      drop(d, p);
      return false;
    }
    if (own_datagram(p.pkt, *tot)) {
      ctr_.drop(Drop::TxLoop);
      return false;
    }
    return true;
  }

  void drop(Drop d, const TunPacket& p) {
    ctr_.drop(d);
    if (d == Drop::TxNoRoute) icmp(p.pkt, p.len);
  }

  // One datagram of one inner packet of flow `flow` (flow_hash), in one or two pieces, on the flow's
  // sending socket: appended to the open message to the same peer when it holds the same flow and
  // the sizes allow (UDP GSO also for small packets), else a new message.
  void add(uint32_t flow, const Peer& peer, const uint8_t* p1, size_t l1, const uint8_t* p2, size_t l2, uint32_t inner) {
    const size_t sock = socket_of(flow);
    UdpSendBatch& b = *out_[sock];
    const size_t len = l1 + l2;
    const size_t pieces = p2 ? 2 : 1;
    if (!b.can_append(&peer.addr, peer.slot, flow, len, pieces)) {
      b.close_open();
      if (!b.room(pieces)) send(sock);
      b.begin(&peer.addr, peer.slot, flow, len);
    }
    b.piece(p1, l1);
    if (p2) b.piece(p2, l2);
    b.datagram_done(len, 1, inner);
  }

  // The sending socket (outer source port) of a flow.
  size_t socket_of(uint32_t flow) const { return static_cast<size_t>((static_cast<uint64_t>(flow) * nsocks_) >> 32); }

  void send(size_t i) {
    UdpSendBatch& b = *out_[i];
    if (b.empty()) return;
    const size_t calls = b.flush(socks_[i]->fd(), env_.stop_fd, env_.stopping, [this](const SendTag& t, bool ok) {
      if (ok) {
        ctr_.add(Ctr::TxPackets, t.packets);
        ctr_.add(Ctr::TxBytes, t.bytes);
        ctr_.peer(t.slot, 0, t.bytes, t.packets);
      } else {
        for (uint32_t k = 0; k < t.packets; ++k) ctr_.drop(Drop::TxSendError);
      }
    });
    ctr_.add(Ctr::TxBatches, calls);
  }

  // Our own sending socket's datagram, routed back into the TUN: encapsulating it again would
  // loop forever (every round gets a fresh outer header, no TTL is consumed).
  bool own_datagram(const uint8_t* pkt, size_t tot) const {
    if (pkt[9] != 17) return false;
    const size_t ihl = static_cast<size_t>(pkt[0] & 0x0f) * 4;
    if (ihl + 8 > tot || (load_be16(pkt + 6) & 0x1fff) != 0) return false;
    const uint32_t src = load_be32(pkt + 12);
    if ((env_.tun_ip == 0 || src != env_.tun_ip) && (env_.bind_ip == 0 || src != env_.bind_ip)) return false;
    const uint16_t sport = load_be16(pkt + ihl);
    return std::find(env_.own_ports.begin(), env_.own_ports.end(), sport) != env_.own_ports.end();
  }

  void icmp(const uint8_t* pkt, size_t len) {
    uint8_t reply[kIcmpReplyMax];
    const size_t n = build_icmp_unreachable(env_.encap, pkt, len, reply);
    if (n == 0 || !icmp_.take()) {
      ctr_.add(Ctr::IcmpSuppressed, 1);
      return;
    }
    ctr_.add(tun_.write_plain(reply, n) ? Ctr::IcmpSent : Ctr::IcmpSuppressed, 1);
  }

  const PassEnv& env_;
  TunQueue& tun_;
  UdpSocket* const* socks_;
  const size_t nsocks_;
  CounterBlock& ctr_;
  const size_t overhead_;
  std::unique_ptr<TunPacket[]> pkts_;
  std::vector<std::unique_ptr<UdpSendBatch>> out_;  // one per sending socket
  IcmpLimiter icmp_;
};

// One network as the receive pass sees it: how its datagrams are validated (env: VNI, VTEP MAC,
// local subnet, MTU) against which peers (table), where they are written and what is counted.
struct RxNet {
  const PassEnv* env = nullptr;
  const RouteTable* table = nullptr;  // never null while a pass runs
  TunQueue* tun = nullptr;
  CounterBlock* ctr = nullptr;
  bool pending = false;  // delivered into since the last flush
};

// The networks one receive pass demultiplexes onto: by VNI (VXLAN), or the only one (udp, which
// carries no VNI). Changed only between passes, by the worker that owns it; lookups never allocate.
class RxNets {
 public:
  void clear() {
    nets_.clear();
    vnis_.clear();
    touched_.clear();
  }
  // Adds a network; false when its VNI is already taken (or, for udp, when one is there).
  bool add(RxNet* n) {
    const uint32_t vni = n->env->encap.vni;
    const size_t at = static_cast<size_t>(std::lower_bound(vnis_.begin(), vnis_.end(), vni) - vnis_.begin());
    if (at < vnis_.size() && vnis_[at] == vni) return false;
    if (!nets_.empty() && n->env->encap.kind == EncapKind::Udp) return false;
    vnis_.insert(vnis_.begin() + static_cast<std::ptrdiff_t>(at), vni);
    nets_.insert(nets_.begin() + static_cast<std::ptrdiff_t>(at), n);
    touched_.reserve(nets_.size());
    return true;
  }
  size_t size() const { return nets_.size(); }
  RxNet* at(size_t i) const { return nets_[i]; }
  RxNet* find(uint32_t vni) const {
    const auto it = std::lower_bound(vnis_.begin(), vnis_.end(), vni);
    return it != vnis_.end() && *it == vni ? nets_[static_cast<size_t>(it - vnis_.begin())] : nullptr;
  }
  VniSet vnis() const { return VniSet{vnis_.data(), vnis_.size()}; }
  // Does any network know `ip` as a peer's underlay address?
  bool known_peer(uint32_t ip) const {
    for (const RxNet* n : nets_) {
      const Peer* const* first = nullptr;
      if (n->table->by_public_ip(ip, &first) != 0) return true;
    }
    return false;
  }
  void touch(RxNet* n) {
    if (n->pending) return;
    n->pending = true;
    touched_.push_back(n);  // never beyond the capacity reserved in add()
  }
  // Writes what every network delivered into holds.
  void flush() {
    for (RxNet* n : touched_) {
      n->tun->flush();
      n->pending = false;
    }
    touched_.clear();
  }

 private:
  std::vector<RxNet*> nets_;     // in VNI order
  std::vector<uint32_t> vnis_;   // nets_[i]'s VNI
  std::vector<RxNet*> touched_;  // delivered into since the last flush
};

// Peers -> TUN: receive batch -> split GRO trains -> demultiplex by VNI -> validate against that
// network's peers, decapsulate -> coalesce (per network: its own TUN queue), write batch.
class RxPass {
 public:
  // Serves the networks of `nets` (the caller's, which it changes only between passes); `ctr`
  // counts what belongs to no network: receive batches, datagrams too short to name a network,
  // and datagrams whose VNI is none of ours.
  RxPass(EncapKind kind, size_t batch, UdpSocket& sock, CounterBlock& ctr, RxNets& nets)
      : kind_(kind), batch_(batch), sock_(sock), ctr_(ctr), nets_(&nets), in_(batch) {}
  // One network only, counted in `ctr` for everything (tests and fuzzing).
  RxPass(const PassEnv& env, UdpSocket& sock, TunQueue& tun, CounterBlock& ctr)
      : kind_(env.encap.kind), batch_(env.batch), sock_(sock), ctr_(ctr), nets_(&own_nets_), in_(env.batch) {
    own_.env = &env;
    own_.tun = &tun;
    own_.ctr = &ctr;
    own_.table = &empty_;
    own_nets_.add(&own_);
  }
  RxPass(const RxPass&) = delete;
  RxPass& operator=(const RxPass&) = delete;

  // One recvmmsg, all of it written into the TUNs before returning (nothing is held across passes:
  // latency stays that of one receive). Returns true when the socket was drained.
  bool run(size_t* handled) {
    const size_t n = in_.recv(sock_.fd());
    if (n == 0) return true;
    ctr_.add(Ctr::RxBatches, 1);
    for (size_t i = 0; i < n; ++i) *handled += message(in_.msg(i));
    nets_->flush();
    return n < batch_;
  }
  // The one network's pass against `table` (single-network form).
  bool run(const RouteTable& table, size_t* handled) {
    own_.table = &table;
    return run(handled);
  }

  // Handles one received message; returns the number of datagrams it held. What it delivers may
  // be held by the TUN queues until flush().
  size_t message(const UdpRecvBatch::Msg& m) {
    if (m.bad || m.len == 0) {
      ctr_.drop(Drop::RxShort);
      return 1;
    }
    if (m.seg < m.len && !rx_message_is_one_datagram(kind_, nets_->vnis(), m.data, m.len, m.seg)) {
      size_t n = 0;
      for (size_t off = 0; off < m.len; off += m.seg, ++n) datagram(m.src_ip, m.data + off, std::min(m.seg, m.len - off));
      return n;
    }
    datagram(m.src_ip, m.data, m.len);
    return 1;
  }
  size_t message(const RouteTable& table, const UdpRecvBatch::Msg& m) {
    own_.table = &table;
    return message(m);
  }
  void flush() { nets_->flush(); }

 private:
  // Which network a datagram is for: its VNI's (VXLAN), or the only one (udp). Datagrams for none
  // are counted here by the reason the one-network check would have given: an unknown sender
  // first (rx_unknown_peer), then a missing I flag (rx_vxlan_flags), then the VNI (rx_bad_vni).
  RxNet* demux(uint32_t src, const uint8_t* dgram, size_t len) {
    if (kind_ == EncapKind::Udp) {
      if (nets_->size() == 0) ctr_.drop(Drop::RxUnknownPeer);
      return nets_->size() ? nets_->at(0) : nullptr;
    }
    if (len < kVxlanHeader + kEthHeader + kIPv4MinHeader) {
      ctr_.drop(Drop::RxShort);
      return nullptr;
    }
    RxNet* n = nets_->find(vxlan_vni(dgram));
    if (n) return n;
    ctr_.drop(!nets_->known_peer(src) ? Drop::RxUnknownPeer : (dgram[0] & 0x08) == 0 ? Drop::RxVxlanFlags : Drop::RxBadVni);
    return nullptr;
  }

  void datagram(uint32_t src, uint8_t* dgram, size_t len) {
    RxNet* net = demux(src, dgram, len);
    if (!net) return;
    const PassEnv& env = *net->env;
    CounterBlock& ctr = *net->ctr;
    TunQueue& tun = *net->tun;
    RxResult res;
    const Drop d = rx_decap(env.encap, *net->table, src, dgram, len, &res);
    if (d != Drop::Count) {
      ctr.drop(d);
      return;
    }
    ctr.add(Ctr::RxPackets, 1);
    ctr.add(Ctr::RxBytes, res.inner_len);
    ctr.peer(res.peer->slot, 2, res.inner_len, 1);
    // The receive buffer is ours: the inner packet may be completed in place.
    uint8_t* pkt = const_cast<uint8_t*>(res.inner);
    const bool completed = complete_offloaded_csum(pkt, res.inner_len) == L4Csum::Completed;
    if (completed) ctr.add(Ctr::RxCsumCompleted, 1);
    nets_->touch(net);
    uint8_t vh[kVnetHdrLen];
    if (tun.vnet() && res.inner_len > env.mtu && tcp4_super_prepare(pkt, res.inner_len, env.mtu, completed, vh)) {
      // A TCP super-packet goes on as TSO, cut to our MTU by the kernel. Anything else this long
      // is written as it is: the kernel fragments it or answers "fragmentation needed".
      ctr.add(Ctr::RxSuperPackets, 1);
      tun.deliver_whole(vh, pkt, res.inner_len);
      return;
    }
    tun.deliver(pkt, res.inner_len, completed);
  }

  const EncapKind kind_;
  const size_t batch_;
  UdpSocket& sock_;
  CounterBlock& ctr_;
  RxNets* const nets_;
  UdpRecvBatch in_;
  // The single-network form's own network.
  const RouteTable empty_;
  RxNet own_;
  RxNets own_nets_;
};

}  // namespace vxnet
