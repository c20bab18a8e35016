// The TUN device: opened here so the datapath owns its fds (IFF_TUN | IFF_NO_PI).
#pragma once

#include <string>
#include <vector>

#include "link_stats.h"

namespace vxnet {

// Opens `queues` queues of the TUN device `name` (IFF_MULTI_QUEUE when more than one), all
// non-blocking. On success stores the kernel's name for the device in *actual.
// With `vnet_hdr`, every read and write carries a virtio_net_hdr and TSO/checksum offload is asked
// for; *offload reports whether the kernel accepted TSO, *uso whether it also took UDP
// segmentation offload (UDP super-packets from UDP_SEGMENT senders). `queue_len` (> 0) is set as the
// device's txqueuelen: the packets each queue holds until its reader takes them. `drops` (if not
// null) is opened on the device, to read the packets its queues drop.
bool open_tun(const std::string& name, unsigned queues, bool vnet_hdr, unsigned queue_len, std::vector<int>* fds,
              std::string* actual, bool* offload, bool* uso, LinkDropCounter* drops, std::string* err);

// The same in the network namespace at `netns` (a path: nsfs bind mount or /proc/PID/ns/net;
// empty: ours), from a short-lived thread that enters it: the device is created there, and the
// fds work from any namespace afterwards. With `must_be_new`, an existing device of that name
// in that namespace is refused (TUNSETIFF would attach to it).
bool open_tun_in(const std::string& netns, const std::string& name, unsigned queues, bool vnet_hdr, unsigned queue_len,
                 bool must_be_new, std::vector<int>* fds, std::string* actual, bool* offload, bool* uso,
                 LinkDropCounter* drops, std::string* err);

}  // namespace vxnet
