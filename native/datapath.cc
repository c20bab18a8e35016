#include "datapath.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
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
  // Thread names are limited to 15 characters: "vxnet-tx" + up to two digits.
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
    const int fd = tun_fds_[q];
    w->thread = std::thread([this, w, fd] { tx_loop(w, fd); });
    name_thread(w->thread, "tx", q);
  }
  for (uint32_t q = 0; q < opts_.queues; ++q) {
    workers_.push_back(std::make_unique<Worker>());
    Worker* w = workers_.back().get();
    const int fd = sock_fds_[q];
    w->thread = std::thread([this, w, fd] { rx_loop(w, fd); });
    name_thread(w->thread, "rx", q);
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

bool Datapath::wait_readable(int fd) {
  pollfd pfd[2] = {{fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    const int r = ::poll(pfd, 2, -1);
    if (stopping_.load(std::memory_order_relaxed)) return false;
    if (r > 0) return (pfd[0].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
    if (r < 0 && errno != EINTR) return false;
  }
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

Drop Datapath::test_rx(uint32_t src_ip, const uint8_t* dgram, size_t len, RxResult* out) {
  const RouteTable* rt = current_table();
  static const RouteTable kEmpty;
  const Drop d = rx_decap(encap_, rt ? *rt : kEmpty, src_ip, dgram, len, out);
  if (d != Drop::Count) {
    test_counters_.drop(d);
  } else {
    test_counters_.add(Ctr::RxPackets, 1);
    test_counters_.add(Ctr::RxBytes, out->inner_len);
    test_counters_.peer(out->peer->slot, 2, out->inner_len);
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

// Outgoing datagrams of one tx batch: sendmmsg messages with their per-message GSO size.
struct TxBatch {
  mmsghdr msgs[kMsgCap];
  iovec iovs[kMsgCap];
  alignas(cmsghdr) uint8_t ctrl[kMsgCap][CMSG_SPACE(sizeof(uint16_t))];
  uint32_t slots[kMsgCap];
  uint32_t packets[kMsgCap];  // inner packets in the message
  uint32_t bytes[kMsgCap];    // inner bytes in the message
  size_t n = 0;
};

}  // namespace

void Datapath::tx_loop(Worker* w, int tun_fd) {
  const size_t batch = opts_.batch;
  const int sock = sock_fds_[0];
  const bool vnet = offload_.vnet_hdr;
  const bool gso = offload_.udp_gso;
  const size_t overhead = encap_overhead(encap_.kind);
  std::unique_ptr<uint8_t[]> bufs(new uint8_t[batch * kSlotStride]);
  std::unique_ptr<TxBatch> tb(new TxBatch());
  static const RouteTable kEmpty;
  double icmp_tokens = opts_.icmp_per_sec;
  uint64_t icmp_last = now_ns();

  auto send_all = [&] {
    size_t off = 0;
    while (off < tb->n) {
      const int r = ::sendmmsg(sock, &tb->msgs[off], static_cast<unsigned>(tb->n - off), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
          pollfd pfd[2] = {{sock, POLLOUT, 0}, {stop_fd_, POLLIN, 0}};
          ::poll(pfd, 2, 100);
          if (stopping_.load(std::memory_order_relaxed)) break;
          continue;
        }
        for (uint32_t k = 0; k < tb->packets[off]; ++k) w->counters.drop(Drop::TxSendError);
        ++off;  // this message is refused; go on with the rest
        continue;
      }
      w->counters.add(Ctr::TxBatches, 1);
      for (size_t i = off; i < off + static_cast<size_t>(r); ++i) {
        w->counters.add(Ctr::TxPackets, tb->packets[i]);
        w->counters.add(Ctr::TxBytes, tb->bytes[i]);
        w->counters.peer(tb->slots[i], 0, tb->bytes[i], tb->packets[i]);
      }
      off += static_cast<size_t>(r);
    }
    tb->n = 0;
  };
  // Queues one message: `nseg` datagrams of `seg_len` bytes back to back (the last may be shorter).
  auto queue = [&](const Peer* peer, uint8_t* data, size_t len, size_t seg_len, uint32_t nseg, uint32_t inner) {
    if (tb->n == kMsgCap) send_all();
    const size_t i = tb->n++;
    tb->iovs[i] = {data, len};
    msghdr& mh = tb->msgs[i].msg_hdr;
    std::memset(&mh, 0, sizeof mh);
    // Safe to point into the snapshot: it cannot be freed before leave().
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
  };

  while (!stopping_.load(std::memory_order_relaxed)) {
    const RouteTable* rt = enter(w);
    const RouteTable& table = rt ? *rt : kEmpty;
    bool drained = false;
    for (size_t n = 0; n < batch; ++n) {
      uint8_t* slot = bufs.get() + n * kSlotStride;
      uint8_t* pkt = slot + kHeadroom;
      uint8_t* rd = vnet ? pkt - kVnetHdrLen : pkt;
      const ssize_t r = ::read(tun_fd, rd, kMaxPacket);
      if (r < 0) {
        if (errno == EINTR) {
          --n;
          continue;
        }
        drained = true;  // EAGAIN, or the device is going away: wait on poll
        break;
      }
      w->counters.add(Ctr::TunReads, 1);
      size_t len = static_cast<size_t>(r);
      VnetHdr vh;
      if (vnet) {
        if (len < kVnetHdrLen) {
          w->counters.drop(Drop::TxShort);
          continue;
        }
        vh = vnet_load(rd);
        len -= kVnetHdrLen;
      }
      const uint8_t gso_type = vh.gso_type & static_cast<uint8_t>(~kVnetGsoEcn);
      if (gso_type == kVnetGsoTcpV4) {
        w->counters.add(Ctr::TunTsoReads, 1);
        TcpGso plan;
        const size_t stride = overhead + (tcp4_gso_plan(pkt, len, vh.gso_size, &plan) ? plan.hdr + plan.mss : 0);
        if (stride == overhead || plan.segments * stride > kSegArea) {
          w->counters.drop(Drop::TxBadIp);
          continue;
        }
        // Segment into the slot's segment area: frame k at seg + k*stride, encap header included.
        uint8_t* seg = slot + kHeadroom + kMaxPacket;
        const Peer* peer = nullptr;
        size_t total = 0;
        Drop d = Drop::Count;
        for (size_t k = 0; k < plan.segments && d == Drop::Count; ++k) {
          uint8_t* ip = seg + k * stride + overhead;
          const size_t sl = tcp4_gso_segment(pkt, plan, k, ip);
          TxResult res;
          d = tx_encap(encap_, table, ip, sl, &res);
          peer = res.peer;
          total = k * stride + res.frame_len;
        }
        if (d != Drop::Count) {
          w->counters.drop(d);
          if (d == Drop::TxNoRoute) send_icmp(w, tun_fd, pkt, len, now_ns(), &icmp_tokens, &icmp_last);
          continue;
        }
        const size_t per_msg = gso ? std::min(kGsoMaxSegs, kGsoMaxBytes / stride) : 1;
        for (size_t k = 0; k < plan.segments; k += per_msg) {
          const size_t cnt = std::min(per_msg, plan.segments - k);
          const size_t start = k * stride;
          const size_t end = std::min(total, (k + cnt) * stride);
          const size_t inner = (end - start) - cnt * overhead;
          queue(peer, seg + start, end - start, stride, static_cast<uint32_t>(cnt), static_cast<uint32_t>(inner));
        }
        continue;
      }
      if (gso_type != kVnetGsoNone) {  // UDP or IPv6 GSO: never enabled, never expected
        w->counters.drop(Drop::TxBadIp);
        continue;
      }
      if ((vh.flags & kVnetFlagNeedsCsum) && !vnet_finish_csum(pkt, len, vh.csum_start, vh.csum_offset)) {
        w->counters.drop(Drop::TxBadIp);
        continue;
      }
      TxResult res;
      const Drop d = tx_encap(encap_, table, pkt, len, &res);
      if (d != Drop::Count) {
        w->counters.drop(d);
        if (d == Drop::TxNoRoute) send_icmp(w, tun_fd, pkt, len, now_ns(), &icmp_tokens, &icmp_last);
        continue;
      }
      queue(res.peer, res.frame, res.frame_len, res.frame_len, 1, static_cast<uint32_t>(res.frame_len - overhead));
    }
    send_all();
    leave(w);
    if (drained && !wait_readable(tun_fd)) break;
  }
  leave(w);
}

void Datapath::rx_loop(Worker* w, int sock) {
  const size_t batch = opts_.batch;
  const int tun_fd = tun_fds_[0];
  const bool vnet = offload_.vnet_hdr;
  std::unique_ptr<uint8_t[]> bufs(new uint8_t[batch * kBufStride]);
  std::unique_ptr<uint8_t[]> gro_store(new uint8_t[TcpCoalescer::kStorage]);
  TcpCoalescer gro(gro_store.get());
  std::vector<mmsghdr> msgs(batch);
  std::vector<iovec> iovs(batch);
  std::vector<sockaddr_in> addrs(batch);
  struct Ctrl {
    alignas(cmsghdr) uint8_t b[CMSG_SPACE(sizeof(int))];
  };
  std::vector<Ctrl> ctrl(batch);
  static const RouteTable kEmpty;
  for (size_t i = 0; i < batch; ++i) {
    iovs[i].iov_base = bufs.get() + i * kBufStride + kHeadroom;
    iovs[i].iov_len = kMaxPacket;
  }
  // Writes one packet into the TUN, with the virtio_net_hdr in front when the TUN expects one.
  auto emit = [&](const uint8_t* vh, const uint8_t* pkt, size_t len) {
    ssize_t wr;
    size_t want = len;
    if (vnet) {
      iovec v[2] = {{const_cast<uint8_t*>(vh), kVnetHdrLen}, {const_cast<uint8_t*>(pkt), len}};
      want += kVnetHdrLen;
      wr = ::writev(tun_fd, v, 2);
      if (vh[1] != kVnetGsoNone) w->counters.add(Ctr::TunGroWrites, 1);
    } else {
      wr = ::write(tun_fd, pkt, len);
    }
    if (wr != static_cast<ssize_t>(want)) {
      w->counters.drop(Drop::RxTunWriteError);
      return;
    }
    w->counters.add(Ctr::TunWrites, 1);
  };

  while (!stopping_.load(std::memory_order_relaxed)) {
    for (size_t i = 0; i < batch; ++i) {
      msghdr& mh = msgs[i].msg_hdr;
      std::memset(&mh, 0, sizeof mh);
      mh.msg_name = &addrs[i];
      mh.msg_namelen = sizeof(sockaddr_in);
      mh.msg_iov = &iovs[i];
      mh.msg_iovlen = 1;
      mh.msg_control = ctrl[i].b;
      mh.msg_controllen = sizeof ctrl[i].b;
    }
    const int r = ::recvmmsg(sock, msgs.data(), static_cast<unsigned>(batch), MSG_DONTWAIT, nullptr);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      if (!wait_readable(sock)) break;
      continue;
    }
    w->counters.add(Ctr::RxBatches, 1);
    const RouteTable* rt = enter(w);
    const RouteTable& table = rt ? *rt : kEmpty;
    for (int i = 0; i < r; ++i) {
      msghdr& mh = msgs[i].msg_hdr;
      const uint8_t* data = static_cast<const uint8_t*>(iovs[i].iov_base);
      const size_t len = msgs[i].msg_len;
      if ((mh.msg_flags & MSG_TRUNC) || mh.msg_namelen < sizeof(sockaddr_in) || addrs[i].sin_family != AF_INET) {
        w->counters.drop(Drop::RxShort);
        continue;
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
      const uint32_t src = ntohl(addrs[i].sin_addr.s_addr);
      for (size_t off = 0; off < len; off += seg) {
        const size_t dl = std::min(seg, len - off);
        RxResult res;
        const Drop d = rx_decap(encap_, table, src, data + off, dl, &res);
        if (d != Drop::Count) {
          w->counters.drop(d);
          continue;
        }
        w->counters.add(Ctr::RxPackets, 1);
        w->counters.add(Ctr::RxBytes, res.inner_len);
        w->counters.peer(res.peer->slot, 2, res.inner_len, 1);
        if (vnet) {
          gro.push(res.inner, res.inner_len, emit);
        } else {
          emit(nullptr, res.inner, res.inner_len);
        }
      }
    }
    // Nothing is held across batches: latency stays that of one recvmmsg.
    if (vnet) gro.flush(emit);
    leave(w);
  }
  leave(w);
}

}  // namespace vxnet
