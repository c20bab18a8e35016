// The rtnetlink reply parser of the TUN's drop counter (parse_link_tx_dropped, link_stats.cc).
// Input: 4 bytes of ifindex (little endian), then the reply. The reply sits in a buffer of exactly
// its size, so ASan sees any read past it. What is found must be the device's counter as written
// in the reply: its bytes (8 from IFLA_STATS64, else 4 from IFLA_STATS) occur in the buffer, and a
// second parse of the same bytes agrees.
#include <linux/netlink.h>

#include "../link_stats.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  int ifindex = 0;
  std::memcpy(&ifindex, data, 4);
  std::vector<uint8_t> reply(data + 4, data + size);
  uint64_t v = 0, again = 0;
  const bool ok = vxnet::parse_link_tx_dropped(reply.data(), reply.size(), ifindex, &v);
  FUZZ_CHECK(ok == vxnet::parse_link_tx_dropped(reply.data(), reply.size(), ifindex, &again), "deterministic");
  if (ok) {
    FUZZ_CHECK(v == again, "same value twice");
    FUZZ_CHECK(reply.size() >= sizeof(nlmsghdr), "a counter came from a whole message");
    uint8_t le[8];
    std::memcpy(le, &v, sizeof le);
    bool found = false;
    for (size_t n : {size_t{8}, size_t{4}}) {
      if (n == 4 && v > 0xffffffffu) continue;
      for (size_t i = 0; !found && i + n <= reply.size(); ++i) found = std::memcmp(&reply[i], le, n) == 0;
    }
    FUZZ_CHECK(found, "the counter is read from the reply's bytes");
  }
  return 0;
}
