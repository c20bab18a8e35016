// Writes the seed corpora of the fuzz targets into native/fuzz/corpus/<target>/ (run by
// scripts/fuzz.sh --seeds; the files are committed): small, valid inputs of each kind, so the
// fuzzer starts behind the validity checks. Deterministic: rerunning gives the same files.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../offload.h"
#include "../packet.h"
#include "../test/netlink_reply.h"

using namespace vxnet;
using Bytes = std::vector<uint8_t>;

namespace {

std::string g_dir;

void put(const std::string& target, const std::string& name, const Bytes& b) {
  // The roundtrip target takes the tx target's input format: its TSO seeds are these.
  if (target == "tx" && (name.find("tso") != std::string::npos || name.find("regress-gso") != std::string::npos)) {
    put("roundtrip", name, b);
  }
  const std::string d = g_dir + "/" + target;
  mkdir(d.c_str(), 0755);
  const std::string path = d + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(b.data(), 1, b.size(), f) != b.size()) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fclose(f);
}

uint32_t pseudo(const Bytes& p, uint8_t proto) {
  uint8_t ph[12];
  std::memcpy(ph, &p[12], 8);
  ph[8] = 0;
  ph[9] = proto;
  store_be16(ph + 10, static_cast<uint16_t>(p.size() - 20));
  return csum_partial(ph, 12);
}

Bytes ip(uint32_t src, uint32_t dst, uint8_t proto, size_t l4_len) {
  Bytes p(20 + l4_len);
  p[0] = 0x45;
  store_be16(&p[2], static_cast<uint16_t>(p.size() > 65535 ? 0 : p.size()));
  store_be16(&p[4], 0x1234);
  p[6] = 0x40;
  p[8] = 64;
  p[9] = proto;
  store_be32(&p[12], src);
  store_be32(&p[16], dst);
  store_be16(&p[10], csum_fold(csum_partial(p.data(), 20)));
  return p;
}

// TCP with a correct checksum (or, `offloaded`, the pseudo-header sum in the field).
Bytes tcp(uint32_t src, uint32_t dst, uint32_t seq, size_t payload, uint8_t flags, bool offloaded = false) {
  Bytes p = ip(src, dst, 6, 20 + payload);
  store_be16(&p[20], 40000);
  store_be16(&p[22], 5201);
  store_be32(&p[24], seq);
  store_be32(&p[28], 9999);
  p[32] = 5 << 4;
  p[33] = flags;
  store_be16(&p[34], 502);
  for (size_t i = 0; i < payload; ++i) p[40 + i] = static_cast<uint8_t>('a' + i % 26);
  const uint32_t ph = pseudo(p, 6);
  store_be16(&p[36], offloaded ? static_cast<uint16_t>(ph) : csum_fold(csum_partial(&p[20], p.size() - 20, ph)));
  return p;
}

Bytes udp(uint32_t src, uint32_t dst, size_t payload, bool offloaded = false) {
  Bytes p = ip(src, dst, 17, 8 + payload);
  store_be16(&p[20], 5353);
  store_be16(&p[22], 53);
  store_be16(&p[24], static_cast<uint16_t>(8 + payload));
  for (size_t i = 0; i < payload; ++i) p[28 + i] = static_cast<uint8_t>(i * 13 + 1);
  const uint32_t ph = pseudo(p, 17);
  uint16_t c = csum_fold(csum_partial(&p[20], p.size() - 20, ph));
  store_be16(&p[26], offloaded ? static_cast<uint16_t>(ph) : (c ? c : 0xffff));
  return p;
}

Bytes icmp_echo(uint32_t src, uint32_t dst) {
  Bytes p = ip(src, dst, 1, 16);
  p[20] = 8;
  store_be16(&p[24], 77);
  store_be16(&p[22], csum_fold(csum_partial(&p[20], 16)));
  return p;
}

Bytes vxlan(const Bytes& inner) {
  Bytes f(22);
  f[0] = 0x08;
  f[6] = 1;  // VNI 1
  const uint8_t mac[6] = {0x02, 0xaa, 0x00, 0x00, 0x00, 0x01};
  std::memcpy(&f[8], mac, 6);
  store_be16(&f[20], kEtherTypeIPv4);
  f.insert(f.end(), inner.begin(), inner.end());
  return f;
}

// rx.cc record: [peer][ctrl][seg:2][len:2][bytes], one received message. `peer` indexes peer_ip();
// seg is the UDP_GRO size (0: one datagram).
void record(Bytes* out, uint8_t ctrl, uint8_t peer, const Bytes& msg, size_t seg = 0) {
  out->push_back(peer);
  out->push_back(ctrl);
  out->push_back(static_cast<uint8_t>(seg >> 8));
  out->push_back(static_cast<uint8_t>(seg));
  out->push_back(static_cast<uint8_t>(msg.size() >> 8));
  out->push_back(static_cast<uint8_t>(msg.size()));
  out->insert(out->end(), msg.begin(), msg.end());
}

