#include "tun.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace vxnet {

namespace {
// linux/if_tun.h of Linux 6.2; older userspace headers lack them.
constexpr unsigned kTunFUso4 = 0x20;
constexpr unsigned kTunFUso6 = 0x40;
}  // namespace

namespace {
// The device's txqueuelen, through any socket of the namespace the device is in (ours, here).
bool set_queue_len(const std::string& name, unsigned len, std::string* err) {
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    *err = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  struct ifreq ifr;
  std::memset(&ifr, 0, sizeof ifr);
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_qlen = static_cast<int>(len);
  const bool ok = ::ioctl(s, SIOCSIFTXQLEN, &ifr) == 0;
  if (!ok) *err = "SIOCSIFTXQLEN " + name + " " + std::to_string(len) + ": " + std::strerror(errno);
  ::close(s);
  return ok;
}
}  // namespace

bool open_tun(const std::string& name, unsigned queues, bool vnet_hdr, unsigned queue_len, std::vector<int>* fds,
              std::string* actual, bool* offload, bool* uso, LinkDropCounter* drops, std::string* err) {
  *offload = vnet_hdr;
  *uso = vnet_hdr;
  if (name.size() >= IFNAMSIZ) {
    *err = "TUN name \"" + name + "\" longer than " + std::to_string(IFNAMSIZ - 1) + " characters";
    return false;
  }
  if (queues == 0) queues = 1;
  for (unsigned q = 0; q < queues; ++q) {
    const int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      *err = std::string("open /dev/net/tun: ") + std::strerror(errno);
      break;
    }
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (queues > 1 ? IFF_MULTI_QUEUE : 0) | (vnet_hdr ? IFF_VNET_HDR : 0);
    const std::string& want = q == 0 ? name : *actual;
    std::memcpy(ifr.ifr_name, want.data(), want.size());
    if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
      *err = "TUNSETIFF " + want + ": " + std::strerror(errno);
      ::close(fd);
      break;
    }
    if (q == 0) *actual = std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    if (vnet_hdr) {
      const int hdr_len = 10;  // struct virtio_net_hdr
      if (::ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) < 0) {
        *err = "TUNSETVNETHDRSZ " + want + ": " + std::strerror(errno);
        ::close(fd);
        break;
      }
      // TSO4 lets the stack hand us 64 KiB TCP packets; CSUM is required by TSO. USO (Linux >=
      // 6.2, both families together) adds UDP super-packets from UDP_SEGMENT senders. Refusal is
      // not fatal: without USO we ask again for TSO alone; without that the header stays (all zero)
      // and packets come MTU-sized.
      const unsigned tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN;
      if (::ioctl(fd, TUNSETOFFLOAD, tso | kTunFUso4 | kTunFUso6) < 0) {
        *uso = false;
        if (::ioctl(fd, TUNSETOFFLOAD, tso) < 0) *offload = false;
      }
    }
    fds->push_back(fd);
  }
  if (!*offload) *uso = false;
  // Every queue attached, then the device's queue length (0: the kernel's) and its drop counter.
  if (fds->size() != queues || (queue_len > 0 && !set_queue_len(*actual, queue_len, err)) ||
      (drops && !drops->open(*actual, err))) {
    for (int fd : *fds) ::close(fd);
    fds->clear();
    return false;
  }
  return true;
}

bool open_tun_in(const std::string& netns, const std::string& name, unsigned queues, bool vnet_hdr, unsigned queue_len,
                 bool must_be_new, std::vector<int>* fds, std::string* actual, bool* offload, bool* uso,
                 LinkDropCounter* drops, std::string* err) {
  bool ok = false;
  auto body = [&] {
    if (!netns.empty()) {
      const int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0) {
        *err = "netns " + netns + ": " + std::strerror(errno);
        return;
      }
      // setns moves only this thread; it ends right after, the process stays where it was.
      const int r = ::setns(ns, CLONE_NEWNET);
      const int e = errno;
      ::close(ns);
      if (r != 0) {
        *err = "setns " + netns + ": " + std::strerror(e);
        return;
      }
    }
    if (must_be_new && !name.empty() && name.find('%') == std::string::npos && ::if_nametoindex(name.c_str()) != 0) {
      *err = "device " + name + " already exists" + (netns.empty() ? std::string() : " in " + netns);
      return;
    }
    ok = open_tun(name, queues, vnet_hdr, queue_len, fds, actual, offload, uso, drops, err);
  };
  if (netns.empty()) {
    body();
  } else {
    std::thread t(body);
    t.join();
  }
  return ok;
}

}  // namespace vxnet
