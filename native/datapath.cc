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

namespace vxnet {

namespace {

// Largest packet a TUN read or UDP datagram can carry; buffers are sized for it so the
// offload (GSO/GRO) step can reuse them unchanged.
constexpr size_t kMaxPacket = 65536;
constexpr size_t kBufStride = kHeadroom + kMaxPacket;

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

bool set_buf(int fd, int opt_force, int opt, uint32_t bytes) {
  const int v = static_cast<int>(bytes);
  // The *FORCE variants pass rmem_max/wmem_max when we have CAP_NET_ADMIN.
  if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof v) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0;
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

Datapath::Datapath(const DatapathOptions& opts) : opts_(opts), encap_(opts.encap) {
  if (opts_.batch == 0) opts_.batch = 1;
  if (opts_.batch > 1024) opts_.batch = 1024;
  if (opts_.queues == 0) opts_.queues = 1;
}

Datapath::~Datapath() {
  stop();
  delete table_.exchange(nullptr);
  for (const Retired& r : retired_) delete r.table;
}

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
  for (uint32_t q = 0; q < opts_.queues; ++q) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *err = std::string("socket: ") + std::strerror(errno);
      stop();
      return false;
    }
    sock_fds_.push_back(fd);
    const int one = 1;
    if (opts_.queues > 1) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (offload_.udp_gro && setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) < 0) offload_.udp_gro = false;
    // UDP_SEGMENT is per message (cmsg); probing the socket option tells whether the kernel has it.
    const int zero = 0;
    if (offload_.udp_gso && setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) < 0) offload_.udp_gso = false;
    set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF, opts_.sock_buf);
    set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF, opts_.sock_buf);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(opts_.port);
    sa.sin_addr.s_addr = htonl(opts_.bind_ip);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
      char ip[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
      *err = std::string("bind UDP ") + ip + ":" + std::to_string(opts_.port) + ": " + std::strerror(errno);
      stop();
      return false;
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
  for (int fd : sock_fds_) ::close(fd);
  tun_fds_.clear();
  sock_fds_.clear();
  if (stop_fd_ >= 0) ::close(stop_fd_);
  stop_fd_ = -1;
  reclaim();
}

void Datapath::publish(RouteTable* table) {
  const RouteTable* old = table_.exchange(table, std::memory_order_seq_cst);
  const uint64_t gen = gen_.fetch_add(1, std::memory_order_seq_cst) + 1;
  {
    std::lock_guard<std::mutex> lock(retire_mu_);
    if (old) retired_.push_back(Retired{old, gen});
  }
  reclaim();
}

void Datapath::reclaim() {
  std::lock_guard<std::mutex> lock(retire_mu_);
  if (retired_.empty()) return;
  // A snapshot retired at generation g may still be read by a worker that entered before g.
  uint64_t oldest = UINT64_MAX;
  for (auto& w : workers_) {
    const uint64_t a = w->active_gen.load(std::memory_order_seq_cst);
    if (a != 0 && a < oldest) oldest = a;
  }
  size_t kept = 0;
  for (const Retired& r : retired_) {
    if (oldest >= r.gen) {
      delete r.table;
    } else {
      retired_[kept++] = r;
    }
  }
  retired_.resize(kept);
}

