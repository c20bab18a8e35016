// libFuzzer target: the real transmit pass (native/passes.h TxPass). The input is a few packets as
// TUN reads return them (an arbitrary virtio_net_hdr, then the packet), each in a read slot of the
// real geometry (kHeadroom in front, TunQueue::kReadCap long); TxPass::handle() cuts TSO/USO
// super-packets into segments in the real header arena, completes checksums, routes, encapsulates
// and appends to the real send batches, whose sendmmsg is replaced by a check of every message:
// within UDP GSO's limits, every datagram a well-formed encapsulated IPv4 packet, every TCP/UDP
// checksum of a cut segment correct.
#include <atomic>
#include <memory>

#include "fuzz_common.h"

#include "../passes.h"
#include "../tun_queue.h"
#include "../udp_socket.h"

namespace {

using namespace fuzz;

bool g_vxlan = false;

int check_send(void*, mmsghdr* msgs, unsigned n) {
  const size_t hdr = g_vxlan ? 22 : 0;
  for (unsigned i = 0; i < n; ++i) {
    const msghdr& mh = msgs[i].msg_hdr;
    std::vector<uint8_t> all;
    for (size_t k = 0; k < mh.msg_iovlen; ++k) {
      const uint8_t* b = static_cast<const uint8_t*>(mh.msg_iov[k].iov_base);
      all.insert(all.end(), b, b + mh.msg_iov[k].iov_len);  // ASan: every piece in a live buffer
    }
    size_t seg = all.size();
    if (mh.msg_controllen) {
      const cmsghdr* cm = CMSG_FIRSTHDR(&mh);
      FUZZ_CHECK(cm && cm->cmsg_type == 103, "only UDP_SEGMENT as control message");
      uint16_t v;
      std::memcpy(&v, CMSG_DATA(cm), 2);
      seg = v;
      FUZZ_CHECK(seg > 0 && all.size() > seg, "a GSO message holds more than one datagram");
    }
    FUZZ_CHECK(all.size() <= 65507 && (all.size() + seg - 1) / seg <= 64, "within one UDP GSO send");
    for (size_t off = 0; off < all.size(); off += seg) {
      const size_t len = std::min(seg, all.size() - off);
      const uint8_t* d = all.data() + off;
      FUZZ_CHECK(len >= hdr + kIPv4MinHeader, "datagram holds an IPv4 header");
      const uint8_t* ip = d + hdr;
      FUZZ_CHECK(load_be16(ip + 2) == len - hdr, "inner total length is the datagram's");
    }
  }
  return static_cast<int>(n);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static std::unique_ptr<uint8_t[]> slots(new uint8_t[4 * TunQueue::kSlotStride]);
  static const std::vector<uint16_t> ports{8472, 40001};
  static std::atomic<bool> stopping{false};
  Reader in(data, size);
  g_vxlan = in.u8() & 1;
  // One pass per configuration, reused run after run as a worker reuses its own (send_all() at the
  // end of every run empties the batches; the header arena is reset then).
  static CounterBlock ctr;
  static const EncapConfig cfgs[2] = {config(false), config(true)};
  static const PassEnv envs[2] = {{cfgs[0], 16, 1450, 0, 0x0af40900, ports, -1, stopping},
                                  {cfgs[1], 16, 1450, 0, 0x0af40900, ports, -1, stopping}};
  static TunQueue tun(-1, true, 16, &ctr);
  static std::unique_ptr<UdpSocket> socks[2] = {UdpSocket::unbound(true), UdpSocket::unbound(false)};
  static UdpSocket* ptrs[2] = {socks[0].get(), socks[1].get()};
  static TxPass txs[2] = {TxPass(envs[0], tun, ptrs, 2, ctr, 100), TxPass(envs[1], tun, ptrs, 2, ctr, 100)};
  TxPass& tx = txs[g_vxlan ? 1 : 0];
  tx.set_sink(check_send, nullptr);
  (void)in.u8();
  for (int k = 0; k < 4 && in.left() > kVnetHdrLen; ++k) {
    const uint8_t ctrl = in.u8();
    size_t vlen = 0;
    const uint8_t* vh = in.take(kVnetHdrLen, &vlen);
    size_t len = 0;
    const uint8_t* p = in.take(in.u16() | (ctrl & 0x80 ? 0x10000 : 0), &len);
    uint8_t* pkt = slots.get() + k * TunQueue::kSlotStride + kHeadroom;
    const size_t cap = TunQueue::kReadCap - kVnetHdrLen;
    if (len > cap) len = cap;
    if (len) std::memcpy(pkt, p, len);
    fix_packet(pkt, len, ctrl);
    TunPacket tp{pkt, len, VnetHdr(), len >= cap};
    if (vlen == kVnetHdrLen) tp.vh = vnet_load(vh);
    tx.handle(fixed_routes(), tp);
  }
  tx.send_all();
  tun.hdr_reset();
  return 0;
}
