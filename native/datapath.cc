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

#include "cpu_steering.h"
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

// A bulk lane's worker asks for kBulkSlice times the light lanes' slice: long enough that a waking
// light lane preempts it (EEVDF prefers the shorter request), short enough that the two hosts' bulk
// workers sharing a CPU take turns finely (a sender running for milliseconds overfills the peer's
// socket: measured, docs/datapath.md "Under bulk load").
constexpr uint32_t kBulkSlice = 3;
constexpr uint32_t kMaxSliceUs = 100000;  // the kernel's limit

// The CPUs this process may run on, in ascending order.
std::vector<int> allowed_cpus() {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) out.push_back(c);
  }
  return out;
}

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

void name_thread(std::thread& t, const char* role, uint32_t i) {
  // Thread names are limited to 15 characters: "vxnet-wk" + up to two digits.
  const std::string name = std::string("vxnet-") + role + std::to_string(i % 100);
  pthread_setname_np(t.native_handle(), name.c_str());
}

}  // namespace

struct Datapath::Worker {
  CounterBlock* base = nullptr;  // base_ctr_[lane]
  Snapshot<NetworkSet>::Reader* reader = nullptr;
  // Version of the network set this worker's state was last built from; UINT64_MAX once it has
  // exited (it holds nothing then).
  std::atomic<uint64_t> seen{0};
  std::thread thread;
};

// ---- Network

Network::Network(uint32_t id, const NetworkOptions& o, std::vector<std::unique_ptr<CounterBlock>>& worker_peers)
    : id_(id), opts_(o), encap_(o.encap) {
  for (auto& b : worker_peers) ctr_.push_back(std::make_unique<CounterBlock>(b.get()));
}

void Network::bind(const DatapathOptions& dp, const std::vector<uint16_t>& own_ports, int stop_fd,
                   const std::atomic<bool>& stopping) {
  env_.reset(new PassEnv{encap_, dp.batch, opts_.mtu, dp.bind_ip, opts_.tun_ip, own_ports, stop_fd, stopping});
}

Network::~Network() { close_fds(); }

bool Network::open_tun(unsigned queues, bool vnet_hdr, unsigned queue_len, bool must_be_new, std::string* err) {
  return open_tun_in(opts_.netns, opts_.tun_name, queues, vnet_hdr, queue_len, must_be_new, &tun_fds_, &tun_name_, &tso_,
                     &uso_, &tun_drops_, err);
}

void Network::close_fds() {
  for (int fd : tun_fds_) ::close(fd);
  tun_fds_.clear();
  tun_drops_.close();  // later reads keep its last value
}

void Network::totals(uint64_t* out) const {
  for (size_t i = 0; i < kNumCounters; ++i) {
    for (const auto& c : ctr_) out[i] += c->get(i);
  }
  // No worker counts these: the kernel dropped them before any worker saw them.
  out[static_cast<size_t>(Ctr::Count) + static_cast<size_t>(Drop::TxTunQueueFull)] += tun_drops_.tx_dropped();
}

std::vector<uint64_t> Network::lane_packets() const {
  std::vector<uint64_t> out;
  for (const auto& c : ctr_) {
    out.push_back(c->get(static_cast<size_t>(Ctr::TxPackets)));
    out.push_back(c->get(static_cast<size_t>(Ctr::RxPackets)));
  }
  return out;
}

// ---- Datapath

namespace {

const std::shared_ptr<const RouteTable>& empty_table() {
  static const std::shared_ptr<const RouteTable> t = std::make_shared<const RouteTable>();
  return t;
}

}  // namespace

