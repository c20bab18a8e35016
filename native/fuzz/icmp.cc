// ICMP destination unreachable for a packet with no route (build_icmp_unreachable): the output is
// always a valid ICMP packet within kIcmpReplyMax quoting the offender, and never one RFC 1122
// 3.2.2 forbids. Input: [icmp_src:4][offending packet as read from the TUN].
#include "fuzz_common.h"

using namespace fuzz;

namespace {

// RFC 1122 3.2.2 / 3.2.1.3, written independently of encap.cc.
bool not_one_host(uint32_t a) {
  const uint32_t top = a >> 24;
  return top == 0 || top == 127 || top >= 224;  // this network, loopback, multicast, class E, broadcast
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  EncapConfig cfg = config(false);
  cfg.icmp_src = load_be32(data);
  const size_t len = size - 4;
  std::vector<uint8_t> off(data + 4, data + size);  // exact size: ASan catches any over-read
  if (len >= kIPv4MinHeader && (data[4] & 1)) fix_packet(off.data(), len, kFixTotLen | kFixIpCsum);
  uint8_t out[kIcmpReplyMax + 64];
  std::memset(out, 0xee, sizeof out);
  const size_t n = build_icmp_unreachable(cfg, off.data(), len, out);
  FUZZ_CHECK(n <= kIcmpReplyMax, "reply within kIcmpReplyMax");
  for (size_t i = n; i < sizeof out; ++i) FUZZ_CHECK(out[i] == 0xee, "nothing written past the reply");
  if (n == 0) return 0;

  const uint8_t* p = off.data();
  FUZZ_CHECK(len >= kIPv4MinHeader && (p[0] >> 4) == 4, "only about IPv4 packets");
  const size_t ihl = ihl_of(p);
  FUZZ_CHECK(ihl >= kIPv4MinHeader && ihl <= len, "offender header complete");
  FUZZ_CHECK((load_be16(p + 6) & 0x1fff) == 0, "never about a non-first fragment");
  const uint32_t src = load_be32(p + 12), dst = load_be32(p + 16);
  FUZZ_CHECK(!not_one_host(src), "never towards a source that is not one host");
  FUZZ_CHECK(!not_one_host(dst), "never about a multicast/broadcast/zero/loopback/class-E destination");
  if (p[9] == 1) {
    FUZZ_CHECK(len > ihl, "ICMP offender has a type");
    const uint8_t t = p[ihl];
    // As Linux's icmp_send(): types above 18 count as errors too.
    FUZZ_CHECK(t <= 18 && t != 3 && t != 4 && t != 5 && t != 11 && t != 12, "never an error about an ICMP error");
  }

  FUZZ_CHECK(ipv4_valid(out, n) && ihl_of(out) == 20, "reply is a valid IPv4 packet");
  FUZZ_CHECK(out[9] == 1 && out[8] > 0, "ICMP with a TTL");
  FUZZ_CHECK(load_be32(out + 16) == src, "sent back to the offender's source");
  const uint32_t rsrc = load_be32(out + 12);
  FUZZ_CHECK(rsrc == (cfg.icmp_src ? cfg.icmp_src : dst), "from our ICMP source");
  FUZZ_CHECK(out[20] == 3 && out[21] == 0, "destination unreachable, net unreachable");
  FUZZ_CHECK(csum_fold(csum_partial(out + 20, n - 20)) == 0, "ICMP checksum verifies");
  const size_t tot = load_be16(p + 2);
  const size_t avail = tot >= ihl && tot <= len ? tot : len;
  const size_t quoted = n - 28;
  FUZZ_CHECK(quoted == ihl + std::min<size_t>(8, avail - ihl), "quotes the header and 8 bytes (RFC 792)");
  FUZZ_CHECK(std::memcmp(out + 28, p, quoted) == 0, "quote is the offender's first bytes");
  return 0;
}
