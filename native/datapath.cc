#include "datapath.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  if (!open_tun(opts_.tun_name, opts_.queues, &tun_fds_, &tun_name_, err)) return false;
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
  if (::write(tun_fd, reply, n) == static_cast<ssize_t>(n)) {
    w->counters.add(Ctr::IcmpSent, 1);
  } else {
    w->counters.add(Ctr::IcmpSuppressed, 1);
  }
}

void Datapath::tx_loop(Worker* w, int tun_fd) {
  const size_t batch = opts_.batch;
  const int sock = sock_fds_[0];
  std::unique_ptr<uint8_t[]> bufs(new uint8_t[batch * kBufStride]);
  std::vector<mmsghdr> msgs(batch);
  std::vector<iovec> iovs(batch);
  std::vector<uint32_t> slots(batch);
  std::vector<uint32_t> inner_len(batch);
  static const RouteTable kEmpty;
  double icmp_tokens = opts_.icmp_per_sec;
  uint64_t icmp_last = now_ns();

  while (!stopping_.load(std::memory_order_relaxed)) {
    const RouteTable* rt = enter(w);
    const RouteTable& table = rt ? *rt : kEmpty;
    size_t n = 0;
    bool drained = false;
    while (n < batch) {
      uint8_t* pkt = bufs.get() + n * kBufStride + kHeadroom;
      const ssize_t r = ::read(tun_fd, pkt, kMaxPacket);
      if (r < 0) {
        if (errno == EINTR) continue;
        drained = true;  // EAGAIN, or the device is going away: wait on poll
        break;
      }
      w->counters.add(Ctr::TunReads, 1);
      TxResult res;
      const Drop d = tx_encap(encap_, table, pkt, static_cast<size_t>(r), &res);
      if (d != Drop::Count) {
        w->counters.drop(d);
        if (d == Drop::TxNoRoute) send_icmp(w, tun_fd, pkt, static_cast<size_t>(r), now_ns(), &icmp_tokens, &icmp_last);
        continue;
      }
      iovs[n].iov_base = res.frame;
      iovs[n].iov_len = res.frame_len;
      msghdr& mh = msgs[n].msg_hdr;
      std::memset(&mh, 0, sizeof mh);
      // Safe to point into the snapshot: it cannot be freed before leave() below.
      mh.msg_name = const_cast<sockaddr_in*>(&res.peer->addr);
      mh.msg_namelen = sizeof(sockaddr_in);
      mh.msg_iov = &iovs[n];
      mh.msg_iovlen = 1;
      slots[n] = res.peer->slot;
      inner_len[n] = static_cast<uint32_t>(res.frame_len - encap_overhead(encap_.kind));
      ++n;
    }
    size_t off = 0;
    while (off < n) {
      const int r = ::sendmmsg(sock, &msgs[off], static_cast<unsigned>(n - off), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == ENOBUFS) {
          pollfd pfd[2] = {{sock, POLLOUT, 0}, {stop_fd_, POLLIN, 0}};
          ::poll(pfd, 2, 100);
          if (stopping_.load(std::memory_order_relaxed)) break;
          continue;
        }
        w->counters.drop(Drop::TxSendError);  // this datagram is refused; go on with the rest
        ++off;
        continue;
      }
      w->counters.add(Ctr::TxBatches, 1);
      for (size_t i = off; i < off + static_cast<size_t>(r); ++i) {
        w->counters.add(Ctr::TxPackets, 1);
        w->counters.add(Ctr::TxBytes, inner_len[i]);
        w->counters.peer(slots[i], 0, inner_len[i]);
      }
      off += static_cast<size_t>(r);
    }
    leave(w);
    if (drained && !wait_readable(tun_fd)) break;
  }
  leave(w);
}

void Datapath::rx_loop(Worker* w, int sock) {
  const size_t batch = opts_.batch;
  const int tun_fd = tun_fds_[0];
  std::unique_ptr<uint8_t[]> bufs(new uint8_t[batch * kBufStride]);
  std::vector<mmsghdr> msgs(batch);
  std::vector<iovec> iovs(batch);
  std::vector<sockaddr_in> addrs(batch);
  static const RouteTable kEmpty;
  for (size_t i = 0; i < batch; ++i) {
    iovs[i].iov_base = bufs.get() + i * kBufStride + kHeadroom;
    iovs[i].iov_len = kMaxPacket;
  }

  while (!stopping_.load(std::memory_order_relaxed)) {
    for (size_t i = 0; i < batch; ++i) {
      msghdr& mh = msgs[i].msg_hdr;
      std::memset(&mh, 0, sizeof mh);
      mh.msg_name = &addrs[i];
      mh.msg_namelen = sizeof(sockaddr_in);
      mh.msg_iov = &iovs[i];
      mh.msg_iovlen = 1;
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
      const msghdr& mh = msgs[i].msg_hdr;
      const uint8_t* dgram = static_cast<const uint8_t*>(iovs[i].iov_base);
      size_t len = msgs[i].msg_len;
      if ((mh.msg_flags & MSG_TRUNC) || mh.msg_namelen < sizeof(sockaddr_in) || addrs[i].sin_family != AF_INET) {
        w->counters.drop(Drop::RxShort);
        continue;
      }
      RxResult res;
      const Drop d = rx_decap(encap_, table, ntohl(addrs[i].sin_addr.s_addr), dgram, len, &res);
      if (d != Drop::Count) {
        w->counters.drop(d);
        continue;
      }
      const ssize_t wr = ::write(tun_fd, res.inner, res.inner_len);
      if (wr != static_cast<ssize_t>(res.inner_len)) {
        w->counters.drop(Drop::RxTunWriteError);
        continue;
      }
      w->counters.add(Ctr::TunWrites, 1);
      w->counters.add(Ctr::RxPackets, 1);
      w->counters.add(Ctr::RxBytes, res.inner_len);
      w->counters.peer(res.peer->slot, 2, res.inner_len);
    }
    leave(w);
  }
  leave(w);
}

}  // namespace vxnet