Datapath::Datapath(const DatapathOptions& opts) : opts_(opts) {
  if (opts_.batch == 0) opts_.batch = 1;
  if (opts_.batch > 1024) opts_.batch = 1024;
  if (opts_.queues == 0) opts_.queues = 1;
  if (opts_.encap.kind == EncapKind::Udp) opts_.default_network = true;  // udp: one network, no VNI
  // One worker: left to the scheduler, nothing to steer. More workers than CPUs: those beyond the
  // CPUs would get no flows, so the flow hash spreads them instead. Otherwise worker q runs on the
  // q-th CPU and owns that CPU's flows (two threads there: its light and its bulk lane); the CPUs
  // beyond the workers' fall back to the flow hash.
  if (opts_.cpu_local && opts_.queues > 1) {
    cpus_ = allowed_cpus();
    cpus_.resize(opts_.queues <= cpus_.size() ? opts_.queues : 0);
  }
  for (uint32_t l = 0; l < lanes(); ++l) base_ctr_.push_back(std::make_unique<CounterBlock>());
  NetworkSet set;
  if (opts_.default_network) {
    NetworkOptions n;
    n.tun_name = opts_.tun_name;
    n.mtu = opts_.mtu;
    n.tun_ip = opts_.tun_ip;
    n.encap = opts_.encap;
    networks_.push_back(std::make_unique<Network>(kDefaultNetwork, n, base_ctr_));
    set.entries.push_back(NetworkSet::Entry{networks_.back().get(), empty_table()});
  }
  publish_set(set);
}

Datapath::~Datapath() { stop(); }

void Datapath::publish_set(const NetworkSet& next) {
  NetworkSet* s = new NetworkSet(next);
  s->version = ++version_;
  std::sort(s->entries.begin(), s->entries.end(),
            [](const NetworkSet::Entry& a, const NetworkSet::Entry& b) { return a.net->encap().vni < b.net->encap().vni; });
  nets_.publish(s);
  wake_workers();
}

void Datapath::wake_workers() {
  const uint64_t one = 1;
  for (int fd : wake_fds_) {
    if (::write(fd, &one, sizeof one) < 0) { /* already readable (counter saturated): awake anyway */ }
  }
}

bool Datapath::open(std::string* err) {
  if (opened_) {
    *err = "datapath already open";
    return false;
  }
  offload_.vnet_hdr = opts_.offload;
  offload_.udp_gso = opts_.offload;
  offload_.udp_gro = opts_.offload;
  own_ports_.clear();
  own_ports_.push_back(opts_.port);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (uint32_t l = 0; l < lanes() && stop_fd_ >= 0; ++l) {
    const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) break;
    wake_fds_.push_back(fd);
  }
  opened_ = true;
  if (stop_fd_ < 0 || wake_fds_.size() != lanes()) {
    *err = std::string("eventfd: ") + std::strerror(errno);
    stop();
    return false;
  }
  if (!cpus_.empty()) {
    if (!load_tun_steering(cpus_, &tun_steer_, err)) {
      stop();
      return false;
    }
  }
  if (opts_.default_network) {
    Network& n = *networks_.front();
    n.bind(opts_, own_ports_, stop_fd_, stopping_);
    if (!n.open_tun(lanes(), opts_.offload, opts_.tun_queue_len, false, err) || !steer(n, err)) {
      stop();
      return false;
    }
    tun_name_ = n.tun_name();
    offload_.tun_tso = n.tun_tso();
    offload_.tun_uso = n.tun_uso();
  }
  // A receiving socket per lane (rx_socks_[lane]); the sending sockets, kTxPorts per worker.
  for (uint32_t l = 0; l < lanes(); ++l) {
    UdpSocketOptions rx;
    rx.bind_ip = opts_.bind_ip;
    rx.port = opts_.port;
    rx.reuseport = lanes() > 1;
    rx.gro = opts_.offload;
    rx.rcvbuf = opts_.sock_buf;
    rx_socks_.push_back(std::make_unique<UdpSocket>());
    if (!rx_socks_.back()->open(rx, err)) {
      stop();
      return false;
    }
    offload_.udp_gro = offload_.udp_gro && rx_socks_.back()->gro();
  }
  for (uint32_t q = 0; q < opts_.queues; ++q) {
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
  if (!cpus_.empty()) {
    std::vector<int> fds;
    for (const auto& r : rx_socks_) fds.push_back(r->fd());
    if (!load_rx_steering(cpus_, fds, encap_overhead(opts_.encap.kind), &rx_steer_, err)) {
      stop();
      return false;
    }
  }
  offload_.cpu_local = !cpus_.empty();
  return true;
}

