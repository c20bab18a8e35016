// CPU-local steering (DatapathOptions::cpu_local): the programs that keep a packet on the CPU it
// arrived on. The reuseport group of the receiving sockets hands a datagram to the worker of the CPU
// that received it (UdpSocket::steer_by_cpu), and a TUN hands a new flow from the stack to the queue
// of the CPU that sent its first packet and keeps it there while the flow is active (this program,
// with its flow table: per-packet steering would reorder TCP, whose data also leaves from the CPU
// that processes its ACKs). With the workers pinned one per CPU, a round trip whose ends run on one
// CPU wakes no thread on another CPU: no inter-processor interrupt, no idle CPU to bring back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vxnet {

// The TUN steering program and the drain clock it reads.
struct TunSteering {
  int prog_fd = -1;  // holds its maps
  // drained[q] (CLOCK_MONOTONIC ns), written by worker q, read by the program: everything the TUN
  // queued for queue q before that time has been read and sent. Shared memory with a BPF array
  // (BPF_F_MMAPABLE); 0 until the worker first drains its queue.
  uint64_t* drained = nullptr;
  size_t mapped = 0;  // bytes mapped at `drained`
};

// Loads an eBPF socket-filter program for TUNSETSTEERINGEBPF. It returns a known flow's queue; a new
// flow gets the queue of the current CPU: i for cpus[i], for any other CPU its number (the TUN takes
// the result modulo its queues). A known flow moves to the current CPU's queue after a pause: of
// 5 ms when the burst before it was small (request/response traffic) and its queue has been drained
// since its last packet (the drain clock), of 50 ms in any case (cpu_steering.cc: kIdleNs,
// kSmallBurst, kLongIdleNs). Flows are keyed by an LRU hash of (saddr ^ daddr, protocol and ports
// or ICMP echo identifier), the same for both directions. False with *err.
bool load_tun_cpu_steering(const std::vector<int>& cpus, TunSteering* out, std::string* err);
// Closes the program and unmaps the drain clock (after the workers have stopped).
void unload_tun_steering(TunSteering* s);

// Attaches `prog_fd` to the TUN of `tun_fd` (every queue of the device): false with *err.
bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err);

}  // namespace vxnet
