// One queue of the TUN device, batched: reads (one read() per packet until the queue is empty or
// the batch is full), the virtio_net_hdr in front of every packet, TSO super-packets cut into
// segments (headers built in a small arena, payload left in the read buffer), and writes with
// receive-side TCP coalescing (writev of a header and payload slices: no copy).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "counters.h"
#include "offload.h"
#include "packet.h"

namespace vxnet {

// A packet read from the TUN.
struct TunPacket {
  uint8_t* pkt;    // the IPv4 packet; kHeadroom writable bytes precede it
  size_t len;
  VnetHdr vh;      // all zero without offloads
  bool truncated;  // longer than any packet can be: the read was cut, never forward it
};

// One TSO segment: headers in the arena (with kHeadroom writable bytes before them), payload in place.
struct TsoSegment {
  uint8_t* hdr;
  size_t hdr_len;
  const uint8_t* payload;
  size_t payload_len;
};

// The read slots and segment-header arena of a TUN queue. One worker may share one TunBuffers among
// the queues of several networks' TUNs: a transmit pass leaves nothing pointing into them (it
// sends everything before it returns), and the passes of one worker run one after the other.
struct TunBuffers {
  explicit TunBuffers(size_t batch);
  size_t batch;
  std::unique_ptr<uint8_t[]> slots;
  std::unique_ptr<uint8_t[]> hdrs;
  size_t hdr_used = 0;
};

class TunQueue {
 public:
  // Largest read: the virtio_net_hdr plus the longest IPv4 packet, plus one byte to see truncation.
  static constexpr size_t kReadCap = kVnetHdrLen + 65535 + 1;
  static constexpr size_t kSlotStride = kHeadroom + kReadCap + 7;  // 8-byte aligned slots
  // Segment headers: headroom for the encapsulation + IPv4 and TCP headers with options.
  static constexpr size_t kHdrStride = kHeadroom + 128;
  static constexpr size_t kHdrSlots = 2048;

  TunQueue(int fd, bool vnet, size_t batch, CounterBlock* counters);
  // With the buffers of `shared` (at least `batch` slots), which must outlive the queue.
  TunQueue(int fd, bool vnet, size_t batch, CounterBlock* counters, TunBuffers* shared);
  TunQueue(const TunQueue&) = delete;
  TunQueue& operator=(const TunQueue&) = delete;

  int fd() const { return fd_; }
  bool vnet() const { return vnet_; }

  // ---- transmit side (TUN -> peers)
  // Reads up to `max` (<= batch) packets into out[]; *drained is set when the queue said EAGAIN.
  // The packets stay valid until the next read().
  size_t read(size_t max, TunPacket* out, bool* drained);
  // TSO cutting: segment `k` of a planned super-packet (tcp4_gso_plan), its headers built in the
  // arena. hdr_free() says how many segments fit before hdr_reset(), which the caller may call once
  // every segment handed out has been sent.
  size_t hdr_free() const { return kHdrSlots - buf_->hdr_used; }
  TsoSegment tso_segment(const TunPacket& p, const TcpGso& plan, size_t k);
  // The same for a UDP super-packet (GSO_UDP_L4, read when the TUN has TUN_F_USO4).
  TsoSegment uso_segment(const TunPacket& p, const UdpGso& plan, size_t k);
  void hdr_reset() { buf_->hdr_used = 0; }

  // ---- receive side (peers -> TUN)
  // Delivers a validated inner IPv4 packet: coalesced with its flow's neighbours, or written.
  // The bytes must stay valid and unchanged until flush().
  void deliver(const uint8_t* pkt, size_t len, bool csum_ok);
  // Writes a packet as it is, with `vh` in front (a super-packet prepared for TSO), after any
  // held data of its flow.
  void deliver_whole(const uint8_t* vh, const uint8_t* pkt, size_t len);
  // Writes everything held.
  void flush();
  // Writes one packet with no offload flags (ICMP errors); false when the kernel refused it.
  bool write_plain(const uint8_t* pkt, size_t len);

  // Stop merging UDP datagrams (the kernel has no GSO_UDP_L4 on its TUN writes).
  void disable_udp_coalescing() { uso_ok_ = false; }
  bool udp_coalescing() const { return uso_ok_; }

  // Tests and fuzzing: what would be written goes to `tap` instead of the fd.
  using Tap = void (*)(void* ctx, const uint8_t* vh, const iovec* iov, size_t niov, size_t len);
  void set_tap(Tap tap, void* ctx) {
    tap_ = tap;
    tap_ctx_ = ctx;
  }

 private:
  struct Emit {
    TunQueue* q;
    bool operator()(const uint8_t* vh, const iovec* iov, size_t niov, size_t len) const { return q->write(vh, iov, niov, len); }
  };
  bool write(const uint8_t* vh, const iovec* iov, size_t niov, size_t len);

  const int fd_;
  const bool vnet_;
  const size_t batch_;
  CounterBlock* const ctr_;
  std::unique_ptr<TunBuffers> own_;  // unless shared
  TunBuffers* const buf_;
  TcpCoalescer gro_;
  UdpCoalescer udp_gro_;
  bool uso_ok_ = true;  // the kernel takes GSO_UDP_L4 writes (until it refuses one)
  Tap tap_ = nullptr;
  void* tap_ctx_ = nullptr;
};

}  // namespace vxnet
