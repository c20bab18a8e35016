#include "datapath.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "offload.h"
#include "packet.h"
#include "tun.h"
#include "tun_queue.h"
#include "udp_socket.h"

namespace vxnet {

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void name_thread(std::thread& t, const char* role, uint32_t i) {
  // Thread names are limited to 15 characters: "vxnet-wk" + up to two digits.
  const std::string name = std::string("vxnet-") + role + std::to_string(i % 100);
  pthread_setname_np(t.native_handle(), name.c_str());
}

}  // namespace

const char* ctr_name(Ctr c) {
  switch (c) {
    case Ctr::TxPackets: return "tx_packets";
    case Ctr::TxBytes: return "tx_bytes";
    case Ctr::RxPackets: return "rx_packets";
    case Ctr::RxBytes: return "rx_bytes";
    case Ctr::TxBatches: return "tx_batches";
    case Ctr::RxBatches: return "rx_batches";
    case Ctr::TunReads: return "tun_reads";
    case Ctr::TunWrites: return "tun_writes";
    case Ctr::TunTsoReads: return "tun_tso_reads";
    case Ctr::TunGroWrites: return "tun_gro_writes";
    case Ctr::IcmpSent: return "icmp_unreachable_sent";
    case Ctr::IcmpSuppressed: return "icmp_unreachable_suppressed";
    case Ctr::RxCsumCompleted: return "rx_csum_completed";
    case Ctr::RxSuperPackets: return "rx_super_packets";
    case Ctr::Count: break;
  }
  return "unknown";
}

struct Datapath::Worker {
  CounterBlock counters;
  Snapshot<RouteTable>::Reader* reader = nullptr;
  std::thread thread;
};

Datapath::Datapath(const DatapathOptions& opts) : opts_(opts), encap_(opts.encap) {
  if (opts_.batch == 0) opts_.batch = 1;
  if (opts_.batch > 1024) opts_.batch = 1024;
  if (opts_.queues == 0) opts_.queues = 1;
}

Datapath::~Datapath() { stop(); }

bool Datapath::open(std::string* err) {
  if (!tun_fds_.empty()) {
    *err = "datapath already open";
    return false;
  }
  bool tso = false;
  if (!open_tun(opts_.tun_name, opts_.queues, opts_.offload, &tun_fds_, &tun_name_, &tso, err)) return false;
  offload_.vnet_hdr = opts_.offload;
  offload_.tun_tso = tso;
  offload_.udp_gso = opts_.offload;
  offload_.udp_gro = opts_.offload;
  own_ports_.clear();
  own_ports_.push_back(opts_.port);
  for (uint32_t q = 0; q < opts_.queues; ++q) {
    UdpSocketOptions rx;
    rx.bind_ip = opts_.bind_ip;
    rx.port = opts_.port;
    rx.reuseport = opts_.queues > 1;
    rx.gro = opts_.offload;
    rx.rcvbuf = opts_.sock_buf;
    rx_socks_.push_back(std::make_unique<UdpSocket>());
    if (!rx_socks_.back()->open(rx, err)) {
      stop();
      return false;
    }
    offload_.udp_gro = offload_.udp_gro && rx_socks_.back()->gro();
    for (size_t k = 0; k < kTxPorts; ++k) {
      UdpSocketOptions tx;
      tx.bind_ip = opts_.bind_ip;
      tx.gso = opts_.offload;
      tx.sndbuf = opts_.sock_buf;
      tx.rcvbuf = 4096;  // nothing is read from a sending socket
      tx_socks_.push_back(std::make_unique<UdpSocket>());
      if (!tx_socks_.back()->open(tx, err)) {
        *err = "sending socket: " + *err;
        stop();
        return false;
      }
      offload_.udp_gso = offload_.udp_gso && tx_socks_.back()->gso();
      own_ports_.push_back(tx_socks_.back()->port());
    }
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    *err = std::string("eventfd: ") + std::strerror(errno);
    stop();
    return false;
  }
  return true;
}

