// An RTM_NEWLINK reply as the kernel builds it, for the link_stats parser's checks and fuzz seeds:
// nlmsghdr, ifinfomsg, an IFLA_MTU attribute, then the statistics (IFLA_STATS64 with tx_dropped,
// IFLA_STATS with it cut to 32 bits, or both).
#pragma once

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace vxnet::testpkt {

inline std::vector<uint8_t> link_reply(int ifindex, uint64_t tx_dropped, bool stats64, bool stats32,
                                       uint16_t type = RTM_NEWLINK) {
  std::vector<uint8_t> b(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifinfomsg)), 0);
  ifinfomsg ifi{};
  ifi.ifi_index = ifindex;
  std::memcpy(&b[NLMSG_HDRLEN], &ifi, sizeof ifi);
  auto attr = [&](uint16_t t, const void* p, size_t n) {
    rtattr ra{static_cast<unsigned short>(RTA_LENGTH(n)), t};
    const size_t at = b.size();
    b.resize(at + RTA_SPACE(n), 0);
    std::memcpy(&b[at], &ra, sizeof ra);
    std::memcpy(&b[at + RTA_LENGTH(0)], p, n);
  };
  const uint32_t mtu = 1472;
  attr(IFLA_MTU, &mtu, sizeof mtu);
  if (stats32) {
    rtnl_link_stats st{};
    st.tx_dropped = static_cast<uint32_t>(tx_dropped);
    st.rx_dropped = 7;
    attr(IFLA_STATS, &st, sizeof st);
  }
  if (stats64) {
    rtnl_link_stats64 st{};
    st.tx_dropped = tx_dropped;
    st.rx_dropped = 7;
    attr(IFLA_STATS64, &st, sizeof st);
  }
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(b.size());
  h.nlmsg_type = type;
  std::memcpy(&b[0], &h, sizeof h);
  return b;
}

}  // namespace vxnet::testpkt
