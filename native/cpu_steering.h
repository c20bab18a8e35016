// CPU-local steering (DatapathOptions::cpu_local): the programs that keep a packet on the CPU it
// arrived on. The reuseport group of the receiving sockets hands a datagram to the worker of the CPU
// that received it (UdpSocket::steer_by_cpu), and a TUN hands what the stack sends into it to the
// queue of the CPU that sent it (this program). With the workers pinned one per CPU, a round trip
// whose ends run on one CPU wakes no thread on another CPU: no inter-processor interrupt, no idle CPU
// to bring back.
#pragma once

#include <string>
#include <vector>

namespace vxnet {

// Loads an eBPF socket-filter program for TUNSETSTEERINGEBPF returning the queue of the current
// CPU: i for cpus[i], for any other CPU its number (the TUN takes the result modulo its queues).
// The program's fd, or -1 with *err.
int load_tun_cpu_steering(const std::vector<int>& cpus, std::string* err);

// Attaches `prog_fd` to the TUN of `tun_fd` (every queue of the device): false with *err.
bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err);

}  // namespace vxnet
