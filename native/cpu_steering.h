// CPU-local steering with light and bulk lanes (DatapathOptions::cpu_local): the eBPF programs that
// keep a flow on the CPU it arrived on, and keep request/response traffic out of the queues that
// bulk transfers fill.
//
// Each worker q (pinned to cpus[q]) owns two lanes, n = cpus.size(): the light lane (TUN queue q,
// receiving socket q of the reuseport group) and the bulk lane (TUN queue n + q, socket n + q),
// each with its own thread. The TUN's steering program picks the queue of a packet from the stack,
// the reuseport program of the receiving sockets the socket of a datagram. Both keep a flow table
// (an LRU hash keyed by the flow, the same for both directions) and decide alike (flow_choice in
// cpu_steering.cc):
// - a new flow goes to the light lane of the CPU it was sent from or received on;
// - a flow whose burst (packets less than 5 ms apart; a TSO super-packet or a GSO message counts
//   one) passes 32 packets moves to a bulk lane, once the light lane has been drained since the
//   flow's previous packet (the drain clock below): nothing of it is left behind there, so the move
//   does not reorder it. The TUN's program takes the bulk lane of the flow's worker; the receiving
//   sockets' program the least loaded worker's, preferring the receiving CPU's (BulkTarget in
//   cpu_steering.cc: it counts its bulk lanes' bytes), so one sender's parallel streams, which the
//   sending host keeps on one worker, spread over the receiving host's CPUs;
// - after a pause of 5 ms that followed a small burst, a light flow moves to the light lane of the
//   current CPU, again once its lane has been drained since its last packet; after 50 ms, any flow.
// The reuseport program sees a GSO message (or a GRO train) once, by its first datagram: the
// senders put one inner flow's datagrams in a message (UdpSendBatch::can_append), or the rest of
// the message would follow the first flow's lane and overtake its own flow (docs/datapath.md,
// "Under bulk load", step 4).
// The light lane's thread asks for a short scheduler slice and preempts the bulk lane's when a
// packet wakes it, so a ping waits neither in a FIFO queue a bulk transfer keeps full (the TUN
// queue at the sender, the socket at the receiver) nor for a busy thread (docs/datapath.md,
// "Under bulk load").
// With the workers pinned one per CPU, a round trip whose ends run on one CPU wakes no thread on
// another CPU: no inter-processor interrupt, no idle CPU to bring back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vxnet {

// A loaded steering program and the drain clock it reads.
struct Steering {
  int prog_fd = -1;  // holds its maps
  // drained[lane] (CLOCK_MONOTONIC ns), written by the lane's worker, read by the program: all the
  // lane's packets queued before that time have been read and handled. Shared memory with a BPF
  // array (BPF_F_MMAPABLE); 0 until the worker first drains the lane.
  uint64_t* drained = nullptr;
  size_t lanes = 0;   // entries at `drained`: 2 * cpus
  size_t mapped = 0;  // bytes mapped at `drained`
};

// Loads the TUN's program (an eBPF socket filter for TUNSETSTEERINGEBPF, the result a queue index:
// the TUN must have 2 * cpus.size() queues). A packet too short for its IPv4 header goes to queue 0.
// False with *err.
bool load_tun_steering(const std::vector<int>& cpus, Steering* out, std::string* err);
// Attaches `prog_fd` to the TUN of `tun_fd` (every queue of the device): false with *err.
bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err);

// Loads the receiving sockets' program (SK_REUSEPORT) over `socks` (2 * cpus.size() sockets of one
// reuseport group, in lane order: worker q's light socket at q, its bulk socket at n + q) and
// attaches it to the group. The inner IPv4 header starts `inner_offset` bytes after the UDP header (0 for flannel's udp, 8 + 14 for VXLAN); a datagram too
// short for it is left to the kernel's hash. False with *err.
bool load_rx_steering(const std::vector<int>& cpus, const std::vector<int>& socks, size_t inner_offset, Steering* out,
                      std::string* err);

// Closes the program and unmaps the drain clock (after the workers have stopped).
void unload_steering(Steering* s);

}  // namespace vxnet
