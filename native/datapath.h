// The forwarding engine: a TUN device and UDP sockets joined by worker threads, one per lane.
// Without steering a worker has one lane: one TUN queue (TunQueue), one receiving UDP socket (bound
// to the port, the lanes' sockets sharing it with SO_REUSEPORT) and one thread. With CPU-local
// steering each worker has a light and a bulk lane, each with its own TUN queue, receiving socket
// and thread, both threads pinned to the worker's CPU (cpu_steering.h). A worker's lanes share a
// few sending sockets on ephemeral ports (the outer source port: one per inner-flow hash bucket).
// Each lane's thread runs two passes:
//   tx pass: TUN --read batch--> cut TSO, route, encapsulate (in place) --sendmmsg batch--> peers
//   rx pass: peers --recvmmsg batch--> split GRO trains, validate, decapsulate --coalesce, writev--> TUN
// Several networks (one VNI, TUN, route table and counter set each) may share the sockets and
// workers: received datagrams are demultiplexed by VNI. What the workers read (the networks with
// their route tables) is an immutable NetworkSet swapped in by pointer (Snapshot); workers never lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "counters.h"
#include "cpu_steering.h"
#include "encap.h"
#include "link_stats.h"
#include "options.h"
#include "route_table.h"
#include "snapshot.h"

namespace vxnet {

struct DatapathOptions {
  std::string tun_name;
  uint32_t mtu = 0;      // required (opt::kMtu)
  EncapConfig encap;
  uint32_t bind_ip = 0;  // host order; 0 = any
  uint32_t tun_ip = 0;   // the TUN's own address (host order): source of our datagrams routed into it
  uint16_t port = 0;     // required (opt::kPort)
  uint32_t batch = opt::kBatch.def;  // packets per sendmmsg/recvmmsg
  uint32_t queues = 1;   // TUN queues = workers = UDP sockets (SO_REUSEPORT)
  uint32_t sock_buf = opt::kSockBuf.def;
  uint32_t tun_queue_len = opt::kTunQueueLen.def;  // every network's TUN: packets per queue (txqueuelen)
  uint32_t icmp_per_sec = opt::kIcmpPerSec.def;  // rate limit of generated ICMP errors, per worker thread (lane)
  bool offload = true;          // TUN TSO + UDP GSO/GRO + receive coalescing, where the kernel has them
  uint32_t busy_poll_us = opt::kBusyPollUs.def;  // after work, poll without sleeping this long before blocking (0: never)
  uint32_t slice_us = opt::kSliceUs.def;  // workers' scheduler slice request (EEVDF, Linux >= 6.12); 0: the default
  // With more than one queue and no more queues than CPUs the process may use: worker q runs only
  // on the q-th of those CPUs, a datagram goes to the socket of the worker on the CPU that received
  // it (reuseport BPF) and a new flow from the stack to the TUN queue of the CPU that sent it (TUN
  // steering program with a flow table, cpu_steering.h): a flow's passes and wake-ups stay on one
  // CPU. False: flow-hash spread.
  bool cpu_local = opt::kCpuLocal.def != 0;
  // The network above (tun_name, mtu, encap's VNI/MAC/subnet, tun_ip) is network 0, opened with the
  // datapath. Without it (VXLAN only) the datapath serves only networks added later.
  bool default_network = true;
};

// Which offloads the kernel accepted (each falls back independently).
struct OffloadState {
  bool vnet_hdr = false;  // TUN reads/writes carry a virtio_net_hdr
  bool tun_tso = false;   // the stack may hand us TCP super-packets
  bool tun_uso = false;   // ... and UDP super-packets (TUN_F_USO4, Linux >= 6.2)
  bool udp_gso = false;   // UDP_SEGMENT: one sendmsg carries many datagrams
  bool udp_gro = false;   // UDP_GRO: one recvmsg returns many datagrams
  bool cpu_local = false; // workers pinned, receive and TUN steering programs attached (cpu_local)
};

// One more network served by a datapath's sockets and workers: its own VNI, TUN, peers, counters.
struct NetworkOptions {
  std::string tun_name;
  // A network namespace (a path: an nsfs bind mount such as /run/netns/NAME, or /proc/PID/ns/net)
  // in which the TUN is created; empty: the datapath's own. The queues' fds work from anywhere.
  std::string netns;
  uint32_t mtu = 0;     // required (opt::kMtu)
  uint32_t tun_ip = 0;  // the TUN's own address (host order), as DatapathOptions::tun_ip
  EncapConfig encap;    // vni, local_mac, local_net/mask, icmp_src; kind is the datapath's
};

class UdpSocket;
struct PassEnv;

// A network of a datapath: immutable configuration, its TUN queues (one per worker) and one
// counter block per worker. Owned by the Datapath; workers reach it through the NetworkSet.
class Network {
 public:
  // One counter block per worker, borrowing the per-peer counters of worker_peers[worker].
  Network(uint32_t id, const NetworkOptions& o, std::vector<std::unique_ptr<CounterBlock>>& worker_peers);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  uint32_t id() const { return id_; }
  const NetworkOptions& options() const { return opts_; }
  const EncapConfig& encap() const { return encap_; }
  // What its passes are handed; set up by bind() before any worker sees the network.
  void bind(const DatapathOptions& dp, const std::vector<uint16_t>& own_ports, int stop_fd, const std::atomic<bool>& stopping);
  const PassEnv& env() const { return *env_; }
  const std::string& tun_name() const { return tun_name_; }
  // Opens the TUN queues (in the namespace, if any): false with *err on failure.
  bool open_tun(unsigned queues, bool vnet_hdr, unsigned queue_len, bool must_be_new, std::string* err);
  void close_fds();
  int tun_fd(size_t q) const { return q < tun_fds_.size() ? tun_fds_[q] : -1; }
  bool has_fds() const { return !tun_fds_.empty(); }
  bool tun_tso() const { return tso_; }
  bool tun_uso() const { return uso_; }
  CounterBlock& counters(size_t worker) { return *ctr_[worker]; }
  void totals(uint64_t* out) const;  // adds this network's counters into out[kNumCounters]
  // Inner packets sent and received by each lane's worker: [tx, rx] per lane (Datapath::lanes()).
  std::vector<uint64_t> lane_packets() const;

