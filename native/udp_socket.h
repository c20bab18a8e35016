// The UDP side of the datapath: a socket, its batched sends (sendmmsg; each message a run of
// equal-sized datagrams gathered from iovecs and cut by the kernel, UDP_SEGMENT) and its batched
// receives (recvmmsg; a message may be a UDP GRO train of datagrams, see split_rx_message()).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vxnet {

// Largest UDP payload of one IPv4 datagram, and of one GSO send (the kernel's 64 KiB skb limit
// minus the IPv4 and UDP headers), and the kernel's segment limit per send (UDP_MAX_SEGMENTS).
constexpr size_t kMaxDatagram = 65535 - 20 - 8;
constexpr size_t kGsoMaxBytes = 65535 - 20 - 8;
constexpr size_t kGsoMaxSegs = 64;

struct UdpSocketOptions {
  uint32_t bind_ip = 0;  // host order; 0 = any
  uint16_t port = 0;     // 0 = an ephemeral port
  bool reuseport = false;
  bool gro = false;      // ask for UDP_GRO (receive trains)
  bool gso = false;      // probe UDP_SEGMENT (send trains)
  uint32_t rcvbuf = 0;   // 0 = leave the kernel's default
  uint32_t sndbuf = 0;
};

class UdpSocket {
 public:
  UdpSocket() = default;
  ~UdpSocket() { close(); }
  UdpSocket(const UdpSocket&) = delete;
  UdpSocket& operator=(const UdpSocket&) = delete;

  bool open(const UdpSocketOptions& o, std::string* err);
  // Tests and fuzzing: no fd, as if the kernel had (or had not) taken UDP_SEGMENT.
  static std::unique_ptr<UdpSocket> unbound(bool gso) {
    std::unique_ptr<UdpSocket> s(new UdpSocket());
    s->gso_ = gso;
    return s;
  }
  void close();
  int fd() const { return fd_; }
  uint16_t port() const { return port_; }  // the bound port (the kernel's choice for port 0)
  bool gso() const { return gso_; }
  bool gro() const { return gro_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  bool gso_ = false;
  bool gro_ = false;
};

// What a sent message carried, for the counters.
struct SendTag {
  uint32_t slot;     // the peer's counter slot
  uint32_t packets;  // inner packets
  uint32_t bytes;    // inner bytes
};

// Outgoing messages of one pass for one socket. A message is a run of datagrams to one
// destination, all `seg` bytes long but the last (which may be shorter): the kernel cuts it
// (UDP_SEGMENT). Datagrams are appended piece by piece (headers here, payload there: no copy).
class UdpSendBatch {
 public:
  static constexpr size_t kMaxMsgs = 128;
  static constexpr size_t kMaxIovs = 1024;

  explicit UdpSendBatch(bool gso) : gso_(gso) {}
  UdpSendBatch(const UdpSendBatch&) = delete;
  UdpSendBatch& operator=(const UdpSendBatch&) = delete;

  bool empty() const { return n_ == 0 && !open_; }
  // Can the open message take a datagram of `len` bytes in `pieces` pieces to `to` (counter `slot`)
  // of inner flow `flow` (its hash)? A message holds one flow's datagrams only: the receiver steers
  // it as a whole, by its first datagram (it crosses the underlay and enters the receiving socket
  // as one packet, or is merged into one again by GRO), so a second flow's datagrams in it would
  // land in the first flow's socket and overtake, or fall behind, the rest of their own flow.
  bool can_append(const sockaddr_in* to, uint32_t slot, uint32_t flow, size_t len, size_t pieces) const {
    return open_ && gso_ && cur_to_ == to && cur_tag_.slot == slot && cur_flow_ == flow && !cur_closed_ && len <= cur_seg_ &&
           cur_dgrams_ < kGsoMaxSegs && cur_bytes_ + len <= kGsoMaxBytes && niov_ + pieces <= kMaxIovs;
  }
  // Room for a new message of `pieces` pieces (after close_open())?
  bool room(size_t pieces) const { return n_ + (open_ ? 1 : 0) < kMaxMsgs && niov_ + pieces <= kMaxIovs; }
  // Starts a message of flow `flow` whose datagrams are `seg` bytes (the caller checked room()).
  void begin(const sockaddr_in* to, uint32_t slot, uint32_t flow, size_t seg);
  void piece(const void* p, size_t len) { iovs_[niov_++] = iovec{const_cast<void*>(p), len}; }
  // The datagram whose pieces were just added is complete: `len` bytes, carrying `packets` inner
  // packets of `inner_bytes` bytes (counters).
  void datagram_done(size_t len, uint32_t packets, uint32_t inner_bytes);
  // Ends the open message, if any.
  void close_open();

