#include "link_stats.h"

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace vxnet {

namespace {
constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }
constexpr size_t kNlHdr = align4(sizeof(nlmsghdr));
constexpr size_t kIfiLen = align4(sizeof(ifinfomsg));
constexpr size_t kRtaHdr = align4(sizeof(rtattr));

// tx_dropped in the attributes of one RTM_NEWLINK message, [a, end) of buf.
bool tx_dropped_in_attrs(const uint8_t* buf, size_t a, size_t end, uint64_t* out) {
  bool have32 = false;
  uint32_t v32 = 0;
  while (a + sizeof(rtattr) <= end) {
    rtattr ra;
    std::memcpy(&ra, buf + a, sizeof ra);
    if (ra.rta_len < sizeof(rtattr) || ra.rta_len > end - a) return false;
    const size_t plen = ra.rta_len - kRtaHdr;  // rta_len >= sizeof(rtattr) == kRtaHdr
    const uint8_t* p = buf + a + kRtaHdr;
    const unsigned type = ra.rta_type & NLA_TYPE_MASK;
    if (type == IFLA_STATS64 && plen >= offsetof(rtnl_link_stats64, tx_dropped) + sizeof(uint64_t)) {
      std::memcpy(out, p + offsetof(rtnl_link_stats64, tx_dropped), sizeof(uint64_t));
      return true;
    }
    if (type == IFLA_STATS && plen >= offsetof(rtnl_link_stats, tx_dropped) + sizeof(uint32_t)) {
      std::memcpy(&v32, p + offsetof(rtnl_link_stats, tx_dropped), sizeof v32);
      have32 = true;
    }
    a += align4(ra.rta_len);
  }
  if (have32) *out = v32;
  return have32;
}
}  // namespace

bool parse_link_tx_dropped(const uint8_t* buf, size_t len, int ifindex, uint64_t* out) {
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= len) {
    nlmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > len - off) return false;
    if (h.nlmsg_type == RTM_NEWLINK && h.nlmsg_len >= kNlHdr + sizeof(ifinfomsg)) {
      ifinfomsg ifi;
      std::memcpy(&ifi, buf + off + kNlHdr, sizeof ifi);
      if (ifi.ifi_index == ifindex) return tx_dropped_in_attrs(buf, off + kNlHdr + kIfiLen, off + h.nlmsg_len, out);
    }
    off += align4(h.nlmsg_len);
  }
  return false;
}

bool LinkDropCounter::open(const std::string& name, std::string* err) {
  close();
  ifindex_ = static_cast<int>(::if_nametoindex(name.c_str()));
  if (ifindex_ == 0) {
    *err = "if_nametoindex " + name + ": " + std::strerror(errno);
    return false;
  }
  fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) {
    *err = std::string("rtnetlink socket: ") + std::strerror(errno);
    return false;
  }
  // The kernel answers at once; the timeout only bounds a stats call if it ever does not.
  timeval tv{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (!query(&base_)) {
    *err = "RTM_GETLINK " + name + ": no tx_dropped in the reply";
    close();
    return false;
  }
  last_ = 0;
  return true;
}

bool LinkDropCounter::query(uint64_t* out) {
  if (fd_ < 0) return false;
  struct {
    nlmsghdr h;
    ifinfomsg i;
  } req;
  std::memset(&req, 0, sizeof req);
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.h.nlmsg_seq = ++seq_;
  req.i.ifi_family = AF_UNSPEC;
  req.i.ifi_index = ifindex_;
  if (::send(fd_, &req, sizeof req, 0) != static_cast<ssize_t>(sizeof req)) return false;
  alignas(8) static thread_local uint8_t buf[32768];
  for (;;) {
    const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n < static_cast<ssize_t>(sizeof(nlmsghdr)) || static_cast<size_t>(n) > sizeof buf) return false;
    nlmsghdr h;
    std::memcpy(&h, buf, sizeof h);
    if (h.nlmsg_seq != seq_) continue;  // the answer to an earlier query that timed out
    return parse_link_tx_dropped(buf, static_cast<size_t>(n), ifindex_, out);
  }
}

uint64_t LinkDropCounter::tx_dropped() {
  uint64_t v = 0;
  if (query(&v) && v >= base_) last_ = v - base_;
  return last_;
}

void LinkDropCounter::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace vxnet