 private:
  const uint32_t id_;
  const NetworkOptions opts_;
  const EncapConfig encap_;
  std::unique_ptr<PassEnv> env_;
  std::string tun_name_;
  std::vector<int> tun_fds_;
  bool tso_ = false, uso_ = false;
  mutable LinkDropCounter tun_drops_;  // the TUN's queue overflows; read (from the JS thread) by totals()
  std::vector<std::unique_ptr<CounterBlock>> ctr_;  // one per worker
};

// What the workers read: every network with its current route table, in VNI order. Immutable;
// replaced whole (Snapshot) when a network is added or removed or its peers change. `version`
// grows with every set: a worker that has built its state from version V holds nothing of a
// network missing from V's set.
struct NetworkSet {
  struct Entry {
    Network* net;
    std::shared_ptr<const RouteTable> table;  // never null
  };
  uint64_t version = 0;
  std::vector<Entry> entries;
  const Entry* find(uint32_t id) const {
    for (const Entry& e : entries) {
      if (e.net->id() == id) return &e;
    }
    return nullptr;
  }
};

class Datapath {
 public:
  // Sending sockets per worker: outer source ports chosen by inner-flow hash.
  static constexpr size_t kTxPorts = 8;
  static constexpr uint32_t kDefaultNetwork = 0;
  static constexpr uint32_t kNoNetwork = 0xffffffffu;

  explicit Datapath(const DatapathOptions& opts);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Opens the TUN queues and UDP sockets (no threads yet). Returns false and sets *err on failure.
  bool open(std::string* err);
  bool start(std::string* err);
  // Joins the workers and closes every fd; the (non-persistent) TUNs disappear with them.
  void stop();

  // The default network's routes (network 0), as before networks could be added.
  void publish(RouteTable* table) {
    std::string err;
    set_routes(kDefaultNetwork, table, &err);
  }
  // Frees snapshots no worker can still be reading, and closes removed networks no worker holds.
  void reclaim();

