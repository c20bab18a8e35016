// The steering programs (native/cpu_steering.cc) run by the kernel: the TUN's through
// BPF_PROG_TEST_RUN, the receiving sockets' through real datagrams on the loopback of a private
// network namespace (unshare: nothing of the host's network is touched). Needs root and two CPUs;
// built with ASan/UBSan by scripts/sanitize.sh (CHECK and its counters: packets.h).
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../cpu_steering.h"
#include "packets.h"

using namespace vxnet;

static uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}

static void sleep_ms(int ms) { usleep(static_cast<useconds_t>(ms) * 1000); }

// An IPv4 header (no options) and 8 bytes of transport header: ports for TCP and UDP, an echo
// request with identifier `sport` for ICMP.
static std::vector<uint8_t> ipv4(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport, uint16_t frag = 0) {
  std::vector<uint8_t> p(28, 0);
  p[0] = 0x45;
  p[3] = 28;
  p[6] = static_cast<uint8_t>(frag >> 8);
  p[7] = static_cast<uint8_t>(frag);
  p[8] = 64;
  p[9] = proto;
  const uint32_t s = htonl(src), d = htonl(dst);
  std::memcpy(&p[12], &s, 4);
  std::memcpy(&p[16], &d, 4);
  if (proto == 1) {
    p[20] = 8;
    p[24] = static_cast<uint8_t>(sport >> 8);
    p[25] = static_cast<uint8_t>(sport);
  } else {
    p[20] = static_cast<uint8_t>(sport >> 8);
    p[21] = static_cast<uint8_t>(sport);
    p[22] = static_cast<uint8_t>(dport >> 8);
    p[23] = static_cast<uint8_t>(dport);
  }
  return p;
}

// The TUN program's answer for `pkt` (the queue), or -1 when the kernel would not run it.
static int tun_lane(int prog, const std::vector<uint8_t>& pkt) {
  // BPF_PROG_TEST_RUN takes a frame with an Ethernet header; a socket filter sees it from the
  // network header on, as the TUN's program sees the packet from the stack.
  std::vector<uint8_t> frame(14, 0);
  frame[12] = 0x08;
  frame.insert(frame.end(), pkt.begin(), pkt.end());
  bpf_attr a{};
  a.test.prog_fd = static_cast<uint32_t>(prog);
  a.test.data_in = reinterpret_cast<uint64_t>(frame.data());
  a.test.data_size_in = static_cast<uint32_t>(frame.size());
  a.test.repeat = 1;
  if (syscall(SYS_bpf, BPF_PROG_TEST_RUN, &a, sizeof a) < 0) {
    std::fprintf(stderr, "BPF_PROG_TEST_RUN: %s\n", std::strerror(errno));
    return -1;
  }
  return static_cast<int>(a.test.retval);
}

