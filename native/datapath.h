// The forwarding engine: a TUN device and a UDP socket joined by worker threads, one per queue,
// each serving both directions of its own TUN queue and UDP socket:
//   tx pass: TUN --read--> tx_encap --sendmmsg--> peers
//   rx pass: peers --recvmmsg--> rx_decap --write--> TUN
// The route table is an immutable snapshot swapped in by publish(); workers announce the
// generation they read (quiescent-state reclamation), so old snapshots are freed without locks.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "counters.h"
#include "encap.h"
#include "route_table.h"

namespace vxnet {

struct DatapathOptions {
  std::string tun_name;
  uint32_t mtu = 1450;
  EncapConfig encap;
  uint32_t bind_ip = 0;  // host order; 0 = any
  uint16_t port = 8285;
  uint32_t batch = 64;   // packets per sendmmsg/recvmmsg
  uint32_t queues = 1;   // TUN queues = workers = UDP sockets (SO_REUSEPORT)
  uint32_t sock_buf = 4 << 20;
  uint32_t icmp_per_sec = 100;  // rate limit of generated ICMP errors, per tx worker
  bool offload = true;          // TUN TSO + UDP GSO/GRO + receive coalescing, where the kernel has them
  uint32_t busy_poll_us = 50;   // after work, poll without sleeping this long before blocking (0: never)
};

// Which offloads the kernel accepted (each falls back independently).
struct OffloadState {
  bool vnet_hdr = false;  // TUN reads/writes carry a virtio_net_hdr
  bool tun_tso = false;   // the stack may hand us TCP super-packets
  bool udp_gso = false;   // UDP_SEGMENT: one sendmsg carries many datagrams
  bool udp_gro = false;   // UDP_GRO: one recvmsg returns many datagrams
};

class Datapath {
 public:
  explicit Datapath(const DatapathOptions& opts);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Opens the TUN queues and UDP sockets (no threads yet). Returns false and sets *err on failure.
  bool open(std::string* err);
  bool start(std::string* err);
  // Joins the workers and closes every fd; the (non-persistent) TUN disappears with them.
  void stop();

  void publish(RouteTable* table);
  // Frees snapshots no worker can still be reading.
  void reclaim();

  const std::string& tun_name() const { return tun_name_; }
  bool running() const { return running_; }
  const DatapathOptions& options() const { return opts_; }
  const OffloadState& offload() const { return offload_; }

  // Counter totals over all workers (kNumCounters values), and per-peer counters for `slots`.
  void totals(uint64_t* out) const;
  void peer_totals(uint32_t slot, uint64_t* out4) const;

  // Synchronous, single-packet paths for tests and microbenchmarks (no fds needed); they
  // count into their own block.
  Drop test_tx(uint8_t* pkt, size_t len, TxResult* out);
  // test_rx completes an offloaded inner checksum in place, as the rx worker does.
  Drop test_rx(uint32_t src_ip, uint8_t* dgram, size_t len, RxResult* out);
  const RouteTable* current_table() const { return table_.load(std::memory_order_acquire); }
  const EncapConfig& encap() const { return encap_; }

 private:
  struct Worker {
    std::atomic<uint64_t> active_gen{0};  // generation being read; 0 = holds no snapshot
    CounterBlock counters;
    std::thread thread;
  };
  struct Retired {
    const RouteTable* table;
    uint64_t gen;
  };

  class PathBase;
  class TxPath;
  class RxPath;
  void worker_loop(Worker* w, uint32_t queue);
  const RouteTable* enter(Worker* w);
  static void leave(Worker* w) { w->active_gen.store(0, std::memory_order_release); }
  void send_icmp(Worker* w, int tun_fd, const uint8_t* pkt, size_t len, uint64_t now_ns, double* tokens,
                 uint64_t* last_ns);

  DatapathOptions opts_;
  OffloadState offload_;
  const EncapConfig encap_;  // immutable once built: workers read it without synchronisation
  std::string tun_name_;
  std::vector<int> tun_fds_;
  std::vector<int> sock_fds_;
  int stop_fd_ = -1;  // eventfd that wakes every worker on stop
  std::atomic<bool> stopping_{false};
  bool running_ = false;

  std::atomic<const RouteTable*> table_{nullptr};
  std::atomic<uint64_t> gen_{1};
  std::mutex retire_mu_;  // control thread only
  std::vector<Retired> retired_;

  std::vector<std::unique_ptr<Worker>> workers_;
  CounterBlock test_counters_;
};

}  // namespace vxnet