bool Datapath::start(std::string* err) {
  if (!opened_) {
    *err = "datapath not open";
    return false;
  }
  if (running_) return true;
  stopping_.store(false);
  for (uint32_t l = 0; l < lanes(); ++l) {
    workers_.push_back(std::make_unique<Worker>());
    Worker* w = workers_.back().get();
    w->base = base_ctr_[l].get();
    w->reader = nets_.add_reader();
    w->thread = std::thread([this, w, l] { worker_loop(w, l); });
    name_thread(w->thread, l < opts_.queues ? "wk" : "bk", l % opts_.queues);
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
  // Keep the counter blocks (and the networks, without fds): stats stay readable after stop.
  running_ = false;
  opened_ = false;
  for (auto& n : networks_) n->close_fds();
  for (Retired& r : retired_) {
    r.net->close_fds();
    released_.push_back(std::move(r.net));
  }
  retired_.clear();
  rx_socks_.clear();
  tx_socks_.clear();
  if (stop_fd_ >= 0) ::close(stop_fd_);
  stop_fd_ = -1;
  for (int fd : wake_fds_) ::close(fd);
  wake_fds_.clear();
  unload_steering(&tun_steer_);  // the workers, which write the drain clocks, have stopped
  unload_steering(&rx_steer_);
  reclaim();
}

bool Datapath::steer(Network& n, std::string* err) const {
  return tun_steer_.prog_fd < 0 || attach_tun_steering(n.tun_fd(0), tun_steer_.prog_fd, err);
}

void Datapath::reclaim() {
  nets_.reclaim();
  size_t kept = 0;
  for (Retired& r : retired_) {
    bool held = false;
    for (const auto& w : workers_) held = held || w->seen.load(std::memory_order_acquire) < r.version;
    if (held) {
      retired_[kept++] = std::move(r);
      continue;
    }
    // No worker polls, reads or writes its fds any more: closing them removes the TUN.
    r.net->close_fds();
    released_.push_back(std::move(r.net));
  }
  retired_.resize(kept);
}

uint32_t Datapath::add_network(const NetworkOptions& o, std::string* err) {
  if (!opened_) {
    *err = "datapath not open";
    return kNoNetwork;
  }
  if (opts_.encap.kind != EncapKind::Vxlan) {
    *err = "udp encapsulation carries no VNI: a udp datapath serves only its own network";
    return kNoNetwork;
  }
  if (o.encap.vni > 0xffffff) {
    *err = "VNI " + std::to_string(o.encap.vni) + " does not fit in 24 bits";
    return kNoNetwork;
  }
  for (const auto& n : networks_) {
    if (n->encap().vni == o.encap.vni) {
      *err = "VNI " + std::to_string(o.encap.vni) + " is already served by network " + std::to_string(n->id());
      return kNoNetwork;
    }
    if (n->options().netns == o.netns && n->tun_name() == o.tun_name) {
      *err = "TUN " + o.tun_name + " is already network " + std::to_string(n->id()) + "'s";
      return kNoNetwork;
    }
  }
  NetworkOptions opts = o;
  opts.encap.kind = opts_.encap.kind;
  if (opts.encap.local_mask == 0) opts.encap.local_net = 0;
  opts.encap.local_net &= opts.encap.local_mask;
  const uint32_t id = next_id_++;
  std::unique_ptr<Network> net(new Network(id, opts, base_ctr_));
  net->bind(opts_, own_ports_, stop_fd_, stopping_);
  if (!net->open_tun(lanes(), opts_.offload, opts_.tun_queue_len, true, err)) return kNoNetwork;
  if (!steer(*net, err)) {
    net->close_fds();
    return kNoNetwork;
  }
  NetworkSet next = current_set();
  next.entries.push_back(NetworkSet::Entry{net.get(), empty_table()});
  networks_.push_back(std::move(net));
  publish_set(next);
  return id;
}

bool Datapath::remove_network(uint32_t id, std::string* err) {
  if (id == kDefaultNetwork) {
    *err = "the default network lives as long as the datapath";
    return false;
  }
  auto it = std::find_if(networks_.begin(), networks_.end(), [id](const std::unique_ptr<Network>& n) { return n->id() == id; });
  if (it == networks_.end()) {
    *err = "no network " + std::to_string(id);
    return false;
  }
  NetworkSet next = current_set();
  next.entries.erase(std::remove_if(next.entries.begin(), next.entries.end(),
                                    [id](const NetworkSet::Entry& e) { return e.net->id() == id; }),
                     next.entries.end());
  publish_set(next);
  retired_.push_back(Retired{std::move(*it), version_});
  networks_.erase(it);
  reclaim();
  return true;
}

bool Datapath::network_released(uint32_t id) {
  reclaim();
  for (const auto& n : networks_) {
    if (n->id() == id) return false;
  }
  for (const Retired& r : retired_) {
    if (r.net->id() == id) return false;
  }
  return true;
}

void Datapath::forget_network(uint32_t id) {
  released_.erase(std::remove_if(released_.begin(), released_.end(), [id](const std::unique_ptr<Network>& n) { return n->id() == id; }),
                  released_.end());
}

bool Datapath::set_routes(uint32_t id, RouteTable* table, std::string* err) {
  std::shared_ptr<const RouteTable> t(table);
  NetworkSet next = current_set();
  bool found = false;
  for (NetworkSet::Entry& e : next.entries) {
    if (e.net->id() == id) {
      e.table = t;
      found = true;
    }
  }
  if (!found) {
    *err = "no network " + std::to_string(id);
    return false;
  }
  publish_set(next);
  return true;
}

const Network* Datapath::network(uint32_t id) const {
  for (const auto& n : networks_) {
    if (n->id() == id) return n.get();
  }
  for (const Retired& r : retired_) {
    if (r.net->id() == id) return r.net.get();
  }
  for (const auto& n : released_) {
    if (n->id() == id) return n.get();
  }
  return nullptr;
}

const RouteTable* Datapath::routes_of(uint32_t id) const {
  const NetworkSet::Entry* e = current_set().find(id);
  return e ? e->table.get() : nullptr;
}

void Datapath::totals(uint64_t* out) const {
  for (size_t i = 0; i < kNumCounters; ++i) {
    uint64_t sum = 0;
    for (const auto& b : base_ctr_) sum += b->get(i);
    out[i] = sum;
  }
  if (const Network* n = network(kDefaultNetwork)) n->totals(out);
}

void Datapath::peer_totals(uint32_t slot, uint64_t* out4) const {
  for (size_t k = 0; k < kPeerCounters; ++k) out4[k] = 0;
  if (slot >= kMaxPeerSlots) return;
  for (size_t k = 0; k < kPeerCounters; ++k) {
    uint64_t sum = 0;
    for (const auto& b : base_ctr_) sum += b->peer_get(slot * kPeerCounters + k);
    out4[k] = sum;
  }
}

std::vector<uint64_t> Datapath::lane_packets() const {
  if (const Network* n = network(kDefaultNetwork)) return n->lane_packets();
  return std::vector<uint64_t>(2 * base_ctr_.size(), 0);
}

namespace {

// Tags of the fds in a worker's epoll set that are not a network's TUN queue.
char kSockTag, kWakeTag;

}  // namespace

// One worker per lane (cpu_steering.h: with steering, each CPU's light and bulk lane; otherwise one
// per queue) serves both directions of its socket and of its queue of every network's TUN. It runs
// passes while there is work. Once every fd is drained it blocks in epoll_wait, except after a light
// burst (a few packets since it last slept: request/response traffic, not a bulk flow): then it
// first keeps polling without sleeping for up to busy_poll_us, so an answer arriving within that
// window is handled without a thread wake-up. Bulk flows never spin. A light lane's worker asks the
// scheduler for a short slice (slice_us), a bulk lane's for kBulkSlice times that: when a light
// lane's packet wakes its worker, it preempts the CPU's bulk work at once instead of waiting for
// that work's slice to end (docs/datapath.md, "Under bulk load").
//
// The networks come from the NetworkSet snapshot entered at the top of every loop: when its version
// changed (a network added or removed, or peers changed), the worker rebuilds its per-network state
// (TUN queue and transmit pass for a new network, epoll registration; a removed network's state
// destroyed and its fd taken out of epoll) before any pass, then announces the version it now serves
// (`seen`): a removed network's fds are closed only once every worker has announced a later one.
void Datapath::worker_loop(Worker* w, uint32_t lane) {
  const uint32_t q = lane % opts_.queues;  // the CPU's index among the workers'
  const bool bulk = lane >= opts_.queues;
  if (!cpus_.empty()) pin_to(cpus_[q]);
  request_slice(bulk ? std::min<uint32_t>(opts_.slice_us * kBulkSlice, kMaxSliceUs) : opts_.slice_us);
  // What this worker keeps per network it serves.
  struct Local {
    Network* net;
    std::unique_ptr<TunQueue> tun;
    std::unique_ptr<TxPass> tx;
    RxNet rx;
    const RouteTable* table = nullptr;
    bool tun_ready = true;
    uint64_t drained_at = 0;  // read just before the last tx pass that emptied the queue (drain clock only)
  };
  std::vector<std::unique_ptr<Local>> locals;
  TunBuffers bufs(opts_.batch);  // shared by this worker's TUN queues: its passes run one at a time
  UdpSocket& rx_sock = *rx_socks_[lane];
  UdpSocket* tx_socks[kTxPorts];  // the CPU's: its light and bulk workers share them
  for (size_t k = 0; k < kTxPorts; ++k) tx_socks[k] = tx_socks_[q * kTxPorts + k].get();
  RxNets rx_nets;
  RxPass rx(opts_.encap.kind, opts_.batch, rx_sock, *w->base, rx_nets);
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  bool ok = ep >= 0;
  auto watch = [&](int op, int fd, void* tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = tag;
    return ::epoll_ctl(ep, op, fd, &ev) == 0;
  };
  ok = ok && watch(EPOLL_CTL_ADD, rx_sock.fd(), &kSockTag) && watch(EPOLL_CTL_ADD, stop_fd_, &kWakeTag) &&
       watch(EPOLL_CTL_ADD, wake_fds_[lane], &kWakeTag);
  uint64_t version = 0;
  std::vector<epoll_event> evs(4);
  // Rebuilds the per-network state from `set`; false when epoll refused a TUN fd.
  auto refresh = [&](const NetworkSet& set) {
    bool good = true;
    std::vector<std::unique_ptr<Local>> next;
    for (const NetworkSet::Entry& e : set.entries) {
      auto it = std::find_if(locals.begin(), locals.end(), [&](const std::unique_ptr<Local>& l) { return l && l->net == e.net; });
      std::unique_ptr<Local> l;
      if (it != locals.end()) {
        l = std::move(*it);
      } else {
        Network* n = e.net;
        l.reset(new Local{n, nullptr, nullptr, RxNet(), nullptr, true});
        CounterBlock& ctr = n->counters(lane);
        l->tun.reset(new TunQueue(n->tun_fd(lane), offload_.vnet_hdr, opts_.batch, &ctr, &bufs));
        l->tx.reset(new TxPass(n->env(), *l->tun, tx_socks, kTxPorts, ctr, opts_.icmp_per_sec));
        l->rx.env = &n->env();
        l->rx.tun = l->tun.get();
        l->rx.ctr = &ctr;
        good = good && watch(EPOLL_CTL_ADD, l->tun->fd(), l.get());
      }
      l->table = e.table.get();
      l->rx.table = l->table;
      next.push_back(std::move(l));
    }
    for (auto& l : locals) {
      if (l) watch(EPOLL_CTL_DEL, l->tun->fd(), l.get());  // removed: its fd is still open until we announce
    }
    locals = std::move(next);
    rx_nets.clear();
    for (auto& l : locals) rx_nets.add(&l->rx);
    evs.resize(locals.size() + 3);
    version = set.version;
    w->seen.store(version, std::memory_order_release);
    return good;
  };
  constexpr size_t kLightBurst = 8;  // packets since the last sleep up to which a spin is worth it
  const uint64_t spin_ns = static_cast<uint64_t>(opts_.busy_poll_us) * 1000;
  bool sock_ready = true;
  size_t burst = 0;  // packets handled since the worker last slept
  // This lane's entries of the steering programs' drain clocks (cpu_local: both programs loaded),
  // and what they last got.
  const bool clocked = tun_steer_.drained != nullptr && rx_steer_.drained != nullptr;
  uint64_t* const tun_clock = clocked ? tun_steer_.drained + lane : nullptr;
  uint64_t* const rx_clock = clocked ? rx_steer_.drained + lane : nullptr;
  uint64_t tun_published = 0, rx_published = 0, rx_drained_at = 0;
  while (ok && !stopping_.load(std::memory_order_relaxed)) {
    const NetworkSet* set = w->reader->enter();
    if (set->version != version) ok = refresh(*set);
    // Before this loop's passes: what was queued before t0 and is read by them is handled when
    // they return (one clock reading for all of them).
    const uint64_t t0 = clocked ? now_ns() : 0;
    bool more = false;
    for (auto& l : locals) {
      if (l->tun_ready) {
        l->tun_ready = !l->tx->run(*l->table, &burst);
        if (!l->tun_ready) l->drained_at = t0;  // all queued before t0 was read, and is sent
      }
      more = more || l->tun_ready;
    }
    if (sock_ready) {
      sock_ready = !rx.run(&burst);
      if (!sock_ready) rx_drained_at = t0;  // all received before t0 was read, and is written
    }
    if (clocked) {
      // The steering programs move a flow off this lane only once its clock passes the flow's last packet.
      uint64_t t = UINT64_MAX;
      for (auto& l : locals) t = std::min(t, l->drained_at);
      if (t != UINT64_MAX && t > tun_published) {
        __atomic_store_n(tun_clock, t, __ATOMIC_RELEASE);
        tun_published = t;
      }
      if (rx_drained_at > rx_published) {
        __atomic_store_n(rx_clock, rx_drained_at, __ATOMIC_RELEASE);
        rx_published = rx_drained_at;
      }
    }
    w->reader->leave();
    if (more || sock_ready) continue;  // a full batch: more may be waiting
    const int max = static_cast<int>(evs.size());
    int n = 0;
    if (spin_ns && burst <= kLightBurst) {
      const uint64_t until = now_ns() + spin_ns;
      // Yield between polls: on a busy machine the thread we wait for may need this CPU.
      while ((n = ::epoll_wait(ep, evs.data(), max, 0)) == 0 && now_ns() < until) ::sched_yield();
    }
    if (n == 0) {
      n = ::epoll_wait(ep, evs.data(), max, -1);
      burst = 0;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < n; ++i) {
      void* tag = evs[static_cast<size_t>(i)].data.ptr;
      if (tag == &kSockTag) {
        sock_ready = true;
      } else if (tag == &kWakeTag) {
        uint64_t v;
        if (::read(wake_fds_[lane], &v, sizeof v) < 0) { /* the stop fd, or already drained */ }
      } else {
        static_cast<Local*>(tag)->tun_ready = true;
      }
    }
  }
  w->reader->leave();
  for (auto& l : locals) watch(EPOLL_CTL_DEL, l->tun->fd(), l.get());
  locals.clear();
  w->seen.store(UINT64_MAX, std::memory_order_release);
  if (ep >= 0) ::close(ep);
}

}  // namespace vxnet