bool Datapath::start(std::string* err) {
  if (tun_fds_.empty()) {
    *err = "datapath not open";
    return false;
  }
  if (running_) return true;
  stopping_.store(false);
  for (uint32_t q = 0; q < opts_.queues; ++q) {
    workers_.push_back(std::make_unique<Worker>());
    Worker* w = workers_.back().get();
    w->reader = routes_.add_reader();
    w->thread = std::thread([this, w, q] { worker_loop(w, q); });
    name_thread(w->thread, "wk", q);
  }
  running_ = true;
  return true;
}

void Datapath::stop() {
  stopping_.store(true);
  if (stop_fd_ >= 0) {
    const uint64_t one = 1;
    if (::write(stop_fd_, &one, sizeof one) < 0) { /* workers also poll stopping_ */ }
  }
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  // Keep the counter blocks: stats stay readable after stop.
  running_ = false;
  for (int fd : tun_fds_) ::close(fd);
  tun_fds_.clear();
  rx_socks_.clear();
  tx_socks_.clear();
  if (stop_fd_ >= 0) ::close(stop_fd_);
  stop_fd_ = -1;
  reclaim();
}

void Datapath::totals(uint64_t* out) const {
  for (size_t i = 0; i < kNumCounters; ++i) {
    uint64_t sum = test_counters_.get(i);
    for (const auto& w : workers_) sum += w->counters.get(i);
    out[i] = sum;
  }
}

void Datapath::peer_totals(uint32_t slot, uint64_t* out4) const {
  for (size_t k = 0; k < kPeerCounters; ++k) out4[k] = 0;
  if (slot >= kMaxPeerSlots) return;
  for (size_t k = 0; k < kPeerCounters; ++k) {
    uint64_t sum = test_counters_.peer_get(slot * kPeerCounters + k);
    for (const auto& w : workers_) sum += w->counters.peer_get(slot * kPeerCounters + k);
    out4[k] = sum;
  }
}

Drop Datapath::test_tx(uint8_t* pkt, size_t len, TxResult* out) {
  const RouteTable* rt = current_table();
  static const RouteTable kEmpty;
  const Drop d = tx_encap(encap_, rt ? *rt : kEmpty, pkt, len, out);
  if (d != Drop::Count) {
    test_counters_.drop(d);
  } else {
    test_counters_.add(Ctr::TxPackets, 1);
    test_counters_.add(Ctr::TxBytes, out->frame_len - encap_overhead(encap_.kind));
    test_counters_.peer(out->peer->slot, 0, out->frame_len - encap_overhead(encap_.kind));
  }
  return d;
}

Drop Datapath::test_rx(uint32_t src_ip, uint8_t* dgram, size_t len, RxResult* out) {
  const RouteTable* rt = current_table();
  static const RouteTable kEmpty;
  const Drop d = rx_decap(encap_, rt ? *rt : kEmpty, src_ip, dgram, len, out);
  if (d != Drop::Count) {
    test_counters_.drop(d);
  } else {
    test_counters_.add(Ctr::RxPackets, 1);
    test_counters_.add(Ctr::RxBytes, out->inner_len);
    test_counters_.peer(out->peer->slot, 2, out->inner_len);
    // As the rx worker: `out->inner` points into the caller's writable `dgram`.
    if (complete_offloaded_csum(const_cast<uint8_t*>(out->inner), out->inner_len) == L4Csum::Completed) {
      test_counters_.add(Ctr::RxCsumCompleted, 1);
    }
  }
  return d;
}

