// TUN offloads: the kernel hands us TCP super-packets (TSO) with a virtio_net_hdr, we cut them into
// MSS-sized segments for the wire; on receive we glue consecutive segments of a flow back into one
// super-packet (GRO) so the local stack sees one packet instead of forty. Pure functions, no syscalls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <sys/uio.h>

#include "packet.h"

namespace vxnet {

// struct virtio_net_hdr (10 bytes, host byte order on a TUN without TUNSETVNETBE/LE).
constexpr size_t kVnetHdrLen = 10;
constexpr uint8_t kVnetFlagNeedsCsum = 1;
constexpr uint8_t kVnetGsoNone = 0;
constexpr uint8_t kVnetGsoTcpV4 = 1;
constexpr uint8_t kVnetGsoUdpL4 = 5;  // VIRTIO_NET_HDR_GSO_UDP_L4 (TUN: Linux >= 6.2, TUN_F_USO4)
constexpr uint8_t kVnetGsoEcn = 0x80;

struct VnetHdr {
  uint8_t flags = 0;
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0;
  uint16_t gso_size = 0;
  uint16_t csum_start = 0;
  uint16_t csum_offset = 0;
};
VnetHdr vnet_load(const uint8_t* p);
void vnet_store(uint8_t* p, const VnetHdr& h);

// Completes a checksum the kernel left partial (NEEDS_CSUM): the field holds the pseudo-header sum.
// A UDP checksum (IPv4, protocol 17, field at csum_start = IHL, csum_offset 6) that computes to 0
// is stored as 0xffff (RFC 768).
bool vnet_finish_csum(uint8_t* pkt, size_t len, uint16_t csum_start, uint16_t csum_offset);

// Receive side: a sender that offloaded its TCP/UDP checksum (Linux CHECKSUM_PARTIAL) leaves the
// folded pseudo-header sum in the checksum field and relies on the NIC to finish it. A veth never
// does, so a kernel vxlan peer on a veth underlay puts such packets on the wire, and a UDP socket
// hands them to us as they are. complete_offloaded_csum() recognises exactly that form and fills in
// the real checksum over the bytes received; any other value is left alone for the stack to verify.
enum class L4Csum : uint8_t {
  NotChecked = 0,  // not TCP/UDP, a fragment, or too short: untouched
  Completed,       // the field held the pseudo-header sum: the checksum is now computed and stored
  Untouched,       // a TCP/UDP checksum in any other form (correct, wrong, or UDP "none")
};
// `pkt` is a validated IPv4 packet of exactly `len` bytes (its total length).
L4Csum complete_offloaded_csum(uint8_t* pkt, size_t len);

// An IPv4/TCP super-packet ready to be segmented.
struct TcpGso {
  size_t ihl = 0;      // IPv4 header bytes
  size_t hdr = 0;      // IPv4 + TCP header bytes
  size_t payload = 0;  // TCP payload bytes
  size_t mss = 0;
  size_t segments = 0;
};
// Largest IPv4 packet one planned segment may be: with the largest encapsulation (VXLAN, 22 bytes)
// it must still fit one UDP datagram (65535 - 20 - 8 bytes of payload), the limit of a UDP GSO send.
constexpr size_t kMaxUdpPayload = 65535 - 20 - 8;
constexpr size_t kMaxTcpSegment = kMaxUdpPayload - (8 + 14);
// Validates a TSO packet (IPv4, TCP, lengths, gso_size); false when it cannot be segmented.
// plan->mss is gso_size, or the payload when that is smaller (one segment); hdr + mss is at most
// kMaxTcpSegment, so one segment with its encapsulation always fits one UDP GSO message.
bool tcp4_gso_plan(const uint8_t* pkt, size_t len, uint16_t gso_size, TcpGso* plan);
// Writes the headers of segment `i` of the plan into `hdr_out` (plan.hdr bytes): fixed length, IP id,
// sequence number, flags and full IP and TCP checksums (the TCP one over these headers and the
// payload slice). The payload stays where it is: *payload/*payload_len point into `pkt` (no copy).
// Returns the segment's total length.
size_t tcp4_gso_segment_hdr(const uint8_t* pkt, const TcpGso& plan, size_t i, uint8_t* hdr_out,
                            const uint8_t** payload, size_t* payload_len);
// The same, contiguous: writes segment `i` into `out` (room for hdr + mss bytes). Returns its length.
size_t tcp4_gso_segment(const uint8_t* pkt, const TcpGso& plan, size_t i, uint8_t* out);

// Receive side: a TCP super-packet longer than the TUN MTU. A peer kernel's GSO packet crossing a
// veth underlay reaches our UDP socket whole (one datagram of up to 64 KiB, never split), so its
// inner packet is a TSO packet. Checks it (unfragmented IPv4, TCP, lengths; the TCP checksum over
// all of it unless `csum_ok`), then prepares it to be written into the TUN as a TSO packet cut into
// segments of at most `mtu` bytes: the checksum field gets the pseudo-header sum and *vnet_out (10
// bytes) the virtio_net_hdr. False, with the packet unchanged, when it cannot be passed on.
bool tcp4_super_prepare(uint8_t* pkt, size_t len, size_t mtu, bool csum_ok, uint8_t* vnet_out);

// Receive-side coalescing of TCP segments into super-packets, a few flows at a time, without
// copying payload: a held flow is a header copy plus slices of the pushed packets, written with one
// writev. Pushed packets must stay valid and unchanged until they are emitted (flush at the end of a
// receive pass). emit(vnet, iov, niov, len) receives every packet to write into the TUN: `vnet` is the
// 10-byte virtio_net_hdr to put in front of the `len` bytes in iov[0..niov).
class TcpCoalescer {
 public:
  static constexpr size_t kFlows = 8;
  static constexpr size_t kMaxSuper = 65535;
  static constexpr size_t kMaxSegs = 64;       // payload slices per held flow
  static constexpr size_t kMaxHdr = 20 + 60;   // option-less IPv4 + the longest TCP header
  static constexpr size_t kMaxIov = 1 + kMaxSegs;

