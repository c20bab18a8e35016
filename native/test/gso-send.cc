// Test fixture (not part of the datapath): sends UDP datagrams as ONE UDP_SEGMENT (GSO) send, so a
// receiver with UDP_GRO gets them in a single receive, the way a vxnet peer's TSO output arrives.
//
//   gso-send <dst-ip> <dst-port> <file>
//
// <file> holds one hex-encoded datagram per line; all but the last must have the same length (the
// segment size). Prints {"sent":N} on success.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: gso-send <dst-ip> <dst-port> <hex-lines-file>\n");
    return 2;
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(std::atoi(argv[2])));
  if (inet_pton(AF_INET, argv[1], &dst.sin_addr) != 1) {
    std::fprintf(stderr, "gso-send: bad address %s\n", argv[1]);
    return 2;
  }
  std::ifstream in(argv[3]);
  std::vector<uint8_t> buf;
  size_t seg = 0, count = 0, last = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (line.size() % 2) {
      std::fprintf(stderr, "gso-send: odd hex line %zu\n", count + 1);
      return 2;
    }
    if (count > 0 && last != seg) {
      std::fprintf(stderr, "gso-send: only the last datagram may be shorter\n");
      return 2;
    }
    for (size_t i = 0; i < line.size(); i += 2) {
      const int hi = hexval(line[i]), lo = hexval(line[i + 1]);
      if (hi < 0 || lo < 0) {
        std::fprintf(stderr, "gso-send: bad hex on line %zu\n", count + 1);
        return 2;
      }
      buf.push_back(static_cast<uint8_t>(hi * 16 + lo));
    }
    last = line.size() / 2;
    if (count == 0) seg = last;
    if (last > seg) {
      std::fprintf(stderr, "gso-send: datagram %zu longer than the first\n", count + 1);
      return 2;
    }
    ++count;
  }
  if (count == 0 || seg == 0) {
    std::fprintf(stderr, "gso-send: nothing to send\n");
    return 2;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) {
    std::perror("gso-send: socket");
    return 1;
  }
  iovec iov{buf.data(), buf.size()};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
  msghdr mh{};
  mh.msg_name = &dst;
  mh.msg_namelen = sizeof dst;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (count > 1) {
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof ctrl;
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t sz = static_cast<uint16_t>(seg);
    std::memcpy(CMSG_DATA(cm), &sz, sizeof sz);
  }
  if (sendmsg(fd, &mh, 0) != static_cast<ssize_t>(buf.size())) {
    std::fprintf(stderr, "gso-send: sendmsg: %s\n", std::strerror(errno));
    return 1;
  }
  close(fd);
  std::printf("{\"sent\":%zu}\n", count);
  return 0;
}