namespace {

const RouteTable kEmptyTable;

// Token bucket for generated ICMP errors: `rate` per second sustained, the same as burst; no reply
// is better than a reply storm.
class IcmpLimiter {
 public:
  explicit IcmpLimiter(uint32_t rate) : rate_(rate), tokens_(rate), last_(now_ns()) {}
  bool take() {
    const uint64_t now = now_ns();
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

 private:
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
    if (gso_type != kVnetGsoNone) {  // UDP or IPv6 GSO: never enabled, never expected
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
    const Drop d = tx_route(table, p.pkt, p.len, &r, &tot);
    if (d != Drop::Count) {
      drop(d, p);
      return;
    }
    if (own_datagram(p.pkt, tot)) {
      ctr_.drop(Drop::TxLoop);
      return;
    }
    uint8_t* f = encap_header(env_.encap, *r.peer, p.pkt);
    add(socket_for(p.pkt, tot), *r.peer, f, tot + overhead_, nullptr, 0, static_cast<uint32_t>(tot));
  }

  // A TSO super-packet: segments with headers built in the TUN queue's arena, payload in place.
  void tso(const RouteTable& table, TunPacket& p) {
    ctr_.add(Ctr::TunTsoReads, 1);
    TcpGso plan;
    if (!tcp4_gso_plan(p.pkt, p.len, p.vh.gso_size, &plan) || overhead_ + plan.hdr + plan.mss > kMaxDatagram) {
      ctr_.drop(Drop::TxBadIp);
      return;
    }
    TxResult r;
    size_t tot = 0;
    const Drop d = tx_route(table, p.pkt, p.len, &r, &tot);
    if (d != Drop::Count) {
      drop(d, p);
      return;
    }
    const size_t sock = socket_for(p.pkt, tot);
    for (size_t k = 0; k < plan.segments; ++k) {
      if (tun_.hdr_free() == 0) {  // every header handed out is in a pending message: send them
        send_all();
        tun_.hdr_reset();
      }
      const TsoSegment s = tun_.tso_segment(p, plan, k);
      uint8_t* f = encap_header(env_.encap, *r.peer, s.hdr);
      add(sock, *r.peer, f, overhead_ + s.hdr_len, s.payload, s.payload_len, static_cast<uint32_t>(s.hdr_len + s.payload_len));
    }
  }

  void drop(Drop d, const TunPacket& p) {
    ctr_.drop(d);
    if (d == Drop::TxNoRoute) icmp(p.pkt, p.len);
  }

  // One datagram of one inner packet, in one or two pieces: appended to the open message to the
  // same peer when the sizes allow (UDP GSO also for small packets), else a new message.
  void add(size_t sock, const Peer& peer, const uint8_t* p1, size_t l1, const uint8_t* p2, size_t l2, uint32_t inner) {
    UdpSendBatch& b = *out_[sock];
    const size_t len = l1 + l2;
    const size_t pieces = p2 ? 2 : 1;
    if (!b.can_append(&peer.addr, peer.slot, len, pieces)) {
      b.close_open();
      if (!b.room(pieces)) send(sock);
      b.begin(&peer.addr, peer.slot, len);
    }
    b.piece(p1, l1);
    if (p2) b.piece(p2, l2);
    b.datagram_done(len, 1, inner);
  }

  // The sending socket (outer source port) of the packet's flow.
  size_t socket_for(const uint8_t* pkt, size_t len) const { return flow_hash(pkt, len) % nsocks_; }

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

  void send_all() {
    for (size_t i = 0; i < nsocks_; ++i) send(i);
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

// Peers -> TUN: receive batch -> split GRO trains -> validate, decapsulate -> coalesce, write batch.
class RxPass {
 public:
  RxPass(const PassEnv& env, UdpSocket& sock, TunQueue& tun, CounterBlock& ctr)
      : env_(env), sock_(sock), tun_(tun), ctr_(ctr), in_(env.batch) {}

  // One recvmmsg, all of it written into the TUN before returning (nothing is held across passes:
  // latency stays that of one receive). Returns true when the socket was drained.
  bool run(const RouteTable& table, size_t* handled) {
    const size_t n = in_.recv(sock_.fd());
    if (n == 0) return true;
    ctr_.add(Ctr::RxBatches, 1);
    for (size_t i = 0; i < n; ++i) *handled += message(table, in_.msg(i));
    tun_.flush();
    return n < env_.batch;
  }

 private:
  // Handles one received message; returns the number of datagrams it held.
  size_t message(const RouteTable& table, const UdpRecvBatch::Msg& m) {
    if (m.bad || m.len == 0) {
      ctr_.drop(Drop::RxShort);
      return 1;
    }
    if (m.seg < m.len && !rx_message_is_one_datagram(env_.encap, m.data, m.len, m.seg)) {
      size_t n = 0;
      for (size_t off = 0; off < m.len; off += m.seg, ++n) datagram(table, m.src_ip, m.data + off, std::min(m.seg, m.len - off));
      return n;
    }
    datagram(table, m.src_ip, m.data, m.len);
    return 1;
  }

  void datagram(const RouteTable& table, uint32_t src, uint8_t* dgram, size_t len) {
    RxResult res;
    const Drop d = rx_decap(env_.encap, table, src, dgram, len, &res);
    if (d != Drop::Count) {
      ctr_.drop(d);
      return;
    }
    ctr_.add(Ctr::RxPackets, 1);
    ctr_.add(Ctr::RxBytes, res.inner_len);
    ctr_.peer(res.peer->slot, 2, res.inner_len, 1);
    // The receive buffer is ours: the inner packet may be completed in place.
    uint8_t* pkt = const_cast<uint8_t*>(res.inner);
    const bool completed = complete_offloaded_csum(pkt, res.inner_len) == L4Csum::Completed;
    if (completed) ctr_.add(Ctr::RxCsumCompleted, 1);
    uint8_t vh[kVnetHdrLen];
    if (tun_.vnet() && res.inner_len > env_.mtu && tcp4_super_prepare(pkt, res.inner_len, env_.mtu, completed, vh)) {
      // A TCP super-packet goes on as TSO, cut to our MTU by the kernel. Anything else this long
      // is written as it is: the kernel fragments it or answers "fragmentation needed".
      ctr_.add(Ctr::RxSuperPackets, 1);
      tun_.deliver_whole(vh, pkt, res.inner_len);
      return;
    }
    tun_.deliver(pkt, res.inner_len, completed);
  }

  const PassEnv& env_;
  UdpSocket& sock_;
  TunQueue& tun_;
  CounterBlock& ctr_;
  UdpRecvBatch in_;
};

}  // namespace

// One worker per queue serves both directions of its TUN queue and sockets. It runs passes
// while there is work. Once both fds are drained it blocks in epoll_wait, except after a light
// burst (a few packets since it last slept: request/response traffic, not a bulk flow): then it
// first keeps polling without sleeping for up to busy_poll_us, so an answer arriving within that
// window is handled without a thread wake-up. Bulk flows never spin: the CPU goes to the flows.
void Datapath::worker_loop(Worker* w, uint32_t q) {
  const PassEnv env{encap_, opts_.batch, opts_.mtu, opts_.bind_ip, opts_.tun_ip, own_ports_, stop_fd_, stopping_};
  TunQueue tun(tun_fds_[q], offload_.vnet_hdr, opts_.batch, &w->counters);
  UdpSocket& rx_sock = *rx_socks_[q];
  UdpSocket* tx_socks[kTxPorts];
  for (size_t k = 0; k < kTxPorts; ++k) tx_socks[k] = tx_socks_[q * kTxPorts + k].get();
  TxPass tx(env, tun, tx_socks, kTxPorts, w->counters, opts_.icmp_per_sec);
  RxPass rx(env, rx_sock, tun, w->counters);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return;
  bool ok = true;
  for (int fd : {tun.fd(), rx_sock.fd(), stop_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ok = ok && ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
  }
  constexpr size_t kLightBurst = 8;  // packets since the last sleep up to which a spin is worth it
  const uint64_t spin_ns = static_cast<uint64_t>(opts_.busy_poll_us) * 1000;
  bool tun_ready = true, sock_ready = true;
  size_t burst = 0;  // packets handled since the worker last slept
  epoll_event evs[3];
  while (ok && !stopping_.load(std::memory_order_relaxed)) {
    if (tun_ready || sock_ready) {
      const RouteTable* rt = w->reader->enter();
      const RouteTable& table = rt ? *rt : kEmptyTable;
      if (tun_ready) tun_ready = !tx.run(table, &burst);
      if (sock_ready) sock_ready = !rx.run(table, &burst);
      w->reader->leave();
      if (tun_ready || sock_ready) continue;  // a full batch: more may be waiting
    }
    int n = 0;
    if (spin_ns && burst <= kLightBurst) {
      const uint64_t until = now_ns() + spin_ns;
      // Yield between polls: on a busy machine the thread we wait for may need this CPU.
      while ((n = ::epoll_wait(ep, evs, 3, 0)) == 0 && now_ns() < until) ::sched_yield();
    }
    if (n == 0) {
      n = ::epoll_wait(ep, evs, 3, -1);
      burst = 0;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == tun.fd()) tun_ready = true;
      if (evs[i].data.fd == rx_sock.fd()) sock_ready = true;
    }
  }
  w->reader->leave();
  ::close(ep);
}

}  // namespace vxnet