// A GRO train: the datagrams of `dgrams` (all of one size but maybe the last) back to back, as one
// recvmmsg message with that size in its UDP_GRO cmsg.
void train(Bytes* out, uint8_t ctrl, uint8_t peer, const std::vector<Bytes>& dgrams) {
  Bytes msg;
  for (const Bytes& d : dgrams) msg.insert(msg.end(), d.begin(), d.end());
  record(out, ctrl, peer, msg, dgrams.empty() ? 0 : dgrams.front().size());
}

// tx.cc input: [ctrl][virtio_net_hdr][packet].
Bytes tx_input(uint8_t ctrl, const VnetHdr& h, const Bytes& pkt) {
  Bytes b(1 + kVnetHdrLen);
  b[0] = ctrl;
  vnet_store(&b[1], h);
  b.insert(b.end(), pkt.begin(), pkt.end());
  return b;
}

constexpr uint32_t kPeer1 = 0x0af40105, kPeer5b = 0x0af50a0b, kLocal = 0x0af40902, kRemote = 0x0af40207;

void rx_seeds() {
  for (int vx = 0; vx < 2; ++vx) {
    auto wrap = [&](const Bytes& b) { return vx ? vxlan(b) : b; };
    const std::string k = vx ? "vxlan-" : "udp-";
    const uint8_t conf = static_cast<uint8_t>(vx);
    Bytes b{conf};
    record(&b, 0, 0, wrap(tcp(kPeer1, kLocal, 1, 100, 0x18)));
    put("rx", k + "tcp", b);
    b = {conf};
    record(&b, 0, 4, wrap(udp(kPeer5b, kLocal, 30)));
    record(&b, 0, 4, wrap(udp(kPeer5b, kLocal, 30, true)));
    record(&b, 0, 0, wrap(icmp_echo(kPeer1, kLocal)));
    put("rx", k + "udp-offloaded-icmp", b);
    // A GRO train of 20 full segments, then a PSH: coalesced into one super-packet.
    b = {conf};
    std::vector<Bytes> segs;
    for (uint32_t i = 0; i < 20; ++i) segs.push_back(wrap(tcp(kPeer1, kLocal, 1000 + i * 1398, 1398, 0x10)));
    train(&b, 0, 0, segs);
    record(&b, 0x80, 0, wrap(tcp(kPeer1, kLocal, 1000 + 20 * 1398, 500, 0x18)));
    put("rx", k + "train", b);
    // A train with offloaded checksums (the pseudo-header sum in the field), as a kernel peer on a veth sends.
    b = {conf};
    segs.clear();
    for (uint32_t i = 0; i < 10; ++i) segs.push_back(wrap(tcp(kPeer1, kLocal, 1 + i * 1398, 1398, 0x10, true)));
    train(&b, 0, 0, segs);
    put("rx", k + "train-offloaded", b);
    // A train of UDP datagrams of one flow (written as GSO_UDP_L4), the last one shorter.
    b = {conf};
    segs.clear();
    for (int i = 0; i < 8; ++i) segs.push_back(wrap(udp(kPeer5b, kLocal, 1200)));
    segs.push_back(wrap(udp(kPeer5b, kLocal, 300)));
    train(&b, 0, 4, segs);
    put("rx", k + "udp-train", b);
    // Two flows interleaved, one corrupt segment, then a flush.
    b = {conf};
    Bytes bad = tcp(kPeer1, kLocal, 1 + 1398, 1398, 0x10);
    bad[700] ^= 1;
    record(&b, 0, 0, wrap(tcp(kPeer1, kLocal, 1, 1398, 0x10)));
    record(&b, 0, 4, wrap(tcp(kPeer5b, kLocal, 7, 1398, 0x10)));
    record(&b, 0, 0, wrap(bad));
    record(&b, 0x80, 4, wrap(tcp(kPeer5b, kLocal, 7 + 1398, 1398, 0x10)));
    put("rx", k + "flows", b);
    // A super-packet received whole (above the MTU).
    b = {conf};
    record(&b, 0, 0, wrap(tcp(kPeer1, kLocal, 5, 8000, 0x18)));
    put("rx", k + "super", b);
    b = {conf};
    record(&b, 0, 0, wrap(tcp(kPeer1, kLocal, 5, 3000, 0x98, true)));
    put("rx", k + "super-cwr-offloaded", b);
  }
  // VXLAN, the second network (VNI 2, lease 10.244.8.0/24, peers 198.18.0.1-4): a datagram for it,
  // and one claiming it from a peer only network 1 knows (198.18.0.5).
  Bytes b{1};
  record(&b, 0xc0, 0, vxlan(tcp(kPeer1, 0x0af40802, 1, 100, 0x18)));
  record(&b, 0xc0, 4, vxlan(tcp(kPeer5b, 0x0af40802, 1, 100, 0x18)));
  put("rx", "vxlan-second-network", b);
}