static void tun_program(int c0, int c1) {
  Steering s;
  std::string err;
  const std::vector<int> cpus = {c0, c1};
  if (!load_tun_steering(cpus, &s, &err)) {
    CHECK(false, ("load_tun_steering: " + err).c_str());
    return;
  }
  CHECK(s.lanes == 4 && s.drained != nullptr, "four lanes with a drain clock");
  pin(c0);
  const auto a = ipv4(0x0af40102, 0x0af40202, 6, 40000, 5201);
  const auto a_back = ipv4(0x0af40202, 0x0af40102, 6, 5201, 40000);
  CHECK(tun_lane(s.prog_fd, a) == 0, "a new flow takes the light lane of the CPU that sent it");
  bool stayed = true;
  for (int i = 0; i < 40; ++i) stayed = stayed && tun_lane(s.prog_fd, a) == 0;
  CHECK(stayed, "a long burst stays on the light lane while that lane was not drained after its previous packet");
  sleep_ms(1);
  s.drained[0] = mono_ns();
  CHECK(tun_lane(s.prog_fd, a) == 2, "... and moves to its worker's bulk lane once it was");
  CHECK(tun_lane(s.prog_fd, a_back) == 2, "both directions of a flow share its lane");
  sleep_ms(7);
  s.drained[2] = mono_ns();
  CHECK(tun_lane(s.prog_fd, a) == 2, "a bulk flow stays bulk after a short pause");

  const auto ping = ipv4(0x0af40102, 0x0af40202, 1, 77, 0);
  const auto other_ping = ipv4(0x0af40102, 0x0af40202, 1, 78, 0);
  const auto frag = ipv4(0x0af40102, 0x0af40202, 6, 1, 1, 0x2000);
  CHECK(tun_lane(s.prog_fd, ping) == 0, "a ping starts on the light lane");
  pin(c1);
  CHECK(tun_lane(s.prog_fd, ping) == 0, "a known flow keeps its lane when its sender moves within a burst");
  CHECK(tun_lane(s.prog_fd, other_ping) == 1, "another echo identifier is another flow: the light lane of this CPU");
  CHECK(tun_lane(s.prog_fd, frag) == 1, "a fragment is a flow of its addresses and protocol");
  sleep_ms(7);
  CHECK(tun_lane(s.prog_fd, ping) == 0, "after a pause, a light flow stays while its lane may still hold its last packet");
  sleep_ms(7);
  s.drained[0] = mono_ns();
  CHECK(tun_lane(s.prog_fd, ping) == 1, "... and follows its sender to this CPU's light lane once it cannot");
  sleep_ms(60);
  CHECK(tun_lane(s.prog_fd, a) == 1, "after a long pause a bulk flow starts over on the light lane of the sending CPU");
  auto lie = ipv4(0x0af40104, 0x0af40204, 6, 1000, 2000);
  lie[0] = 0x4f;  // a 60-byte header in a 28-byte packet: the ports lie past its end
  CHECK(tun_lane(s.prog_fd, lie) == 0, "a packet shorter than what its header claims goes to queue 0");
  unload_steering(&s);
  CHECK(s.prog_fd < 0 && s.drained == nullptr, "unloaded");

  // Larger worker sets load (the verifier takes the per-CPU compare chain).
  std::vector<int> many;
  for (int c = 0; c < 16; ++c) many.push_back(c);
  CHECK(load_tun_steering(many, &s, &err), ("16 workers: " + err).c_str());
  CHECK(s.lanes == 32, "32 lanes for 16 workers");
  unload_steering(&s);
}

// A private network namespace with its loopback up: the receive test's datagrams stay in it.
static bool private_loopback() {
  if (unshare(CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "unshare(CLONE_NEWNET): %s\n", std::strerror(errno));
    return false;
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  bool ok = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &ifr) == 0;
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  ok = ok && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
  if (fd >= 0) close(fd);
  return ok;
}

// Which of `socks` received the datagram just sent (-1: none); reads everything waiting.
static int received_by(const std::vector<int>& socks) {
  int who = -1, count = 0;
  for (size_t i = 0; i < socks.size(); ++i) {
    uint8_t buf[2048];
    while (recv(socks[i], buf, sizeof buf, MSG_DONTWAIT) > 0) {
      who = static_cast<int>(i);
      ++count;
    }
  }
  return count == 1 ? who : (count == 0 ? -1 : -2);
}

