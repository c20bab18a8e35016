#include "udp_socket.h"

#include <linux/filter.h>

#include <arpa/inet.h>
#include <netinet/udp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace vxnet {

namespace {

bool set_buf(int fd, int opt_force, int opt, uint32_t bytes) {
  const int v = static_cast<int>(bytes);
  // The *FORCE variants pass rmem_max/wmem_max when we have CAP_NET_ADMIN.
  if (setsockopt(fd, SOL_SOCKET, opt_force, &v, sizeof v) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v) == 0;
}

}  // namespace

bool UdpSocket::open(const UdpSocketOptions& o, std::string* err) {
  close();
  fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    *err = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  const int one = 1;
  if (o.reuseport) setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  gro_ = o.gro && setsockopt(fd_, SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
  // UDP_SEGMENT is per message (cmsg); setting the socket option to 0 tells whether the kernel has it.
  const int zero = 0;
  gso_ = o.gso && setsockopt(fd_, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
  if (o.rcvbuf) set_buf(fd_, SO_RCVBUFFORCE, SO_RCVBUF, o.rcvbuf);
  if (o.sndbuf) set_buf(fd_, SO_SNDBUFFORCE, SO_SNDBUF, o.sndbuf);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(o.port);
  sa.sin_addr.s_addr = htonl(o.bind_ip);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) < 0) {
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
    *err = std::string("bind UDP ") + ip + ":" + std::to_string(o.port) + ": " + std::strerror(errno);
    close();
    return false;
  }
  socklen_t sl = sizeof sa;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &sl) == 0) port_ = ntohs(sa.sin_port);
  return true;
}

void UdpSocket::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void UdpSendBatch::begin(const sockaddr_in* to, uint32_t slot, uint32_t flow, size_t seg) {
  close_open();
  open_ = true;
  cur_to_ = to;
  cur_flow_ = flow;
  cur_first_iov_ = niov_;
  cur_dgrams_ = 0;
  cur_seg_ = seg;
  cur_bytes_ = 0;
  cur_closed_ = false;
  cur_tag_ = SendTag{slot, 0, 0};
}

void UdpSendBatch::datagram_done(size_t len, uint32_t packets, uint32_t inner_bytes) {
  ++cur_dgrams_;
  cur_bytes_ += len;
  if (len < cur_seg_) cur_closed_ = true;
  cur_tag_.packets += packets;
  cur_tag_.bytes += inner_bytes;
}

void UdpSendBatch::close_open() {
  if (!open_) return;
  open_ = false;
  if (cur_dgrams_ == 0) {  // nothing was added: give the pieces back
    niov_ = cur_first_iov_;
    return;
  }
  const size_t i = n_++;
  msghdr& mh = msgs_[i].msg_hdr;
  std::memset(&mh, 0, sizeof mh);
  mh.msg_name = const_cast<sockaddr_in*>(cur_to_);
  mh.msg_namelen = sizeof(sockaddr_in);
  mh.msg_iov = &iovs_[cur_first_iov_];
  mh.msg_iovlen = niov_ - cur_first_iov_;
  if (cur_dgrams_ > 1) {
    mh.msg_control = ctrl_[i];
    mh.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t sz = static_cast<uint16_t>(cur_seg_);
    std::memcpy(CMSG_DATA(cm), &sz, sizeof sz);
  }
  tags_[i] = cur_tag_;
}

bool UdpSendBatch::send_some(int fd, int stop_fd, const std::atomic<bool>& stopping, size_t off, int* sent) {
  if (sink_) {
    *sent = sink_(sink_ctx_, &msgs_[off], static_cast<unsigned>(n_ - off));
    return true;
  }
  for (;;) {
    const int r = ::sendmmsg(fd, &msgs_[off], static_cast<unsigned>(n_ - off), 0);
    if (r >= 0) {
      *sent = r;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == ENOBUFS) {
      pollfd pfd[2] = {{fd, POLLOUT, 0}, {stop_fd, POLLIN, 0}};
      ::poll(pfd, 2, 100);
      if (stopping.load(std::memory_order_relaxed)) return false;
      continue;
    }
    *sent = -1;
    return true;
  }
}

UdpRecvBatch::UdpRecvBatch(size_t batch)
    : batch_(batch), bufs_(new uint8_t[batch * kBufSize]), msgs_(batch), iovs_(batch), addrs_(batch), ctrl_(batch) {
  for (size_t i = 0; i < batch_; ++i) iovs_[i] = iovec{bufs_.get() + i * kBufSize, kBufSize};
}

size_t UdpRecvBatch::recv(int fd) {
  for (size_t i = 0; i < batch_; ++i) {
    msghdr& mh = msgs_[i].msg_hdr;
    std::memset(&mh, 0, sizeof mh);
    mh.msg_name = &addrs_[i];
    mh.msg_namelen = sizeof(sockaddr_in);
    mh.msg_iov = &iovs_[i];
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl_[i].b;
    mh.msg_controllen = sizeof ctrl_[i].b;
  }
  int r;
  do {
    r = ::recvmmsg(fd, msgs_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
  } while (r < 0 && errno == EINTR);
  return r > 0 ? static_cast<size_t>(r) : 0;
}

UdpRecvBatch::Msg UdpRecvBatch::msg(size_t i) {
  msghdr& mh = msgs_[i].msg_hdr;
  Msg m;
  m.data = static_cast<uint8_t*>(iovs_[i].iov_base);
  m.len = msgs_[i].msg_len;
  m.seg = m.len;
  m.src_ip = ntohl(addrs_[i].sin_addr.s_addr);
  m.bad = (mh.msg_flags & MSG_TRUNC) || mh.msg_namelen < sizeof(sockaddr_in) || addrs_[i].sin_family != AF_INET;
  // With UDP_GRO the kernel may hand over several datagrams of `seg` bytes glued together.
  for (cmsghdr* cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int v;
      std::memcpy(&v, CMSG_DATA(cm), sizeof v);
      if (v > 0 && static_cast<size_t>(v) < m.len) m.seg = static_cast<size_t>(v);
    }
  }
  return m;
}

}  // namespace vxnet
