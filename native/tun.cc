#include "tun.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vxnet {

bool open_tun(const std::string& name, unsigned queues, std::vector<int>* fds, std::string* actual, std::string* err) {
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
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (queues > 1 ? IFF_MULTI_QUEUE : 0);
    const std::string& want = q == 0 ? name : *actual;
    std::memcpy(ifr.ifr_name, want.data(), want.size());
    if (::ioctl(fd, TUNSETIFF, &ifr) < 0) {
      *err = "TUNSETIFF " + want + ": " + std::strerror(errno);
      ::close(fd);
      break;
    }
    if (q == 0) *actual = std::string(ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ));
    fds->push_back(fd);
  }
  if (fds->size() != queues) {
    for (int fd : *fds) ::close(fd);
    fds->clear();
    return false;
  }
  return true;
}

}  // namespace vxnet
