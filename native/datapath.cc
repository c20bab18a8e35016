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
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "offload.h"
#include "packet.h"
#include "tun.h"
#include "passes.h"
#include "tun_queue.h"
#include "udp_socket.h"

namespace vxnet {

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A short scheduler slice (sched_attr.sched_runtime of a SCHED_OTHER thread, honoured by EEVDF since
// Linux 6.12) lets a worker that wakes for a packet preempt a CPU-bound task at once instead of
// waiting for that task's slice (about 3 ms) to end: the millisecond tail of a round trip. It is a
// request, not a priority: over time the worker gets no more CPU than before. Older kernels ignore it.
void request_slice(uint32_t us) {
  if (us == 0) return;
  struct {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
  } attr{};
  attr.size = sizeof attr;
  attr.policy = SCHED_OTHER;
  attr.runtime = static_cast<uint64_t>(us) * 1000;
  syscall(SYS_sched_setattr, 0, &attr, 0);
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
    case Ctr::TunUsoReads: return "tun_uso_reads";
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
  bool tso = false, uso = false;
  if (!open_tun(opts_.tun_name, opts_.queues, opts_.offload, &tun_fds_, &tun_name_, &tso, &uso, err)) return false;
  offload_.vnet_hdr = opts_.offload;
  offload_.tun_tso = tso;
  offload_.tun_uso = uso;
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

std::vector<uint64_t> Datapath::worker_packets() const {
  std::vector<uint64_t> out;
  for (const auto& w : workers_) {
    out.push_back(w->counters.get(static_cast<size_t>(Ctr::TxPackets)));
    out.push_back(w->counters.get(static_cast<size_t>(Ctr::RxPackets)));
  }
  return out;
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

}  // namespace

// One worker per queue serves both directions of its TUN queue and sockets. It runs passes
// while there is work. Once both fds are drained it blocks in epoll_wait, except after a light
// burst (a few packets since it last slept: request/response traffic, not a bulk flow): then it
// first keeps polling without sleeping for up to busy_poll_us, so an answer arriving within that
// window is handled without a thread wake-up. Bulk flows never spin: the CPU goes to the flows.
void Datapath::worker_loop(Worker* w, uint32_t q) {
  request_slice(opts_.slice_us);
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
