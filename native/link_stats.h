// A kernel counter of the TUN that the datapath reports among its drops: the packets the TUN's
// queues refused because their worker was behind (the device's tx_dropped, `TX dropped` in
// `ip -s link`), read over rtnetlink from the namespace the device lives in. Not on the hot path:
// read when the datapath's counters are asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace vxnet {

// Parses a reply to RTM_GETLINK: the tx_dropped of the device with `ifindex`, from its
// IFLA_STATS64 attribute (IFLA_STATS, 32-bit, when the kernel sent no 64-bit one). Every length
// is checked against `len`; false when the buffer holds no such message or attribute (an
// NLMSG_ERROR, a truncated message, another device).
bool parse_link_tx_dropped(const uint8_t* buf, size_t len, int ifindex, uint64_t* out);

class LinkDropCounter {
 public:
  LinkDropCounter() = default;
  ~LinkDropCounter() { close(); }
  LinkDropCounter(const LinkDropCounter&) = delete;
  LinkDropCounter& operator=(const LinkDropCounter&) = delete;

  // Opens an rtnetlink socket in the calling thread's network namespace, which must hold the
  // device `name`, and takes the device's tx_dropped now as its zero. False with *err.
  bool open(const std::string& name, std::string* err);
  // tx_dropped since open(); when a query fails (the device went away), the last value read.
  uint64_t tx_dropped();
  void close();

 private:
  bool query(uint64_t* out);

  int fd_ = -1;
  int ifindex_ = 0;
  uint32_t seq_ = 0;
  uint64_t base_ = 0;
  uint64_t last_ = 0;
};

}  // namespace vxnet
