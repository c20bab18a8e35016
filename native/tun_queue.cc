#include "tun_queue.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vxnet {

TunBuffers::TunBuffers(size_t n)
    : batch(n), slots(new uint8_t[n * TunQueue::kSlotStride]), hdrs(new uint8_t[TunQueue::kHdrSlots * TunQueue::kHdrStride]) {}

TunQueue::TunQueue(int fd, bool vnet, size_t batch, CounterBlock* counters)
    : fd_(fd), vnet_(vnet), batch_(batch), ctr_(counters), own_(new TunBuffers(batch)), buf_(own_.get()) {}

TunQueue::TunQueue(int fd, bool vnet, size_t batch, CounterBlock* counters, TunBuffers* shared)
    : fd_(fd), vnet_(vnet), batch_(batch < shared->batch ? batch : shared->batch), ctr_(counters), buf_(shared) {}

size_t TunQueue::read(size_t max, TunPacket* out, bool* drained) {
  *drained = false;
  if (max > batch_) max = batch_;
  size_t n = 0;
  while (n < max) {
    uint8_t* pkt = buf_->slots.get() + n * kSlotStride + kHeadroom;
    uint8_t* rd = vnet_ ? pkt - kVnetHdrLen : pkt;
    // The virtio_net_hdr is read into the headroom, so the packet itself starts at `pkt`.
    const ssize_t r = ::read(fd_, rd, kReadCap);
    if (r < 0) {
      if (errno == EINTR) continue;
      *drained = true;  // EAGAIN, or the device is going away: the worker waits for readiness
      break;
    }
    ctr_->add(Ctr::TunReads, 1);
    TunPacket& p = out[n++];
    p.pkt = pkt;
    p.vh = VnetHdr();
    p.truncated = static_cast<size_t>(r) >= kReadCap;
    size_t len = static_cast<size_t>(r);
    if (vnet_) {
      if (len < kVnetHdrLen) {
        p.truncated = true;  // not even the header: nothing to forward
        len = kVnetHdrLen;
      }
      p.vh = vnet_load(rd);
      len -= kVnetHdrLen;
    }
    p.len = len;
  }
  return n;
}

TsoSegment TunQueue::tso_segment(const TunPacket& p, const TcpGso& plan, size_t k) {
  TsoSegment s;
  s.hdr = buf_->hdrs.get() + (buf_->hdr_used++) * kHdrStride + kHeadroom;
  const size_t tot = tcp4_gso_segment_hdr(p.pkt, plan, k, s.hdr, &s.payload, &s.payload_len);
  s.hdr_len = tot - s.payload_len;
  return s;
}

TsoSegment TunQueue::uso_segment(const TunPacket& p, const UdpGso& plan, size_t k) {
  TsoSegment s;
  s.hdr = buf_->hdrs.get() + (buf_->hdr_used++) * kHdrStride + kHeadroom;
  const size_t tot = udp4_gso_segment_hdr(p.pkt, plan, k, s.hdr, &s.payload, &s.payload_len);
  s.hdr_len = tot - s.payload_len;
  return s;
}

bool TunQueue::write(const uint8_t* vh, const iovec* iov, size_t niov, size_t len) {
  iovec v[1 + TcpCoalescer::kMaxIov];
  size_t n = 0;
  size_t want = len;
  if (vnet_) {
    v[n++] = iovec{const_cast<uint8_t*>(vh), kVnetHdrLen};
    want += kVnetHdrLen;
  }
  for (size_t i = 0; i < niov && n < sizeof v / sizeof v[0]; ++i) v[n++] = iov[i];
  if (tap_) {
    tap_(tap_ctx_, vh, iov, niov, len);
    ctr_->add(Ctr::TunWrites, 1);
    if (vnet_ && vh[1] != kVnetGsoNone) ctr_->add(Ctr::TunGroWrites, 1);
    return true;
  }
  ssize_t wr;
  do {
    wr = ::writev(fd_, v, static_cast<int>(n));
  } while (wr < 0 && errno == EINTR);
  if (wr != static_cast<ssize_t>(want)) {
    if (vnet_ && vh[1] == kVnetGsoUdpL4 && wr < 0 && errno == EINVAL) {
      // A kernel without GSO_UDP_L4 on TUN writes: the coalescer writes the datagrams one by one.
      uso_ok_ = false;
      return false;
    }
    ctr_->drop(Drop::RxTunWriteError);
    return false;
  }
  ctr_->add(Ctr::TunWrites, 1);
  if (vnet_ && vh[1] != kVnetGsoNone) ctr_->add(Ctr::TunGroWrites, 1);
  return true;
}

void TunQueue::deliver(const uint8_t* pkt, size_t len, bool csum_ok) {
  if (!vnet_) {
    const iovec v{const_cast<uint8_t*>(pkt), len};
    write(nullptr, &v, 1, len);
    return;
  }
  if (uso_ok_ && len >= 20 && pkt[9] == 17) {
    udp_gro_.push(pkt, len, Emit{this}, csum_ok);
    return;
  }
  gro_.push(pkt, len, Emit{this}, csum_ok);
}

void TunQueue::deliver_whole(const uint8_t* vh, const uint8_t* pkt, size_t len) {
  if (vnet_) gro_.flush_flow_of(pkt, len, Emit{this});
  const iovec v{const_cast<uint8_t*>(pkt), len};
  write(vh, &v, 1, len);
}

void TunQueue::flush() {
  if (!vnet_) return;
  gro_.flush(Emit{this});
  udp_gro_.flush(Emit{this});
}

bool TunQueue::write_plain(const uint8_t* pkt, size_t len) {
  uint8_t no_offload[kVnetHdrLen] = {};
  if (tap_) {
    const iovec one{const_cast<uint8_t*>(pkt), len};
    tap_(tap_ctx_, no_offload, &one, 1, len);
    return true;
  }
  iovec v[2] = {{no_offload, kVnetHdrLen}, {const_cast<uint8_t*>(pkt), len}};
  const size_t want = len + (vnet_ ? kVnetHdrLen : 0);
  return ::writev(fd_, vnet_ ? v : v + 1, vnet_ ? 2 : 1) == static_cast<ssize_t>(want);
}

}  // namespace vxnet