  // Takes a validated inner IPv4 packet (total length == len): holds it, merges it into a held
  // flow, or emits it at once (after the held data of its flow, to keep order).
  // `csum_ok`: the caller already verified (or computed) the TCP checksum over these bytes.
  template <typename Emit>
  void push(const uint8_t* pkt, size_t len, Emit&& emit, bool csum_ok = false) {
    Key k;
    if (!parse(pkt, len, csum_ok, &k)) {
      // Not coalescable (IP options, a bad TCP header, a fragment...), but maybe of a held flow:
      // that flow's data goes first, or this packet would overtake it.
      flush_flow_of(pkt, len, emit);
      emit_direct(pkt, len, emit);
      return;
    }
    const int i = find(k);
    if (i >= 0) {
      if (merge(static_cast<size_t>(i), k, pkt)) return;
      emit_flow(static_cast<size_t>(i), emit);
    }
    if (!k.mergeable) {
      emit_direct(pkt, len, emit);
      return;
    }
    size_t slot = kFlows;
    for (size_t j = 0; j < kFlows && slot == kFlows; ++j) {
      if (!flows_[j].used) slot = j;
    }
    if (slot == kFlows) {  // table full: make room, oldest first
      slot = evict_next_;
      evict_next_ = (evict_next_ + 1) % kFlows;
      emit_flow(slot, emit);
    }
    hold(slot, k, pkt, len);
  }