static void rx_program(int c0, int c1, size_t inner_offset, uint16_t port) {
  std::vector<int> socks;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 4; ++i) {
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      CHECK(false, "bind a receiving socket on the private loopback");
      return;
    }
    socks.push_back(fd);
  }
  Steering s;
  std::string err;
  if (!load_rx_steering({c0, c1}, socks, inner_offset, &s, &err)) {
    CHECK(false, ("load_rx_steering: " + err).c_str());
    return;
  }
  std::vector<int> three(socks.begin(), socks.begin() + 3);
  Steering bad;
  CHECK(!load_rx_steering({c0, c1}, three, inner_offset, &bad, &err) && bad.prog_fd < 0, "refused: not two sockets per CPU");
  const int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  auto send_inner = [&](const std::vector<uint8_t>& inner) {
    std::vector<uint8_t> d(inner_offset, 0);
    if (inner_offset >= 8) d[0] = 0x08;  // VXLAN: I flag, then VNI and the inner Ethernet header (zeros will do)
    d.insert(d.end(), inner.begin(), inner.end());
    sendto(tx, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    return received_by(socks);
  };
  pin(c0);
  const auto a = ipv4(0x0af40102, 0x0af40202, 6, 40000, 5201);
  CHECK(send_inner(a) == 0, "a new flow's datagram goes to the light socket of the CPU that received it");
  bool stayed = true;
  for (int i = 0; i < 40; ++i) stayed = stayed && send_inner(a) == 0;
  CHECK(stayed, "a long burst stays on the light socket while it was not drained after the flow's previous datagram");
  sleep_ms(1);
  s.drained[0] = mono_ns();
  CHECK(send_inner(a) == 2, "... and moves to the bulk socket of the same worker once it was");
  pin(c1);
  CHECK(send_inner(a) == 2, "a bulk flow keeps its socket whichever CPU receives it");
  const auto b = ipv4(0x0af40103, 0x0af40203, 17, 53, 5353);
  CHECK(send_inner(b) == 1, "a new flow received on the second CPU: its light socket");
  const auto ping = ipv4(0x0af40102, 0x0af40202, 1, 99, 0);
  CHECK(send_inner(ping) == 1, "a ping: the light socket of the receiving CPU");
  const std::vector<uint8_t> runt = {0x45, 0};
  const int r = send_inner(runt);
  CHECK(r >= 0 && r < 4, "a datagram too short for an inner header is still delivered (the kernel's hash picks; the worker drops it)");

  // Flows turning bulk take the least loaded worker's bulk socket, preferring the receiving CPU's.
  auto turn_bulk = [&](const std::vector<uint8_t>& f, int light) {
    for (int i = 0; i < 40; ++i) send_inner(f);
    s.drained[light] = mono_ns() + 1;
    return send_inner(f);
  };
  sleep_ms(25);  // the loads so far expire (two epochs)
  pin(c0);
  const auto f1 = ipv4(0x0af40102, 0x0af40202, 6, 40001, 5201);
  const auto f2 = ipv4(0x0af40102, 0x0af40202, 6, 40002, 5201);
  const auto f3 = ipv4(0x0af40102, 0x0af40202, 6, 40003, 5201);
  CHECK(turn_bulk(f1, 0) == 2, "with no bulk socket loaded, a flow turning bulk takes the receiving CPU's");
  CHECK(turn_bulk(f2, 0) == 3, "the next one turning bulk on that CPU takes the other worker's: the first one's socket is charged for it");
  CHECK(turn_bulk(f3, 0) == 2, "the third one the receiving CPU's again (both charged alike)");
  bool kept = true;
  auto big = f2;
  big.resize(60000, 0);
  for (int i = 0; i < 100; ++i) kept = kept && send_inner(big) == 3;
  CHECK(kept, "a bulk flow's 6 MB stay on its socket");
  pin(c1);
  const auto f4 = ipv4(0x0af40102, 0x0af40202, 6, 40004, 5201);
  CHECK(send_inner(f4) == 1 && turn_bulk(f4, 1) == 2, "a flow turning bulk on a CPU whose bulk socket carries more bytes goes to the less loaded worker's");
  sleep_ms(25);
  const auto f5 = ipv4(0x0af40102, 0x0af40202, 6, 40005, 5201);
  CHECK(turn_bulk(f5, 1) == 3, "loads expire: after two quiet epochs a flow turning bulk stays on the receiving CPU");
  unload_steering(&s);
  close(tx);
  for (int fd : socks) close(fd);
}

int main() {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  if (cpus.size() < 2) {
    std::printf("steering-check: skipped (needs two CPUs, has %zu)\n", cpus.size());
    return 0;
  }
  tun_program(cpus[0], cpus[1]);
  if (private_loopback()) {
    rx_program(cpus[0], cpus[1], 0, 8285);        // flannel udp: the inner packet right after the UDP header
    rx_program(cpus[0], cpus[1], 8 + 14, 8472);   // VXLAN: after the VXLAN and inner Ethernet headers
  } else {
    CHECK(false, "a private network namespace with its loopback up");
  }
  std::printf("steering-check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
