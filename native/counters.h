// Per-worker counters: each block is written by one thread only (relaxed store, no lock prefix)
// and summed by the control thread on read. A block may borrow the per-peer counters of another
// block written by the same thread: the networks a worker serves share its per-peer slots (peer
// slots are assigned datapath-wide), while each network has its own totals.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "encap.h"

namespace vxnet {

enum class Ctr : uint8_t {
  TxPackets = 0,  // inner packets sent to peers
  TxBytes,        // inner bytes sent
  RxPackets,      // inner packets written into the TUN
  RxBytes,
  TxBatches,      // sendmmsg calls
  RxBatches,      // recvmmsg calls returning data
  TunReads,
  TunWrites,
  TunTsoReads,    // TCP super-packets read from the TUN (segmented here)
  TunGroWrites,   // coalesced TCP super-packets written into the TUN
  IcmpSent,       // ICMP unreachable written back into the TUN
  IcmpSuppressed, // no-route packets for which RFC 1122 or the rate limit forbade an ICMP reply
  RxCsumCompleted,// received TCP/UDP packets whose sender had left the checksum to offload (filled in)
  RxSuperPackets, // received TCP super-packets (a peer's GSO packet handed over whole), written as TSO
  TunUsoReads,    // UDP super-packets read from the TUN (a local UDP_SEGMENT sender), cut here
  Count
};
const char* ctr_name(Ctr c);

constexpr size_t kNumCounters = static_cast<size_t>(Ctr::Count) + static_cast<size_t>(Drop::Count);
constexpr size_t kMaxPeerSlots = 65536;
constexpr size_t kPeerCounters = 4;  // tx packets, tx bytes, rx packets, rx bytes

class alignas(64) CounterBlock {
 public:
  CounterBlock() : own_peers_(new std::atomic<uint64_t>[kMaxPeerSlots * kPeerCounters]()), peers_(own_peers_.get()) {}
  // Totals of its own, per-peer counters those of `peers_of` (which must outlive this block and
  // be written by the same thread).
  explicit CounterBlock(CounterBlock* peers_of) : peers_(peers_of->peers_) {}
  CounterBlock(const CounterBlock&) = delete;
  CounterBlock& operator=(const CounterBlock&) = delete;
  void add(Ctr c, uint64_t v) { bump(vals_[static_cast<size_t>(c)], v); }
  void drop(Drop d) { bump(vals_[static_cast<size_t>(Ctr::Count) + static_cast<size_t>(d)], 1); }
  void peer(uint32_t slot, size_t which, uint64_t bytes, uint64_t packets = 1) {
    if (slot >= kMaxPeerSlots) return;
    std::atomic<uint64_t>* p = &peers_[slot * kPeerCounters + which];
    bump(p[0], packets);
    bump(p[1], bytes);
  }
  uint64_t get(size_t i) const { return vals_[i].load(std::memory_order_relaxed); }
  uint64_t peer_get(size_t i) const { return peers_[i].load(std::memory_order_relaxed); }

 private:
  static void bump(std::atomic<uint64_t>& a, uint64_t v) {
    a.store(a.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);
  }
  std::atomic<uint64_t> vals_[kNumCounters] = {};
  std::unique_ptr<std::atomic<uint64_t>[]> own_peers_;
  std::atomic<uint64_t>* peers_;
};

}  // namespace vxnet