  // Emits the held data of the TCP flow of `pkt` (an IPv4 packet of `len` bytes), if any: call it
  // before a packet of that flow goes to the TUN some other way, to keep the flow in order.
  template <typename Emit>
  void flush_flow_of(const uint8_t* pkt, size_t len, Emit&& emit) {
    const size_t ihl = len >= 20 ? static_cast<size_t>(pkt[0] & 0x0f) * 4 : 0;
    if (ihl < 20 || ihl + 4 > len || pkt[9] != 6) return;
    if ((load_be16(pkt + 6) & 0x1fff) != 0) return;  // a non-first fragment has no ports
    Key k{};
    k.saddr = load_be32(pkt + 12);
    k.daddr = load_be32(pkt + 16);
    k.sport = load_be16(pkt + ihl);
    k.dport = load_be16(pkt + ihl + 2);
    const int i = find(k);
    if (i >= 0) emit_flow(static_cast<size_t>(i), emit);
  }

  template <typename Emit>
  void flush(Emit&& emit) {
    for (size_t i = 0; i < kFlows; ++i) {
      if (flows_[i].used) emit_flow(i, emit);
    }
  }

 private:
  struct Key {
    uint32_t saddr, daddr;
    uint16_t sport, dport;
    uint32_t seq;
    size_t hdr, payload;
    uint8_t flags;
    bool mergeable;  // plain data segment (ACK and maybe PSH only)
  };
  struct Flow {
    bool used = false;
    bool closed = false;  // saw a short segment or PSH: nothing may follow
    bool psh = false;
    uint32_t saddr = 0, daddr = 0;
    uint16_t sport = 0, dport = 0;
    uint32_t next_seq = 0;
    size_t hdr = 0;  // ip + tcp header bytes
    size_t mss = 0;  // payload of the first segment
    size_t len = 0;  // bytes held (from the IP header on)
    size_t segments = 0;
    const uint8_t* first = nullptr;  // the first packet, as pushed
    uint8_t head[kVnetHdrLen + kMaxHdr];  // virtio_net_hdr + the super-packet's headers (finish())
    iovec iov[kMaxIov];                   // [0] headers, then one payload slice per segment
  };
  static bool parse(const uint8_t* pkt, size_t len, bool csum_ok, Key* k);
  int find(const Key& k) const;
  bool merge(size_t i, const Key& k, const uint8_t* pkt);
  void hold(size_t i, const Key& k, const uint8_t* pkt, size_t len);
  void finish(size_t i);  // builds the headers and the vnet header of a merged flow
  template <typename Emit>
  void emit_flow(size_t i, Emit& emit) {
    Flow& f = flows_[i];
    f.used = false;
    if (f.segments == 1) {
      emit_direct(f.first, f.len, emit);
      return;
    }
    finish(i);
    emit(static_cast<const uint8_t*>(f.head), static_cast<const iovec*>(f.iov), f.segments + 1, f.len);
  }
  template <typename Emit>
  static void emit_direct(const uint8_t* pkt, size_t len, Emit& emit) {
    static const uint8_t kNoOffload[kVnetHdrLen] = {};
    const iovec v{const_cast<uint8_t*>(pkt), len};
    emit(static_cast<const uint8_t*>(kNoOffload), &v, size_t{1}, len);
  }

  Flow flows_[kFlows];
  size_t evict_next_ = 0;
};

// A UDP super-packet read from the TUN (GSO_UDP_L4: a sender's UDP_SEGMENT send, or a forwarded
// GRO train): IPv4 + UDP header, then datagram payloads of gso_size bytes (the last may be shorter).
struct UdpGso {
  size_t ihl = 0;
  size_t payload = 0;  // all payload bytes
  size_t seg = 0;      // payload bytes per datagram
  size_t segments = 0;
};
bool udp4_gso_plan(const uint8_t* pkt, size_t len, uint16_t gso_size, UdpGso* plan);
// Writes the IPv4 + UDP headers of datagram `i` into hdr_out (ihl + 8 bytes): length, IP id, and the
// full UDP checksum over the headers and the payload slice (0 computed is sent as 0xFFFF). The
// payload stays in place. Returns the datagram's total length.
size_t udp4_gso_segment_hdr(const uint8_t* pkt, const UdpGso& plan, size_t i, uint8_t* hdr_out,
                            const uint8_t** payload, size_t* payload_len);

// Receive-side coalescing of UDP datagrams of one flow (same addresses and ports, equal payload
// sizes, the last may be shorter) into one GSO_UDP_L4 packet: the receiving host's stack carries
// one packet to the container and cuts it in front of the socket. Only datagrams whose checksum
// verified (or was just computed) are merged, since the merged packet is handed up as verified.
// emit(vnet, iov, niov, len) returns false when the kernel refused a merged packet: its datagrams
// are then emitted one by one. Pushed packets must stay valid until flush().
class UdpCoalescer {
 public:
  static constexpr size_t kFlows = 8;
  static constexpr size_t kMaxSegs = 64;

