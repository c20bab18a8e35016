// The forwarding engine: a TUN device and UDP sockets joined by worker threads, one per queue.
// Each worker owns one TUN queue (TunQueue), one receiving UDP socket (bound to the port, the
// queues' sockets sharing it with SO_REUSEPORT) and a few sending sockets on ephemeral ports (the
// outer source port: one per inner-flow hash bucket), and runs two passes:
//   tx pass: TUN --read batch--> cut TSO, route, encapsulate (in place) --sendmmsg batch--> peers
//   rx pass: peers --recvmmsg batch--> split GRO trains, validate, decapsulate --coalesce, writev--> TUN
// The route table is an immutable Snapshot swapped in by publish(); workers never lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "counters.h"
#include "encap.h"
#include "route_table.h"
#include "snapshot.h"

namespace vxnet {

struct DatapathOptions {
  std::string tun_name;
  uint32_t mtu = 1450;
  EncapConfig encap;
  uint32_t bind_ip = 0;  // host order; 0 = any
  uint32_t tun_ip = 0;   // the TUN's own address (host order): source of our datagrams routed into it
  uint16_t port = 8285;
  uint32_t batch = 64;   // packets per sendmmsg/recvmmsg
  uint32_t queues = 1;   // TUN queues = workers = UDP sockets (SO_REUSEPORT)
  uint32_t sock_buf = 4 << 20;
  uint32_t icmp_per_sec = 100;  // rate limit of generated ICMP errors, per tx worker
  bool offload = true;          // TUN TSO + UDP GSO/GRO + receive coalescing, where the kernel has them
  uint32_t busy_poll_us = 50;   // after work, poll without sleeping this long before blocking (0: never)
  uint32_t slice_us = 100;      // workers' scheduler slice request (EEVDF, Linux >= 6.12); 0: the default
};

// Which offloads the kernel accepted (each falls back independently).
struct OffloadState {
  bool vnet_hdr = false;  // TUN reads/writes carry a virtio_net_hdr
  bool tun_tso = false;   // the stack may hand us TCP super-packets
  bool tun_uso = false;   // ... and UDP super-packets (TUN_F_USO4, Linux >= 6.2)
  bool udp_gso = false;   // UDP_SEGMENT: one sendmsg carries many datagrams
  bool udp_gro = false;   // UDP_GRO: one recvmsg returns many datagrams
};

class UdpSocket;

class Datapath {
 public:
  // Sending sockets per worker: outer source ports chosen by inner-flow hash.
  static constexpr size_t kTxPorts = 8;

  explicit Datapath(const DatapathOptions& opts);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Opens the TUN queues and UDP sockets (no threads yet). Returns false and sets *err on failure.
  bool open(std::string* err);
  bool start(std::string* err);
  // Joins the workers and closes every fd; the (non-persistent) TUN disappears with them.
  void stop();

  void publish(RouteTable* table) { routes_.publish(table); }
  // Frees snapshots no worker can still be reading.
  void reclaim() { routes_.reclaim(); }

  const std::string& tun_name() const { return tun_name_; }
  bool running() const { return running_; }
  const DatapathOptions& options() const { return opts_; }
  const OffloadState& offload() const { return offload_; }

  // Counter totals over all workers (kNumCounters values), and per-peer counters for `slots`.
  void totals(uint64_t* out) const;
  void peer_totals(uint32_t slot, uint64_t* out4) const;
  // Inner packets sent and received by each worker ([tx, rx] per worker): is the load spread?
  std::vector<uint64_t> worker_packets() const;

  // Synchronous, single-packet paths for tests and microbenchmarks (no fds needed); they
  // count into their own block.
  Drop test_tx(uint8_t* pkt, size_t len, TxResult* out);
  // test_rx completes an offloaded inner checksum in place, as the rx worker does.
  Drop test_rx(uint32_t src_ip, uint8_t* dgram, size_t len, RxResult* out);
  const RouteTable* current_table() const { return routes_.current(); }
  const EncapConfig& encap() const { return encap_; }

 private:
  struct Worker;
  void worker_loop(Worker* w, uint32_t queue);

  DatapathOptions opts_;
  OffloadState offload_;
  const EncapConfig encap_;  // immutable once built: workers read it without synchronisation
  std::string tun_name_;
  std::vector<int> tun_fds_;
  std::vector<std::unique_ptr<UdpSocket>> rx_socks_;  // one per queue, bound to the port
  std::vector<std::unique_ptr<UdpSocket>> tx_socks_;  // kTxPorts per queue
  std::vector<uint16_t> own_ports_;                   // every port we send from (loop detection)
  int stop_fd_ = -1;  // eventfd that wakes every worker on stop
  std::atomic<bool> stopping_{false};
  bool running_ = false;

  Snapshot<RouteTable> routes_;
  std::vector<std::unique_ptr<Worker>> workers_;
  CounterBlock test_counters_;
};

}  // namespace vxnet
