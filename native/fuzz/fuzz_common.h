// Shared pieces of the libFuzzer targets in native/fuzz/ (built by scripts/fuzz.sh): the datapath's
// buffer sizes, an input reader, fix-ups that let mutated bytes pass the cheap validity checks (so
// the fuzzer reaches what lies behind them), and the checks every target applies to what comes out.
#pragma once

#include <sanitizer/asan_interface.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../encap.h"
#include "../offload.h"
#include "../packet.h"
#include "../route_table.h"

namespace fuzz {

using namespace vxnet;

// Buffer geometry: the targets use the datapath's own (TunQueue::kReadCap, kSlotStride,
// UdpRecvBatch::kBufSize, kHeadroom), never copies of it.

#define FUZZ_CHECK(cond, what)                                                       \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s (%s)\n", __FILE__, __LINE__, \
                   what, #cond);                                                     \
      std::abort();                                                                  \
    }                                                                                \
  } while (0)

// Sequential reader over the fuzz input; reads past the end yield zeros.
class Reader {
 public:
  Reader(const uint8_t* d, size_t n) : d_(d), n_(n) {}
  size_t left() const { return n_ - off_; }
  uint8_t u8() { return off_ < n_ ? d_[off_++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>((u8() << 8) | u8()); }
  uint32_t u32() { return (static_cast<uint32_t>(u16()) << 16) | u16(); }
  // Up to `want` bytes (fewer at the end of the input).
  const uint8_t* take(size_t want, size_t* got) {
    *got = want < left() ? want : left();
    const uint8_t* p = d_ + off_;
    off_ += *got;
    return p;
  }

 private:
  const uint8_t* d_;
  size_t n_;
  size_t off_ = 0;
};

// Marks [p, p + n) unreadable (ASan): buffers keep the datapath's sizes, and a read past the
// bytes actually received is still caught.
inline void poison(const uint8_t* p, size_t n) { ASAN_POISON_MEMORY_REGION(p, n); }
inline void unpoison(const uint8_t* p, size_t n) { ASAN_UNPOISON_MEMORY_REGION(p, n); }

constexpr uint8_t kTcp = 6, kUdp = 17;

// TCP/UDP pseudo-header sum (not folded) for an IPv4 packet whose L4 part is `l4_len` bytes.
inline uint32_t pseudo(const uint8_t* ip, size_t l4_len, uint8_t proto) {
  uint8_t ph[12];
  std::memcpy(ph, ip + 12, 8);
  ph[8] = 0;
  ph[9] = proto;
  store_be16(ph + 10, static_cast<uint16_t>(l4_len));
  return csum_partial(ph, sizeof ph);
}

inline size_t ihl_of(const uint8_t* ip) { return static_cast<size_t>(ip[0] & 0x0f) * 4; }

// A complete IPv4 packet of exactly `len` bytes with a correct header checksum.
inline bool ipv4_valid(const uint8_t* p, size_t len) {
  size_t tot = 0;
  return len <= 65535 && ipv4_header_ok(p, len, &tot) && tot == len;
}

// The TCP or UDP checksum of a (complete) IPv4 packet verifies.
inline bool l4_csum_ok(const uint8_t* ip, size_t len, uint8_t proto) {
  const size_t ihl = ihl_of(ip);
  return csum_partial(ip + ihl, len - ihl, pseudo(ip, len - ihl, proto)) == 0xffff;
}

// Fix-ups driven by one control byte, applied to an IPv4 packet of `len` bytes in place.
enum : uint8_t {
  kFixTotLen = 1 << 0,   // total length := len
  kFixIpCsum = 1 << 1,   // header checksum := correct
  kFixL4Shift = 2,       // bits 2-3: 0 keep, 1 correct TCP/UDP checksum, 2 pseudo-header sum (offloaded form)
  kFixUdpLen = 1 << 4,   // UDP length := L4 length
};
inline void fix_packet(uint8_t* p, size_t len, uint8_t ctrl) {
  if (len < kIPv4MinHeader) return;
  if (ctrl & kFixTotLen) store_be16(p + 2, static_cast<uint16_t>(len > 65535 ? 65535 : len));
  const size_t ihl = ihl_of(p);
  if (ihl >= kIPv4MinHeader && ihl <= len) {
    const size_t l4 = len - ihl;
    const uint8_t proto = p[9];
    if ((ctrl & kFixUdpLen) && proto == kUdp && l4 >= 8) store_be16(p + ihl + 4, static_cast<uint16_t>(l4));
    const size_t field = proto == kTcp ? 16 : proto == kUdp ? 6 : 0;
    const size_t need = proto == kTcp ? 20 : 8;
    const int mode = (ctrl >> kFixL4Shift) & 3;
    if (field && l4 >= need && l4 <= 65535 && (mode == 1 || mode == 2)) {
      const uint32_t ph = pseudo(p, l4, proto);
      store_be16(p + ihl + field, static_cast<uint16_t>(ph));
      if (mode == 1) {
        store_be16(p + ihl + field, 0);
        uint16_t c = csum_fold(csum_partial(p + ihl, l4, ph));
        if (proto == kUdp && c == 0) c = 0xffff;
        store_be16(p + ihl + field, c);
      }
    }
    if ((ctrl & kFixIpCsum)) {
      store_be16(p + 10, 0);
      store_be16(p + 10, csum_fold(csum_partial(p, ihl)));
    }
  }
}

// The fixed peers of the receive and transmit targets: 198.18.0.1-4 own 10.244.1-4.0/24, 198.18.0.5
// owns two subnets (10.244.5.0/24 and 10.245.0.0/16), 10.244.6.128/25 sits inside 10.244.0.0/16's
// default-ish /16 route announced by 198.18.0.6. Our own lease is 10.244.9.0/24.
constexpr uint32_t kLocalNet = 0x0af40900, kLocalMask = 0xffffff00;
inline const RouteTable& fixed_routes() {
  static const RouteTable* rt = [] {
    std::vector<RouteSpec> specs;
    auto add = [&](uint32_t net, uint8_t plen, uint32_t peer) {
      RouteSpec s{};
      s.net = net;
      s.prefix_len = plen;
      s.peer_ip = peer;
      s.port = 8472;
      s.slot = static_cast<uint32_t>(specs.size());
      for (int i = 0; i < 6; ++i) s.mac[i] = static_cast<uint8_t>(0x02 + i + peer);
      specs.push_back(s);
    };
    for (uint32_t i = 1; i <= 4; ++i) add(0x0af40000u | (i << 8), 24, 0xc6120000u | i);
    add(0x0af40500, 24, 0xc6120005);
    add(0x0af50000, 16, 0xc6120005);
    add(0x0af40680, 25, 0xc6120006);
    add(0x0af40000, 16, 0xc6120007);
    std::string err;
    const RouteTable* t = RouteTable::build(specs, &err);
    if (!t) {
      std::fprintf(stderr, "fixed routes: %s\n", err.c_str());
      std::abort();
    }
    return t;
  }();
  return *rt;
}
// Underlay sources a datagram may claim: the peers above and one stranger.
inline uint32_t peer_ip(uint8_t i) {
  static const uint32_t ips[8] = {0xc6120001, 0xc6120002, 0xc6120003, 0xc6120004,
                                  0xc6120005, 0xc6120006, 0xc6120007, 0xc6120063};
  return ips[i & 7];
}
constexpr uint8_t kLocalMac[6] = {0x02, 0xaa, 0x00, 0x00, 0x00, 0x01};

inline EncapConfig config(bool vxlan) {
  EncapConfig cfg;
  cfg.kind = vxlan ? EncapKind::Vxlan : EncapKind::Udp;
  cfg.vni = 1;
  std::memcpy(cfg.local_mac, kLocalMac, 6);
  cfg.local_net = kLocalNet;
  cfg.local_mask = kLocalMask;
  cfg.icmp_src = 0x0af40901;
  return cfg;
}

}  // namespace fuzz