const RouteTable* Datapath::enter(Worker* w) {
  // seq_cst store then load pairs with publish()'s exchange then reclaim()'s load.
  w->active_gen.store(gen_.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
  return table_.load(std::memory_order_seq_cst);
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

void Datapath::send_icmp(Worker* w, int tun_fd, const uint8_t* pkt, size_t len, uint64_t now, double* tokens,
                         uint64_t* last) {
  // Token bucket: icmp_per_sec sustained, same burst; no reply is better than a reply storm.
  const double rate = opts_.icmp_per_sec;
  *tokens += static_cast<double>(now - *last) * 1e-9 * rate;
  if (*tokens > rate) *tokens = rate;
  *last = now;
  uint8_t reply[kIcmpReplyMax];
  const size_t n = *tokens >= 1.0 ? build_icmp_unreachable(encap_, pkt, len, reply) : 0;
  if (n == 0) {
    w->counters.add(Ctr::IcmpSuppressed, 1);
    return;
  }
  *tokens -= 1.0;
  uint8_t no_offload[kVnetHdrLen] = {};
  iovec v[2] = {{no_offload, kVnetHdrLen}, {reply, n}};
  const size_t want = n + (offload_.vnet_hdr ? kVnetHdrLen : 0);
  if (::writev(tun_fd, offload_.vnet_hdr ? v : v + 1, offload_.vnet_hdr ? 2 : 1) == static_cast<ssize_t>(want)) {
    w->counters.add(Ctr::IcmpSent, 1);
  } else {
    w->counters.add(Ctr::IcmpSuppressed, 1);
  }
}

namespace {

// Per-read slot: headroom | packet as read (up to 64 KiB) | room for its segments.
constexpr size_t kSegArea = 128 * 1024;
constexpr size_t kSlotStride = kHeadroom + kMaxPacket + kSegArea;
constexpr size_t kMsgCap = 256;
// Largest UDP payload one GSO send may carry (64 KiB minus IPv4 and UDP headers), and the
// kernel's segment limit per send (UDP_MAX_SEGMENTS).
constexpr size_t kGsoMaxBytes = 65535 - 20 - 8;
constexpr size_t kGsoMaxSegs = 64;

const RouteTable kEmptyTable;

}  // namespace

// What both directions of one worker share: its fds, batch size and the datapath's encapsulation.
class Datapath::PathBase {
 protected:
  PathBase(Datapath* dp, Worker* w, int tun_fd, int sock)
      : dp_(dp),
        w_(w),
        tun_fd_(tun_fd),
        sock_(sock),
        batch_(dp->opts_.batch),
        vnet_(dp->offload_.vnet_hdr),
        overhead_(encap_overhead(dp->encap_.kind)) {}

  Datapath* dp_;
  Worker* w_;
  const int tun_fd_;
  const int sock_;
  const size_t batch_;
  const bool vnet_;
  const size_t overhead_;
};

// TUN -> peers: reads packets (TSO super-packets cut into segments here), encapsulates them in
// place and sends them with sendmmsg, segments of one packet as UDP GSO messages.
class Datapath::TxPath : PathBase {
 public:
  TxPath(Datapath* dp, Worker* w, int tun_fd, int sock)
      : PathBase(dp, w, tun_fd, sock),
        gso_(dp->offload_.udp_gso),
        bufs_(new uint8_t[batch_ * kSlotStride]),
        tb_(new Batch()),
        icmp_tokens_(dp->opts_.icmp_per_sec),
        icmp_last_(now_ns()) {}

  // Reads up to `batch` packets from the TUN and sends what they become. Returns true when the TUN
  // was drained (a read said EAGAIN), false when a full batch was read and more may be waiting.
  bool pass(const RouteTable& table, size_t* handled) {
    bool drained = false;
    size_t n = 0;
    while (n < batch_) {
      uint8_t* slot = bufs_.get() + n * kSlotStride;
      uint8_t* pkt = slot + kHeadroom;
      uint8_t* rd = vnet_ ? pkt - kVnetHdrLen : pkt;
      const ssize_t r = ::read(tun_fd_, rd, kMaxPacket);
      if (r < 0) {
        if (errno == EINTR) continue;
        drained = true;  // EAGAIN, or the device is going away: the worker waits for readiness
        break;
      }
      ++n;
      w_->counters.add(Ctr::TunReads, 1);
      handle(table, slot, pkt, rd, static_cast<size_t>(r));
    }
    *handled += n;
    send_all();
    return drained;
  }

 private:
  // Outgoing datagrams of one pass: sendmmsg messages with their per-message GSO size.
  struct Batch {
    mmsghdr msgs[kMsgCap];
    iovec iovs[kMsgCap];
    alignas(cmsghdr) uint8_t ctrl[kMsgCap][CMSG_SPACE(sizeof(uint16_t))];
    uint32_t slots[kMsgCap];
    uint32_t packets[kMsgCap];  // inner packets in the message
    uint32_t bytes[kMsgCap];    // inner bytes in the message
    size_t n = 0;
  };

  void handle(const RouteTable& table, uint8_t* slot, uint8_t* pkt, const uint8_t* rd, size_t len) {
    VnetHdr vh;
    if (vnet_) {
      if (len < kVnetHdrLen) {
        w_->counters.drop(Drop::TxShort);
        return;
      }
      vh = vnet_load(rd);
      len -= kVnetHdrLen;
    }
    const uint8_t gso_type = vh.gso_type & static_cast<uint8_t>(~kVnetGsoEcn);
    if (gso_type == kVnetGsoTcpV4) {
      w_->counters.add(Ctr::TunTsoReads, 1);
      TcpGso plan;
      const size_t stride = overhead_ + (tcp4_gso_plan(pkt, len, vh.gso_size, &plan) ? plan.hdr + plan.mss : 0);
      if (stride == overhead_ || plan.segments * stride > kSegArea) {
        w_->counters.drop(Drop::TxBadIp);
        return;
      }
      // Segment into the slot's segment area: frame k at seg + k*stride, encap header included.
      uint8_t* seg = slot + kHeadroom + kMaxPacket;
      const Peer* peer = nullptr;
      size_t total = 0;
      Drop d = Drop::Count;
      for (size_t k = 0; k < plan.segments && d == Drop::Count; ++k) {
        uint8_t* ip = seg + k * stride + overhead_;
        const size_t sl = tcp4_gso_segment(pkt, plan, k, ip);
        TxResult res;
        d = tx_encap(dp_->encap_, table, ip, sl, &res);
        peer = res.peer;
        total = k * stride + res.frame_len;
      }
      if (d != Drop::Count) {
        w_->counters.drop(d);
        if (d == Drop::TxNoRoute) icmp(pkt, len);
        return;
      }
      const size_t per_msg = gso_ ? std::min(kGsoMaxSegs, kGsoMaxBytes / stride) : 1;
      for (size_t k = 0; k < plan.segments; k += per_msg) {
        const size_t cnt = std::min(per_msg, plan.segments - k);
        const size_t start = k * stride;
        const size_t end = std::min(total, (k + cnt) * stride);
        const size_t inner = (end - start) - cnt * overhead_;
        queue(peer, seg + start, end - start, stride, static_cast<uint32_t>(cnt), static_cast<uint32_t>(inner));
      }
      return;
    }
    if (gso_type != kVnetGsoNone) {  // UDP or IPv6 GSO: never enabled, never expected
      w_->counters.drop(Drop::TxBadIp);
      return;
    }
    // The stack left the checksum to us (CHECKSUM_PARTIAL): complete it, peers get full checksums.
    if ((vh.flags & kVnetFlagNeedsCsum) && !vnet_finish_csum(pkt, len, vh.csum_start, vh.csum_offset)) {
      w_->counters.drop(Drop::TxBadIp);
      return;
    }
    TxResult res;
    const Drop d = tx_encap(dp_->encap_, table, pkt, len, &res);
    if (d != Drop::Count) {
      w_->counters.drop(d);
      if (d == Drop::TxNoRoute) icmp(pkt, len);
      return;
    }
    queue(res.peer, res.frame, res.frame_len, res.frame_len, 1, static_cast<uint32_t>(res.frame_len - overhead_));
  }

  void icmp(const uint8_t* pkt, size_t len) { dp_->send_icmp(w_, tun_fd_, pkt, len, now_ns(), &icmp_tokens_, &icmp_last_); }

  void send_all() {
    Batch* tb = tb_.get();
    size_t off = 0;
    while (off < tb->n) {
      const int r = ::sendmmsg(sock_, &tb->msgs[off], static_cast<unsigned>(tb->n - off), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
          pollfd pfd[2] = {{sock_, POLLOUT, 0}, {dp_->stop_fd_, POLLIN, 0}};
          ::poll(pfd, 2, 100);
          if (dp_->stopping_.load(std::memory_order_relaxed)) break;
          continue;
        }
        for (uint32_t k = 0; k < tb->packets[off]; ++k) w_->counters.drop(Drop::TxSendError);
        ++off;  // this message is refused; go on with the rest
        continue;
      }
      w_->counters.add(Ctr::TxBatches, 1);
      for (size_t i = off; i < off + static_cast<size_t>(r); ++i) {
        w_->counters.add(Ctr::TxPackets, tb->packets[i]);
        w_->counters.add(Ctr::TxBytes, tb->bytes[i]);
        w_->counters.peer(tb->slots[i], 0, tb->bytes[i], tb->packets[i]);
      }
      off += static_cast<size_t>(r);
    }
    tb->n = 0;
  }

  // Queues one message: `nseg` datagrams of `seg_len` bytes back to back (the last may be shorter).
  void queue(const Peer* peer, uint8_t* data, size_t len, size_t seg_len, uint32_t nseg, uint32_t inner) {
    Batch* tb = tb_.get();
    if (tb->n == kMsgCap) send_all();
    const size_t i = tb->n++;
    tb->iovs[i] = {data, len};
    msghdr& mh = tb->msgs[i].msg_hdr;
    std::memset(&mh, 0, sizeof mh);
    // Safe to point into the snapshot: the worker leaves it only after send_all().
    mh.msg_name = const_cast<sockaddr_in*>(&peer->addr);
    mh.msg_namelen = sizeof(sockaddr_in);
    mh.msg_iov = &tb->iovs[i];
    mh.msg_iovlen = 1;
    if (nseg > 1) {
      mh.msg_control = tb->ctrl[i];
      mh.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      cmsghdr* cm = CMSG_FIRSTHDR(&mh);
      cm->cmsg_level = SOL_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      const uint16_t sz = static_cast<uint16_t>(seg_len);
      std::memcpy(CMSG_DATA(cm), &sz, sizeof sz);
    }
    tb->slots[i] = peer->slot;
    tb->packets[i] = nseg;
    tb->bytes[i] = inner;
  }

  const bool gso_;
  std::unique_ptr<uint8_t[]> bufs_;
  std::unique_ptr<Batch> tb_;
  double icmp_tokens_;
  uint64_t icmp_last_;
};

// Peers -> TUN: receives datagrams with recvmmsg (UDP GRO trains split here), validates and
// decapsulates them, completes offloaded checksums, coalesces TCP segments and writes into the TUN.
class Datapath::RxPath : PathBase {
 public:
  RxPath(Datapath* dp, Worker* w, int tun_fd, int sock)
      : PathBase(dp, w, tun_fd, sock),
        mtu_(dp->opts_.mtu),
        bufs_(new uint8_t[batch_ * kBufStride]),
        gro_store_(new uint8_t[TcpCoalescer::kStorage]),
        gro_(gro_store_.get()),
        msgs_(batch_),
        iovs_(batch_),
        addrs_(batch_),
        ctrl_(batch_) {
    for (size_t i = 0; i < batch_; ++i) {
      iovs_[i].iov_base = bufs_.get() + i * kBufStride + kHeadroom;
      iovs_[i].iov_len = kMaxPacket;
    }
  }

  // One recvmmsg of up to `batch` datagrams, all of it written into the TUN before returning
  // (nothing is held across passes: latency stays that of one receive). Returns true when the
  // socket was drained (fewer than a full batch), false when more may be waiting.
  bool pass(const RouteTable& table, size_t* handled) {
    for (size_t i = 0; i < batch_; ++i) {
      msghdr& mh = msgs_[i].msg_hdr;
      std::memset(&mh, 0, sizeof mh);
      mh.msg_name = &addrs_[i];
      mh.msg_namelen = sizeof(sockaddr_in);
      mh.msg_iov = &iovs_[i];
      mh.msg_iovlen = 1;
      mh.msg_control = ctrl_[i].b;
      mh.msg_controllen = sizeof ctrl_[i].b;
    }
    int r;
    do {
      r = ::recvmmsg(sock_, msgs_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
    } while (r < 0 && errno == EINTR);
    if (r <= 0) return true;
    w_->counters.add(Ctr::RxBatches, 1);
    for (int i = 0; i < r; ++i) *handled += datagram(table, static_cast<size_t>(i));
    if (vnet_) gro_.flush(Emit{this});
    return static_cast<size_t>(r) < batch_;
  }

 private:
  struct Ctrl {
    alignas(cmsghdr) uint8_t b[CMSG_SPACE(sizeof(int))];
  };
  // The coalescer's output.
  struct Emit {
    RxPath* rx;
    void operator()(const uint8_t* vh, const uint8_t* pkt, size_t len) const {
      if (rx->vnet_ && vh[1] != kVnetGsoNone) rx->w_->counters.add(Ctr::TunGroWrites, 1);
      rx->write_tun(vh, pkt, len);
    }
  };

  // Writes one packet into the TUN, with the virtio_net_hdr in front when the TUN expects one.
  void write_tun(const uint8_t* vh, const uint8_t* pkt, size_t len) {
    ssize_t wr;
    size_t want = len;
    if (vnet_) {
      iovec v[2] = {{const_cast<uint8_t*>(vh), kVnetHdrLen}, {const_cast<uint8_t*>(pkt), len}};
      want += kVnetHdrLen;
      wr = ::writev(tun_fd_, v, 2);
    } else {
      wr = ::write(tun_fd_, pkt, len);
    }
    if (wr != static_cast<ssize_t>(want)) {
      w_->counters.drop(Drop::RxTunWriteError);
      return;
    }
    w_->counters.add(Ctr::TunWrites, 1);
  }

  // Handles received message `i`; returns the number of datagrams it held.
  size_t datagram(const RouteTable& table, size_t i) {
    msghdr& mh = msgs_[i].msg_hdr;
    const uint8_t* data = static_cast<const uint8_t*>(iovs_[i].iov_base);
    const size_t len = msgs_[i].msg_len;
    if ((mh.msg_flags & MSG_TRUNC) || mh.msg_namelen < sizeof(sockaddr_in) || addrs_[i].sin_family != AF_INET) {
      w_->counters.drop(Drop::RxShort);
      return 1;
    }
    // With UDP_GRO the kernel may hand us several datagrams of `seg` bytes glued together.
    size_t seg = len;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
      if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int v;
        std::memcpy(&v, CMSG_DATA(cm), sizeof v);
        if (v > 0) seg = static_cast<size_t>(v);
      }
    }
    // A GRO train's first datagram is `seg` bytes long. A first inner packet that claims more is no
    // train but one datagram the sender's kernel handed over whole (a GSO packet over a veth
    // underlay, whose cmsg carries the inner segment size): take it as one datagram.
    if (seg < len && len >= overhead_ + 4 && overhead_ + load_be16(data + overhead_ + 2) > seg) seg = len;
    const uint32_t src = ntohl(addrs_[i].sin_addr.s_addr);
    size_t n = 0;
    for (size_t off = 0; off < len; off += seg, ++n) inner(table, src, data + off, std::min(seg, len - off));
    return n ? n : 1;
  }

  void inner(const RouteTable& table, uint32_t src, const uint8_t* dgram, size_t len) {
    RxResult res;
    const Drop d = rx_decap(dp_->encap_, table, src, dgram, len, &res);
    if (d != Drop::Count) {
      w_->counters.drop(d);
      return;
    }
    w_->counters.add(Ctr::RxPackets, 1);
    w_->counters.add(Ctr::RxBytes, res.inner_len);
    w_->counters.peer(res.peer->slot, 2, res.inner_len, 1);
    // The receive buffer is ours: the inner packet may be completed in place.
    uint8_t* pkt = const_cast<uint8_t*>(res.inner);
    const bool completed = complete_offloaded_csum(pkt, res.inner_len) == L4Csum::Completed;
    if (completed) w_->counters.add(Ctr::RxCsumCompleted, 1);
    if (!vnet_) {
      write_tun(nullptr, pkt, res.inner_len);
      return;
    }
    uint8_t vh[kVnetHdrLen];
    if (res.inner_len > mtu_ && tcp4_super_prepare(pkt, res.inner_len, mtu_, completed, vh)) {
      // A TCP super-packet goes on as TSO, cut to our MTU by the kernel. Anything else this long
      // is written as it is: the kernel fragments it or answers "fragmentation needed".
      w_->counters.add(Ctr::RxSuperPackets, 1);
      gro_.flush_flow_of(pkt, res.inner_len, Emit{this});
      write_tun(vh, pkt, res.inner_len);
      return;
    }
    gro_.push(pkt, res.inner_len, Emit{this}, completed);
  }

  const size_t mtu_;
  std::unique_ptr<uint8_t[]> bufs_;
  std::unique_ptr<uint8_t[]> gro_store_;
  TcpCoalescer gro_;
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iovs_;
  std::vector<sockaddr_in> addrs_;
  std::vector<Ctrl> ctrl_;
};

// One worker per queue serves both directions of its TUN queue and UDP socket. It runs passes
// while there is work. Once both fds are drained it blocks in epoll_wait, except after a light
// burst (a few packets since it last slept: request/response traffic, not a bulk flow): then it
// first keeps polling without sleeping for up to busy_poll_us, so an answer arriving within that
// window is handled without a thread wake-up. Bulk flows never spin: the CPU goes to the flows.
void Datapath::worker_loop(Worker* w, uint32_t q) {
  const int tun_fd = tun_fds_[q];
  const int sock = sock_fds_[q];
  TxPath tx(this, w, tun_fd, sock);
  RxPath rx(this, w, tun_fd, sock);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return;
  bool ok = true;
  for (int fd : {tun_fd, sock, stop_fd_}) {
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
      const RouteTable* rt = enter(w);
      const RouteTable& table = rt ? *rt : kEmptyTable;
      if (tun_ready) tun_ready = !tx.pass(table, &burst);
      if (sock_ready) sock_ready = !rx.pass(table, &burst);
      leave(w);
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
      if (evs[i].data.fd == tun_fd) tun_ready = true;
      if (evs[i].data.fd == sock) sock_ready = true;
    }
  }
  leave(w);
  ::close(ep);
}

}  // namespace vxnet
