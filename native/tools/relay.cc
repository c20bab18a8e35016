// relay: the smallest userspace forwarder that can carry an overlay, as a reference for what the
// design costs on this machine. It has the shape of flannel's `udp` backend proxy: one thread,
// poll() on a TUN device and a UDP socket, one packet per read and per send, IP packets carried
// bare in UDP (flannel's udp wire format), one peer. It validates, counts and steers nothing, so its
// round trip is what "TUN + UDP socket + a thread that wakes for a packet" costs with none of
// vxnet's work (nor its batching and spinning). bench/lib/relay.ts runs it for `bench/datapath.ts`
// (mode `relay`) and `vxnet bench` (docs/datapath.md, "What the RTT floor is made of").
//
//   relay TUN PEER_IPV4 PORT
//
// TUN is an existing TUN device (`ip tuntap add TUN mode tun`); the relay binds 0.0.0.0:PORT and
// sends every packet read from TUN to PEER_IPV4:PORT. Exits on SIGTERM/SIGINT or an I/O error.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

volatile sig_atomic_t stop = 0;

void on_signal(int) { stop = 1; }

int fail(const char* what) {
  std::fprintf(stderr, "relay: %s: %s\n", what, std::strerror(errno));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: relay TUN PEER_IPV4 PORT\n");
    return 2;
  }
  const char* tun_name = argv[1];
  in_addr peer_ip{};
  const long port = std::strtol(argv[3], nullptr, 10);
  if (std::strlen(tun_name) >= IFNAMSIZ || inet_pton(AF_INET, argv[2], &peer_ip) != 1 || port < 1 || port > 65535) {
    std::fprintf(stderr, "relay: bad arguments (TUN name, IPv4 address, port 1..65535)\n");
    return 2;
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  const int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (tun < 0) return fail("/dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  std::memcpy(ifr.ifr_name, tun_name, std::strlen(tun_name));
  if (::ioctl(tun, TUNSETIFF, &ifr) != 0) return fail("TUNSETIFF");

  const int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return fail("socket");
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(sock, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) return fail("bind");
  sockaddr_in peer = local;
  peer.sin_addr = peer_ip;

  static unsigned char buf[65536];
  pollfd fds[2] = {{tun, POLLIN, 0}, {sock, POLLIN, 0}};
  std::printf("ready\n");
  std::fflush(stdout);
  while (!stop) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    if (fds[0].revents & POLLIN) {
      const ssize_t n = ::read(tun, buf, sizeof buf);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return fail("read TUN");
      if (n > 0 && ::sendto(sock, buf, static_cast<size_t>(n), 0, reinterpret_cast<sockaddr*>(&peer), sizeof peer) < 0 &&
          errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) {
        return fail("sendto");
      }
    }
    if (fds[1].revents & POLLIN) {
      const ssize_t n = ::recv(sock, buf, sizeof buf, 0);
      if (n < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED) return fail("recv");
      // A datagram too short for an IPv4 header is not written (the TUN would refuse it anyway).
      if (n >= 20 && ::write(tun, buf, static_cast<size_t>(n)) < 0 && errno != EINVAL && errno != EIO) return fail("write TUN");
    }
  }
  return 0;
}