  // Tests and fuzzing: messages go to `sink` (returning how many it took, or -1 for a refused
  // first message) instead of sendmmsg.
  using Sink = int (*)(void* ctx, mmsghdr* msgs, unsigned n);
  void set_sink(Sink sink, void* ctx) {
    sink_ = sink;
    sink_ctx_ = ctx;
  }

  // Sends everything: sendmmsg, retried after EAGAIN/ENOBUFS until `stop_fd` is readable.
  // on_sent(tag, ok) is called for every message; returns the number of sendmmsg calls.
  template <typename OnSent>
  size_t flush(int fd, int stop_fd, const std::atomic<bool>& stopping, OnSent&& on_sent);

 private:
  // One sendmmsg from message `off`: false when stopping; *sent = messages sent, -1 = `off` refused.
  bool send_some(int fd, int stop_fd, const std::atomic<bool>& stopping, size_t off, int* sent);

  const bool gso_;
  mmsghdr msgs_[kMaxMsgs];
  iovec iovs_[kMaxIovs];
  alignas(cmsghdr) uint8_t ctrl_[kMaxMsgs][CMSG_SPACE(sizeof(uint16_t))];
  SendTag tags_[kMaxMsgs];
  size_t n_ = 0;     // finished messages
  size_t niov_ = 0;  // pieces used, finished and open messages
  bool open_ = false;
  const sockaddr_in* cur_to_ = nullptr;
  uint32_t cur_flow_ = 0;
  size_t cur_first_iov_ = 0;
  size_t cur_dgrams_ = 0;
  size_t cur_seg_ = 0;
  size_t cur_bytes_ = 0;
  bool cur_closed_ = false;  // its last datagram is shorter than seg: nothing may follow
  SendTag cur_tag_{};
  Sink sink_ = nullptr;
  void* sink_ctx_ = nullptr;
};

// One recvmmsg worth of messages.
class UdpRecvBatch {
 public:
  // Room for a peer's largest message: a GSO packet handed over whole (64 KiB inner packet plus
  // the encapsulation) must not be truncated.
  static constexpr size_t kBufSize = 65536 + 256;

  explicit UdpRecvBatch(size_t batch);
  // Receives up to `batch` messages without blocking; returns how many (0: none waiting).
  size_t recv(int fd);

  struct Msg {
    uint8_t* data;
    size_t len;
    size_t seg;         // datagram size of a GRO train (== len when the kernel gave none)
    uint32_t src_ip;    // host order
    bool bad;           // truncated or not from an IPv4 peer
  };
  Msg msg(size_t i);

 private:
  size_t batch_;
  std::unique_ptr<uint8_t[]> bufs_;
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iovs_;
  std::vector<sockaddr_in> addrs_;
  struct Ctrl {
    alignas(cmsghdr) uint8_t b[CMSG_SPACE(sizeof(int))];
  };
  std::vector<Ctrl> ctrl_;
};

template <typename OnSent>
size_t UdpSendBatch::flush(int fd, int stop_fd, const std::atomic<bool>& stopping, OnSent&& on_sent) {
  close_open();
  size_t off = 0, calls = 0;
  while (off < n_) {
    int r = 0;
    ++calls;
    if (!send_some(fd, stop_fd, stopping, off, &r)) {
      for (size_t i = off; i < n_; ++i) on_sent(tags_[i], false);  // stopping: the rest is not sent
      break;
    }
    if (r < 0) {  // this message is refused; go on with the rest
      on_sent(tags_[off], false);
      ++off;
      continue;
    }
    for (size_t i = off; i < off + static_cast<size_t>(r); ++i) on_sent(tags_[i], true);
    off += static_cast<size_t>(r);
  }
  n_ = 0;
  niov_ = 0;
  return calls;
}

}  // namespace vxnet
