// Packet builders and the CHECK counter shared by the native test harnesses (check.cc, passes_check.cc, steering_check.cc): valid IPv4 TCP
// and UDP packets with correct checksums and predictable payloads.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "../packet.h"

// Counts a check as passed or failed (the harness prints the totals and exits non-zero on failure).
inline int g_pass = 0, g_fail = 0;
#define CHECK(cond, what)                                                \
  do {                                                                   \
    if (cond) {                                                          \
      ++g_pass;                                                          \
    } else {                                                             \
      ++g_fail;                                                          \
      std::fprintf(stderr, "FAIL %s:%d %s\n", __FILE__, __LINE__, what); \
    }                                                                    \
  } while (0)

namespace vxnet {
namespace testpkt {

inline std::vector<uint8_t> ipv4_tcp(uint32_t src, uint32_t dst, uint32_t seq, size_t payload, uint8_t flags) {
  std::vector<uint8_t> p(40 + payload);
  p[0] = 0x45;
  store_be16(&p[2], static_cast<uint16_t>(p.size()));
  store_be16(&p[4], 0x100);
  p[6] = 0x40;  // DF
  p[8] = 64;
  p[9] = 6;
  store_be32(&p[12], src);
  store_be32(&p[16], dst);
  store_be16(&p[10], csum_fold(csum_partial(p.data(), 20)));
  store_be16(&p[20], 40000);
  store_be16(&p[22], 5201);
  store_be32(&p[24], seq);
  store_be32(&p[28], 777);
  p[32] = 5 << 4;
  p[33] = flags;
  store_be16(&p[34], 512);
  for (size_t i = 0; i < payload; ++i) p[40 + i] = static_cast<uint8_t>(i * 7 + 3);
  uint8_t ph[12];
  std::memcpy(ph, &p[12], 8);
  ph[8] = 0;
  ph[9] = 6;
  store_be16(ph + 10, static_cast<uint16_t>(p.size() - 20));
  store_be16(&p[36], csum_fold(csum_partial(&p[20], p.size() - 20, csum_partial(ph, 12))));
  return p;
}

inline uint16_t pseudo(const std::vector<uint8_t>& p, uint8_t proto) {
  uint8_t ph[12];
  std::memcpy(ph, &p[12], 8);
  ph[8] = 0;
  ph[9] = proto;
  store_be16(ph + 10, static_cast<uint16_t>(p.size() - 20));
  return static_cast<uint16_t>(csum_partial(ph, 12));
}

inline std::vector<uint8_t> ipv4_udp(uint32_t src, uint32_t dst, size_t payload, uint16_t sport = 5353, uint16_t dport = 53) {
  std::vector<uint8_t> p(28 + payload);
  p[0] = 0x45;
  store_be16(&p[2], static_cast<uint16_t>(p.size()));
  p[8] = 64;
  p[9] = 17;
  store_be32(&p[12], src);
  store_be32(&p[16], dst);
  store_be16(&p[10], csum_fold(csum_partial(p.data(), 20)));
  store_be16(&p[20], sport);
  store_be16(&p[22], dport);
  store_be16(&p[24], static_cast<uint16_t>(p.size() - 20));
  for (size_t i = 0; i < payload; ++i) p[28 + i] = static_cast<uint8_t>(i * 13 + 1);
  uint16_t c = csum_fold(csum_partial(&p[20], p.size() - 20, pseudo(p, 17)));
  store_be16(&p[26], c ? c : 0xffff);
  return p;
}

}  // namespace testpkt
}  // namespace vxnet