void tx_seeds() {
  for (int vx = 0; vx < 2; ++vx) {
    const std::string k = vx ? "vxlan-" : "udp-";
    const uint8_t c = static_cast<uint8_t>(vx);
    VnetHdr none;
    put("tx", k + "plain", tx_input(c, none, tcp(kLocal, kRemote, 1, 50, 0x18)));
    VnetHdr partial;
    partial.flags = kVnetFlagNeedsCsum;
    partial.csum_start = 20;
    partial.csum_offset = 16;
    put("tx", k + "syn-needs-csum", tx_input(c, partial, tcp(kLocal, kRemote, 1, 0, 0x02, true)));
    partial.csum_offset = 6;
    put("tx", k + "udp-needs-csum", tx_input(c, partial, udp(kLocal, kRemote, 40, true)));
    VnetHdr tso;
    tso.flags = kVnetFlagNeedsCsum;
    tso.gso_type = kVnetGsoTcpV4;
    tso.hdr_len = 40;
    tso.gso_size = 1398;
    tso.csum_start = 20;
    tso.csum_offset = 16;
    put("tx", k + "tso", tx_input(c, tso, tcp(kLocal, kRemote, 100, 1398 * 6 + 77, 0x18, true)));
    VnetHdr ecn = tso;
    ecn.gso_type = kVnetGsoTcpV4 | kVnetGsoEcn;
    ecn.gso_size = 536;
    put("tx", k + "tso-ecn", tx_input(c, ecn, tcp(kLocal, kRemote, 100, 536 * 3 + 1, 0x98, true)));
    put("tx", k + "no-route", tx_input(c, none, udp(kLocal, 0x0a630101, 12)));
  }
  // TSO with TCP timestamps (data offset 8), the usual Linux segment, and FIN on the last.
  {
    Bytes p = tcp(kLocal, kRemote, 100, 1436 * 4 + 10, 0x19);
    p.insert(p.begin() + 40, {1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2});
    p[32] = 8 << 4;
    store_be16(&p[2], static_cast<uint16_t>(p.size()));
    store_be16(&p[10], 0);
    store_be16(&p[10], csum_fold(csum_partial(p.data(), 20)));
    store_be16(&p[36], static_cast<uint16_t>(pseudo(p, 6)));
    VnetHdr ts;
    ts.flags = kVnetFlagNeedsCsum;
    ts.gso_type = kVnetGsoTcpV4;
    ts.hdr_len = 52;
    ts.gso_size = 1436;
    ts.csum_start = 20;
    ts.csum_offset = 16;
    put("tx", "vxlan-tso-timestamps-fin", tx_input(1, ts, p));
  }
  // The largest TSO packet the kernel hands over (IP total length 65535), MSS 1448.
  VnetHdr tso;
  tso.flags = kVnetFlagNeedsCsum;
  tso.gso_type = kVnetGsoTcpV4;
  tso.hdr_len = 40;
  tso.gso_size = 1448;
  tso.csum_start = 20;
  tso.csum_offset = 16;
  put("tx", "vxlan-tso-65535", tx_input(1, tso, tcp(kLocal, kRemote, 100, 65535 - 40, 0x10, true)));
  // Regressions (found by the tx target): gso_size 65535 on a small TSO packet (a stride of
  // 64 KiB: no segment fitted a UDP GSO message), and one segment above kMaxTcpSegment.
  tso.gso_size = 65535;
  put("tx", "regress-gso-size-65535", tx_input(1, tso, tcp(kLocal, kRemote, 100, 1000, 0x10, true)));
  put("tx", "regress-segment-above-udp-max", tx_input(1, tso, tcp(kLocal, kRemote, 100, kMaxTcpSegment - 40 + 1, 0x10, true)));
  // A NEEDS_CSUM UDP packet whose checksum computes to 0 (RFC 768: must go out as 0xffff).
  Bytes z = udp(kLocal, kRemote, 20, true);
  store_be16(&z[z.size() - 2], 0);
  store_be16(&z[z.size() - 2], csum_fold(csum_partial(&z[20], z.size() - 20)));
  VnetHdr partial;
  partial.flags = kVnetFlagNeedsCsum;
  partial.csum_start = 20;
  partial.csum_offset = 6;
  put("tx", "regress-udp-csum-zero", tx_input(1, partial, z));
}

