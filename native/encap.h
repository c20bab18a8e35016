// Encapsulation and decapsulation: flannel `udp` (IPv4 in UDP) and VXLAN (RFC 7348).
// Pure functions over byte buffers: no syscalls, no allocation, every read bounds-checked.
#pragma once

#include <cstddef>
#include <cstdint>

#include "packet.h"
#include "route_table.h"

namespace vxnet {

enum class EncapKind : uint8_t { Udp = 0, Vxlan = 1 };

// Why a packet was dropped: X(enumerator, counter name, meaning). This list is the one owner of
// the drop reasons: the enum, drop_name(), the addon's `counterNames` and the generated TypeScript
// (src/datapath/contract.generated.ts, `npm run gen:contract`) all come from it. Order is the
// order of the counters exposed to JS (after the counters of VXNET_COUNTERS).
#define VXNET_DROPS(X)                                                                                         \
  X(TxShort, "tx_short", "read from the TUN: shorter than an IPv4 header (or than the `virtio_net_hdr`)")     \
  X(TxNotIPv4, "tx_not_ipv4", "read from the TUN: not IPv4 (IPv6 is not routed by the overlay)")              \
  X(TxBadIp, "tx_bad_ip",                                                                                     \
    "read from the TUN: header or total length inconsistent, TSO packet that cannot be segmented, "           \
    "unexpected GSO type")                                                                                    \
  X(TxNoRoute, "tx_no_route",                                                                                 \
    "no peer owns the destination; an ICMP net unreachable is written back (rate limited, RFC 1122 rules)")   \
  X(TxSendError, "tx_send_error", "`sendmmsg` refused the datagram")                                          \
  X(TxTruncated, "tx_truncated",                                                                              \
    "read from the TUN: longer than the read buffer (so cut), or shorter than its `virtio_net_hdr`; never "   \
    "forwarded")                                                                                              \
  X(TxLoop, "tx_loop",                                                                                        \
    "one of our own sending sockets' datagrams came back through the TUN (the underlay route to a peer "      \
    "points into the overlay); never encapsulated again")                                                     \
  X(TxTunQueueFull, "tx_tun_queue_full",                                                                      \
    "dropped by the kernel at the TUN before a worker read it: the worker's queue (`tunQueueLen` packets) "   \
    "was full. Read from the kernel: the TUN's `TX dropped` (`ip -s link`), which would also count the "      \
    "kernel's rarer refusals there")                                                                          \
  X(RxShort, "rx_short", "datagram shorter than the encapsulation + IPv4 header, empty, or truncated")        \
  X(RxUnknownPeer, "rx_unknown_peer", "outer source address is not a known peer")                             \
  X(RxVxlanFlags, "rx_vxlan_flags", "VXLAN I flag not set")                                                   \
  X(RxBadVni, "rx_bad_vni", "VNI is not ours (counted by the datapath, not by a network)")                    \
  X(RxDstMac, "rx_dst_mac", "inner destination MAC is not our VTEP MAC")                                      \
  X(RxEtherType, "rx_ethertype", "inner EtherType is not IPv4")                                               \
  X(RxBadIp, "rx_bad_ip", "inner IPv4 header malformed: version, IHL, total length or header checksum")       \
  X(RxSpoofedSrc, "rx_spoofed_src", "inner source address outside the sending peer's subnet")                 \
  X(RxWrongDst, "rx_wrong_dst", "inner destination outside our own subnet")                                   \
  X(RxTunWriteError, "rx_tun_write_error", "the kernel refused the write into the TUN")

enum class Drop : uint8_t {
#define VXNET_X(e, name, doc) e,
  VXNET_DROPS(VXNET_X)
#undef VXNET_X
  Count
};
const char* drop_name(Drop d);

struct EncapConfig {
  EncapKind kind = EncapKind::Udp;
  uint32_t vni = 1;          // VXLAN network identifier (24 bits)
  uint8_t local_mac[6] = {}; // our VTEP MAC (VXLAN)
  uint32_t local_net = 0;    // our lease, host order; inner destinations must fall inside
  uint32_t local_mask = 0;   // 0 disables the destination check
  uint32_t icmp_src = 0;     // source of the ICMP errors we generate (our TUN address)
};

// Bytes the encapsulation puts in front of the inner IPv4 packet (UDP payload only; the
// kernel adds the outer IPv4 + UDP headers).
constexpr size_t encap_overhead(EncapKind k) { return k == EncapKind::Vxlan ? kVxlanHeader + kEthHeader : 0; }

struct TxResult {
  const Peer* peer = nullptr;  // set when the packet is to be sent
  uint8_t* frame = nullptr;    // start of the UDP payload (inside the caller's headroom)
  size_t frame_len = 0;
  uint32_t dst = 0;            // inner destination (for ICMP on no-route)
};

// Validates an IPv4 packet read from the TUN (lengths, version) and looks up the peer owning its
// destination: out->peer, out->dst and the packet's total length in *tot. Writes nothing.
Drop tx_route(const RouteTable& rt, const uint8_t* pkt, size_t len, TxResult* out, size_t* tot);
// Writes the encapsulation header for `peer` in front of the inner packet at `ip` (at least
// encap_overhead() writable bytes before it); returns the start of the UDP payload.
uint8_t* encap_header(const EncapConfig& cfg, const Peer& peer, uint8_t* ip);

// Hash of the inner flow (addresses, protocol, and ports of unfragmented TCP/UDP): picks the outer
// UDP source port (RFC 7348 5), so one peer's flows spread over the receiver's sockets while each
// flow keeps one path. `len` bytes at `pkt` (an IPv4 packet, not validated). Every input bit
// reaches every output bit: flows that differ only in their source port spread too.
uint32_t flow_hash(const uint8_t* pkt, size_t len);

// A received message of `len` bytes with a UDP GRO size `seg` < len is normally a train of
// `seg`-byte datagrams. One kind of message is not: a peer kernel's GSO packet crossing a veth
// reaches the socket whole, as one datagram far longer than `seg` (the inner TCP MSS). True only
// when the message is provably that one datagram: the first inner packet claims exactly the whole
// message and no datagram boundary of the train reading holds a well-formed encapsulated packet.
// A forged first datagram claiming the train can thus never swallow the genuine datagrams after it.
// `ours` are the VNIs the receiver serves (VXLAN; ignored for udp): a boundary holding a
// well-formed packet for any of them counts, since a train may mix the networks of one peer.
struct VniSet {
  const uint32_t* sorted;  // ascending
  size_t n;
  bool has(uint32_t vni) const;
};
bool rx_message_is_one_datagram(EncapKind kind, const VniSet& ours, const uint8_t* data, size_t len, size_t seg);
// The same for a receiver of one network.
inline bool rx_message_is_one_datagram(const EncapConfig& cfg, const uint8_t* data, size_t len, size_t seg) {
  return rx_message_is_one_datagram(cfg.kind, VniSet{&cfg.vni, 1}, data, len, seg);
}

// The VNI of a VXLAN datagram of at least kVxlanHeader bytes.
inline uint32_t vxlan_vni(const uint8_t* d) {
  return (static_cast<uint32_t>(d[4]) << 16) | (static_cast<uint32_t>(d[5]) << 8) | d[6];
}

// Validates an IPv4 packet read from the TUN at `pkt` (with at least encap_overhead() bytes of
// writable headroom before it), looks up the peer and writes the encapsulation header in place.
// Returns Drop::Count on success.
Drop tx_encap(const EncapConfig& cfg, const RouteTable& rt, uint8_t* pkt, size_t len, TxResult* out);

struct RxResult {
  const Peer* peer = nullptr;
  const uint8_t* inner = nullptr;  // inner IPv4 packet, trimmed to its total length
  size_t inner_len = 0;
};

// Validates a datagram received from `src_ip` (host order) and finds the inner IPv4 packet.
// Returns Drop::Count when it may be written into the TUN.
Drop rx_decap(const EncapConfig& cfg, const RouteTable& rt, uint32_t src_ip, const uint8_t* dgram, size_t len,
              RxResult* out);

// Checks an IPv4 header: version, IHL, total length against `avail`, header checksum.
// On success stores the total length in *total.
bool ipv4_header_ok(const uint8_t* p, size_t avail, size_t* total);

// Builds an ICMP destination-unreachable (net unreachable) for the offending packet into `out`
// (at least kIcmpReplyMax bytes). Returns its length, or 0 when RFC 1122 3.2.2 forbids a reply:
// the offender is an ICMP error (or of an unknown ICMP type), a non-first fragment, its source
// is not a single host (0/8, 127/8, 224/4, 240/4 and 255.255.255.255), or it was sent to a
// multicast, broadcast or otherwise non-host destination (the same ranges).
constexpr size_t kIcmpReplyMax = 20 + 8 + 60 + 8;
size_t build_icmp_unreachable(const EncapConfig& cfg, const uint8_t* offender, size_t len, uint8_t* out);

}  // namespace vxnet