  template <typename Emit>
  void push(const uint8_t* pkt, size_t len, Emit&& emit, bool csum_ok) {
    Key k;
    if (!parse(pkt, len, csum_ok, &k)) {
      flush_key(k, emit);  // keep the flow in order
      emit_direct(pkt, len, emit);
      return;
    }
    const int i = find(k);
    if (i >= 0) {
      if (merge(static_cast<size_t>(i), k, pkt, len)) return;
      emit_flow(static_cast<size_t>(i), emit);
    }
    size_t slot = kFlows;
    for (size_t j = 0; j < kFlows && slot == kFlows; ++j) {
      if (!flows_[j].used) slot = j;
    }
    if (slot == kFlows) {
      slot = evict_next_;
      evict_next_ = (evict_next_ + 1) % kFlows;
      emit_flow(slot, emit);
    }
    hold(slot, k, pkt, len);
  }

  template <typename Emit>
  void flush(Emit&& emit) {
    for (size_t i = 0; i < kFlows; ++i) {
      if (flows_[i].used) emit_flow(i, emit);
    }
  }

 private:
  struct Key {
    uint32_t saddr = 0, daddr = 0;
    uint16_t sport = 0, dport = 0;
    size_t payload = 0;
    bool has_ports = false;
  };
  struct Flow {
    bool used = false;
    bool closed = false;
    Key k;
    size_t seg = 0;  // payload bytes of the first datagram
    size_t len = 0;  // bytes of the merged packet (IP header on)
    size_t segments = 0;
    const uint8_t* pkts[kMaxSegs];
    size_t lens[kMaxSegs];
    uint8_t head[kVnetHdrLen + 28];
    iovec iov[1 + kMaxSegs];
  };
  static bool parse(const uint8_t* pkt, size_t len, bool csum_ok, Key* k);
  int find(const Key& k) const;
  bool merge(size_t i, const Key& k, const uint8_t* pkt, size_t len);
  void hold(size_t i, const Key& k, const uint8_t* pkt, size_t len);
  void finish(size_t i);
  template <typename Emit>
  void flush_key(const Key& k, Emit& emit) {
    if (!k.has_ports) return;
    const int i = find(k);
    if (i >= 0) emit_flow(static_cast<size_t>(i), emit);
  }
  template <typename Emit>
  void emit_flow(size_t i, Emit& emit) {
    Flow& f = flows_[i];
    f.used = false;
    if (f.segments > 1) {
      finish(i);
      if (emit(static_cast<const uint8_t*>(f.head), static_cast<const iovec*>(f.iov), f.segments + 1, f.len)) return;
    }
    for (size_t s = 0; s < f.segments; ++s) emit_direct(f.pkts[s], f.lens[s], emit);
  }
  template <typename Emit>
  static void emit_direct(const uint8_t* pkt, size_t len, Emit& emit) {
    static const uint8_t kNoOffload[kVnetHdrLen] = {};
    const iovec v{const_cast<uint8_t*>(pkt), len};
    emit(static_cast<const uint8_t*>(kNoOffload), &v, size_t{1}, len);
  }

  Flow flows_[kFlows];
  size_t evict_next_ = 0;
};

}  // namespace vxnet
