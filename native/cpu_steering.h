// CPU-local steering (DatapathOptions::cpu_local): the programs that keep a packet on the CPU it
// arrived on. The reuseport group of the receiving sockets hands a datagram to the worker of the CPU
// that received it (UdpSocket::steer_by_cpu), and a TUN hands a new flow from the stack to the queue
// of the CPU that sent its first packet and keeps it there while the flow is active (this program,
// with its flow table: per-packet steering would reorder TCP, whose data also leaves from the CPU
// that processes its ACKs). With the workers pinned one per CPU, a round trip whose ends run on one
// CPU wakes no thread on another CPU: no inter-processor interrupt, no idle CPU to bring back.
#pragma once

#include <string>
#include <vector>

namespace vxnet {

// Loads an eBPF socket-filter program for TUNSETSTEERINGEBPF. It returns a known flow's queue; a new
// flow, or one idle for 50 ms, gets the queue of the current CPU: i for cpus[i], for any other CPU
// its number (the TUN takes the result modulo its queues). Flows are keyed by an LRU hash of
// (saddr ^ daddr, protocol and ports or ICMP echo identifier), the same for both directions.
// The program's fd (it holds its map), or -1 with *err.
int load_tun_cpu_steering(const std::vector<int>& cpus, std::string* err);

// Attaches `prog_fd` to the TUN of `tun_fd` (every queue of the device): false with *err.
bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err);

}  // namespace vxnet