void route_seeds() {
  auto rec = [](Bytes* b, uint32_t net, uint8_t plen, uint32_t peer, uint32_t slot, uint16_t port) {
    const size_t at = b->size();
    b->resize(at + 24);
    uint8_t* r = b->data() + at;
    for (int i = 0; i < 4; ++i) {
      r[i] = static_cast<uint8_t>(net >> (8 * i));
      r[4 + i] = static_cast<uint8_t>(peer >> (8 * i));
      r[8 + i] = static_cast<uint8_t>(slot >> (8 * i));
    }
    r[12] = static_cast<uint8_t>(port);
    r[13] = static_cast<uint8_t>(port >> 8);
    r[14] = plen;
    for (int i = 0; i < 6; ++i) r[16 + i] = static_cast<uint8_t>(0x02 + i);
  };
  Bytes b;
  rec(&b, 0x0af40200, 24, 0xc6120002, 0, 8472);
  put("routes", "one", b);
  rec(&b, 0x0af40300, 24, 0xc6120003, 1, 8472);
  rec(&b, 0x0af50000, 16, 0xc6120003, 2, 8472);
  rec(&b, 0x0af40380, 25, 0xc6120004, 3, 8285);
  rec(&b, 0x0af40909, 32, 0xc6120005, 4, 8285);
  rec(&b, 0x00000000, 0, 0xc6120006, 5, 8472);
  put("routes", "mixed-prefixes", b);
  Bytes dup = b;
  rec(&dup, 0x0af40300, 24, 0xc6120009, 6, 8472);
  put("routes", "duplicate", dup);
}

void icmp_seeds() {
  auto in = [](uint32_t src, const Bytes& p) {
    Bytes b(4);
    store_be32(b.data(), src);
    b.insert(b.end(), p.begin(), p.end());
    return b;
  };
  put("icmp", "udp", in(0x0af40901, udp(kLocal, 0x0a630101, 12)));
  put("icmp", "tcp-no-src", in(0, tcp(kLocal, 0x0a630101, 1, 10, 0x02)));
  put("icmp", "echo", in(0x0af40901, icmp_echo(kLocal, 0x0a630101)));
  Bytes opt = tcp(kLocal, 0x0a630101, 1, 4, 0x02);
  opt[0] = 0x46;
  opt.insert(opt.begin() + 20, {1, 1, 1, 0});
  store_be16(&opt[2], static_cast<uint16_t>(opt.size()));
  store_be16(&opt[10], 0);
  store_be16(&opt[10], csum_fold(csum_partial(opt.data(), 24)));
  put("icmp", "ip-options", in(0x0af40901, opt));
  // Regressions: RFC 1122 3.2.2 forbids a reply for each of these.
  put("icmp", "regress-multicast-dst", in(0x0af40901, udp(kLocal, 0xe00000fb, 12)));
  put("icmp", "regress-broadcast-dst", in(0x0af40901, udp(kLocal, 0xffffffff, 12)));
  put("icmp", "regress-loopback-src", in(0x0af40901, udp(0x7f000001, 0x0a630101, 12)));
  put("icmp", "regress-class-e-src", in(0x0af40901, udp(0xf0000001, 0x0a630101, 12)));
}

// netlink: 4 bytes of ifindex, then an RTM_NEWLINK reply (test/netlink_reply.h) with the
// statistics 64-bit, 32-bit or both, and a reply of two messages of which the second is the device.
void netlink_seeds() {
  auto with_index = [](int ifindex, const Bytes& reply) {
    Bytes b(4);
    std::memcpy(b.data(), &ifindex, 4);
    b.insert(b.end(), reply.begin(), reply.end());
    return b;
  };
  put("netlink", "stats64", with_index(5, testpkt::link_reply(5, 1234567, true, false)));
  put("netlink", "stats32", with_index(5, testpkt::link_reply(5, 4242, false, true)));
  put("netlink", "both", with_index(5, testpkt::link_reply(5, 99, true, true)));
  Bytes two = testpkt::link_reply(3, 1, true, false);
  const Bytes ours = testpkt::link_reply(5, 77, true, false);
  two.insert(two.end(), ours.begin(), ours.end());
  put("netlink", "two-messages", with_index(5, two));
}

}  // namespace

int main(int argc, char** argv) {
  g_dir = argc > 1 ? argv[1] : "native/fuzz/corpus";
  mkdir(g_dir.c_str(), 0755);
  rx_seeds();
  tx_seeds();
  route_seeds();
  icmp_seeds();
  netlink_seeds();
  std::printf("seeds written to %s\n", g_dir.c_str());
  return 0;
}
