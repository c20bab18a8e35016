// Byte-level helpers for wire formats: explicit big-endian loads/stores, no unaligned casts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

namespace detail {

// Native-order sum of the 32-bit words of p[0, len), len a multiple of 32, as pairs of 32-bit
// halves added into 64-bit accumulators. Four independent accumulators: the adds do not wait on
// each other (1.75x the one-accumulator loop, `perf` and a microbenchmark).
inline uint64_t csum_words32(const uint8_t* p, size_t len) {
  uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (; len >= 32; p += 32, len -= 32) {
    uint64_t a, b, c, d;
    std::memcpy(&a, p, 8);
    std::memcpy(&b, p + 8, 8);
    std::memcpy(&c, p + 16, 8);
    std::memcpy(&d, p + 24, 8);
    s0 += (a & 0xffffffffu) + (a >> 32);
    s1 += (b & 0xffffffffu) + (b >> 32);
    s2 += (c & 0xffffffffu) + (c >> 32);
    s3 += (d & 0xffffffffu) + (d >> 32);
  }
  return s0 + s1 + s2 + s3;  // 32 bytes add < 2^35 in all: no overflow below 2^29 rounds (16 GiB)
}

#if defined(__x86_64__)
// The same sum with AVX2, 128 bytes a round (len a multiple of 128): the two halves of each
// 64-bit lane are split by a mask and a shift and added into four vector accumulators. Chosen at
// run time (csum_avx2_ok); 1.7x the scalar loop on a 1448-byte segment in cache, 1.2x from L3
// (docs/datapath.md, "Checksum passes").
__attribute__((target("avx2"))) inline uint64_t csum_words128_avx2(const uint8_t* p, size_t len) {
  const __m256i lo = _mm256_set1_epi64x(0xffffffff);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (; len >= 128; p += 128, len -= 128) {
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32));
    const __m256i v2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64));
    const __m256i v3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 96));
    a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_and_si256(v0, lo), _mm256_srli_epi64(v0, 32)));
    a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_and_si256(v1, lo), _mm256_srli_epi64(v1, 32)));
    a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_and_si256(v2, lo), _mm256_srli_epi64(v2, 32)));
    a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_and_si256(v3, lo), _mm256_srli_epi64(v3, 32)));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
  alignas(32) uint64_t l[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l), s);
  return l[0] + l[1] + l[2] + l[3];  // as above: < 2^35 per 32 bytes
}
inline bool csum_avx2_ok() { return __builtin_cpu_supports("avx2"); }
#endif

// Below this many bytes the scalar loop is as fast (the vector sum's setup and reduction).
constexpr size_t kCsumVectorMin = 256;

// csum_partial, with (kVector) or without the vector loop; tests compare the two. Any len below
// 8 GiB: both partial sums together stay below 2^64 (< 2^35 per 32 bytes).
template <bool kVector>
inline uint32_t csum_partial_impl(const uint8_t* p, size_t len, uint32_t seed) {
  uint64_t sum = 0;
#if defined(__x86_64__)
  if (kVector && len >= kCsumVectorMin && csum_avx2_ok()) {
    const size_t n = len & ~static_cast<size_t>(127);
    sum = csum_words128_avx2(p, n);
    p += n;
    len -= n;
  }
#endif
  const size_t n = len & ~static_cast<size_t>(31);
  sum += csum_words32(p, n);
  p += n;
  len -= n;
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

}  // namespace detail

// One's-complement sum over `len` bytes, folded to 16 bits, in network byte order (RFC 1071);
// `seed` chains partial sums. Sums native 32-bit words (byte-order independence, RFC 1071 2(B))
// and swaps once at the end: this runs over every payload byte on the offload paths, with AVX2
// where the CPU has it.
inline uint32_t csum_partial(const uint8_t* p, size_t len, uint32_t seed = 0) {
  return detail::csum_partial_impl<true>(p, len, seed);
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
