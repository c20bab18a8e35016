// The addon's numeric options: the one owner of their ranges and defaults. The addon parses its
// arguments with these specs and exports them (`addon.options`); the TypeScript face validates a
// user's configuration against that export, so a limit or a default is written only here.
#pragma once

#include <cstddef>
#include <cstdint>

#include "encap.h"
#include "packet.h"

namespace vxnet {

struct OptionSpec {
  const char* name;  // the JS property
  uint32_t min;
  uint32_t max;
  uint32_t def;      // used when the property is absent (unless required)
  bool required;
};

namespace opt {
// Outer IPv4 + UDP in front of every datagram; the largest overlay MTU is what is left of 65535.
constexpr uint32_t kOuterHeaders = kIPv4MinHeader + kUdpHeader;
constexpr OptionSpec kMtu{"mtu", 576, 65535, 0, true};  // max before the encapsulation's overhead: max_mtu()
constexpr OptionSpec kVni{"vni", 0, 0xffffff, 1, false};
constexpr OptionSpec kNetworkVni{"vni", 0, 0xffffff, 0, true};
constexpr OptionSpec kPort{"port", 1, 65535, 0, true};
constexpr OptionSpec kBindIp{"bindIp", 0, 0xffffffffu, 0, false};
constexpr OptionSpec kBatch{"batch", 1, 1024, 64, false};           // packets per sendmmsg/recvmmsg
constexpr OptionSpec kQueues{"queues", 1, 16, 0, true};             // workers = TUN queues = sockets
constexpr OptionSpec kBusyPollUs{"busyPollUs", 0, 10000, 50, false};
constexpr OptionSpec kSliceUs{"sliceUs", 0, 100000, 100, false};
constexpr OptionSpec kCpuLocal{"cpuLocal", 0, 1, 1, false};        // 1: worker q pinned, packets steered by CPU (1 < queues <= CPUs)
constexpr OptionSpec kSockBuf{"sockBuf", 65536, 1u << 30, 4u << 20, false};
// Packets each TUN queue holds for its worker (the device's txqueuelen; the kernel's TUN default is
// 500): what absorbs a worker's scheduling delay. At 150k packets/s, 500 is 3.3 ms (docs/datapath.md).
constexpr OptionSpec kTunQueueLen{"tunQueueLen", 16, 65536, 4096, false};
constexpr OptionSpec kIcmpPerSec{"icmpPerSec", 0, 1000000, 100, false};
constexpr OptionSpec kLocalNet{"localNet", 0, 0xffffffffu, 0, false};
constexpr OptionSpec kLocalPrefixLen{"localPrefixLen", 0, 32, 0, false};
constexpr OptionSpec kIcmpSrc{"icmpSrc", 0, 0xffffffffu, 0, false};
constexpr OptionSpec kTunIp{"tunIp", 0, 0xffffffffu, 0, false};

// The options of a datapath (with its default network) and of a network added to one.
constexpr const OptionSpec* kDatapath[] = {&kMtu,     &kVni,       &kPort,      &kBindIp,     &kBatch,
                                           &kQueues,  &kBusyPollUs, &kSliceUs,  &kCpuLocal,  &kSockBuf,    &kTunQueueLen, &kIcmpPerSec,
                                           &kLocalNet, &kLocalPrefixLen, &kIcmpSrc, &kTunIp};
constexpr const OptionSpec* kNetwork[] = {&kMtu, &kNetworkVni, &kLocalNet, &kLocalPrefixLen, &kIcmpSrc, &kTunIp};
}  // namespace opt

// The largest overlay MTU with encapsulation `k`: the outer datagram must fit in 65535 bytes.
constexpr uint32_t max_mtu(EncapKind k) {
  return opt::kMtu.max - opt::kOuterHeaders - static_cast<uint32_t>(encap_overhead(k));
}

}  // namespace vxnet
