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

// Counters: X(enumerator, counter name, meaning). The one owner of the counter list: the enum,
// ctr_name(), the addon's `counterNames` and the generated TypeScript fields of DatapathStats
// (src/datapath/contract.generated.ts, `npm run gen:contract`, camelCased) all come from it.
#define VXNET_COUNTERS(X)                                                                                         \
  X(TxPackets, "tx_packets", "Inner packets sent to peers.")                                                      \
  X(TxBytes, "tx_bytes", "Inner bytes sent to peers.")                                                            \
  X(RxPackets, "rx_packets", "Inner packets written into the TUN.")                                               \
  X(RxBytes, "rx_bytes", "Inner bytes written into the TUN.")                                                     \
  X(TxBatches, "tx_batches", "`sendmmsg` calls.")                                                                 \
  X(RxBatches, "rx_batches", "`recvmmsg` calls that returned data.")                                              \
  X(TunReads, "tun_reads", "Reads from the TUN that returned a packet.")                                          \
  X(TunWrites, "tun_writes", "Writes into the TUN.")                                                              \
  X(TunTsoReads, "tun_tso_reads", "TCP super-packets read from the TUN and segmented in the datapath (TSO).")    \
  X(TunGroWrites, "tun_gro_writes", "Coalesced TCP super-packets written into the TUN (GRO).")                    \
  X(IcmpSent, "icmp_unreachable_sent", "ICMP unreachable messages written back into the TUN.")                    \
  X(IcmpSuppressed, "icmp_unreachable_suppressed",                                                                \
    "No-route packets for which RFC 1122 or the rate limit forbade an ICMP reply.")                               \
  X(RxCsumCompleted, "rx_csum_completed",                                                                         \
    "Received TCP/UDP packets whose sender left the checksum to offload (the field held only the pseudo-header "  \
    "sum, as a kernel peer on a veth underlay sends them); the datapath filled it in.")                          \
  X(RxSuperPackets, "rx_super_packets",                                                                           \
    "Received TCP super-packets (a peer's GSO packet delivered whole over a veth underlay), written as TSO.")      \
  X(TunUsoReads, "tun_uso_reads",                                                                                 \
    "UDP super-packets (GSO_UDP_L4, a local UDP_SEGMENT sender) read from the TUN and cut into datagrams.")

enum class Ctr : uint8_t {
#define VXNET_X(e, name, doc) e,
  VXNET_COUNTERS(VXNET_X)
#undef VXNET_X
  Count
};
inline const char* ctr_name(Ctr c) {
  static const char* const kNames[] = {
#define VXNET_X(e, name, doc) name,
      VXNET_COUNTERS(VXNET_X)
#undef VXNET_X
  };
  return name_at(kNames, static_cast<size_t>(c));
}

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