  // ---- networks (control thread)
  // Opens the network's TUN queues (one per worker) and publishes it: the workers take it up at
  // the top of their next loop. Returns its id, or kNoNetwork with *err set (VNI already served,
  // udp encapsulation, TUN name taken, namespace or TUN failure). Needs an open datapath.
  uint32_t add_network(const NetworkOptions& o, std::string* err);
  // Unpublishes the network; its fds are closed by reclaim() once every worker has let go of it
  // (network_released()). Its counters stay readable until forget_network().
  bool remove_network(uint32_t id, std::string* err);
  bool network_released(uint32_t id);
  void forget_network(uint32_t id);
  // Takes ownership of `table` (also on failure: unknown network).
  bool set_routes(uint32_t id, RouteTable* table, std::string* err);
  // The network of `id` (live, or removed and not yet forgotten), or nullptr.
  const Network* network(uint32_t id) const;
  const RouteTable* routes_of(uint32_t id) const;

  const std::string& tun_name() const { return tun_name_; }
  bool running() const { return running_; }
  const DatapathOptions& options() const { return opts_; }
  const OffloadState& offload() const { return offload_; }

  // Counter totals (kNumCounters values): the default network's and what belongs to no network
  // (receive batches, datagrams naming no network of ours). Per-peer counters for `slot` (slots
  // are datapath-wide: every network's peers share one space).
  void totals(uint64_t* out) const;
  void peer_totals(uint32_t slot, uint64_t* out4) const;
  // Inner packets sent and received by each lane's worker ([tx, rx] per lane: with steering the
  // light lanes' workers, then the bulk lanes') for the default network.
  std::vector<uint64_t> lane_packets() const;
  // Worker threads: one per queue, or per CPU one for its light and one for its bulk lane.
  uint32_t lanes() const { return cpus_.empty() ? opts_.queues : 2 * opts_.queues; }

  // The default network's routes (nullptr without one).
  const RouteTable* current_table() const { return routes_of(kDefaultNetwork); }

 private:
  struct Worker;
  struct Retired {
    std::unique_ptr<Network> net;
    uint64_t version;  // the first set without it
  };
  void worker_loop(Worker* w, uint32_t lane);
  void publish_set(const NetworkSet& next);  // copies `next` with a new version, publishes, wakes workers
  void wake_workers();
  bool steer(Network& n, std::string* err) const;  // attaches the TUN steering program, if any
  const NetworkSet& current_set() const { return *nets_.current(); }

  DatapathOptions opts_;
  OffloadState offload_;
  std::string tun_name_;
  // Bound to the port, one per lane: per queue, or with steering (lanes() == 2 * queues) worker q's
  // light lane's at q and its bulk lane's at queues + q.
  std::vector<std::unique_ptr<UdpSocket>> rx_socks_;
  std::vector<std::unique_ptr<UdpSocket>> tx_socks_;  // kTxPorts per queue
  std::vector<uint16_t> own_ports_;                   // every port we send from (loop detection)
  int stop_fd_ = -1;  // eventfd that wakes every worker on stop
  std::atomic<bool> stopping_{false};
  bool running_ = false;
  bool opened_ = false;

  // Per worker: what belongs to no network, and the per-peer counters every network shares.
  std::vector<std::unique_ptr<CounterBlock>> base_ctr_;
  std::vector<int> wake_fds_;  // per worker: the network set changed
  uint64_t version_ = 0;       // of the last set published (control thread)
  uint32_t next_id_ = 1;
  std::vector<std::unique_ptr<Network>> networks_;  // live
  std::vector<Retired> retired_;                    // removed, fds open until released
  std::vector<std::unique_ptr<Network>> released_;  // fds closed, counters kept until forgotten
  Snapshot<NetworkSet> nets_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // cpu_local in effect (1 < queues <= CPUs): the first `queues` CPUs the process may run on, in
  // order. Worker q runs on cpus_[q] and gets that CPU's packets (reuseport and TUN programs).
  std::vector<int> cpus_;
  // Steering programs (cpu_steering.h), with cpus_: the TUN's, attached to every network's TUN, and
  // the receiving sockets'.
  Steering tun_steer_, rx_steer_;
};

}  // namespace vxnet
