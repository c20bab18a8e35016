#include "cpu_steering.h"

#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

namespace vxnet {

namespace {

long bpf(int cmd, bpf_attr* attr) { return syscall(SYS_bpf, cmd, attr, sizeof *attr); }

// A tiny assembler: instructions with forward jumps to named labels, fixed up at the end.
class Asm {
 public:
  void op(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
    bpf_insn i{};
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    prog_.push_back(i);
  }
  // A jump to `label` (bound later with bind()).
  void jump(uint8_t code, uint8_t dst, int32_t imm, int label) {
    fixups_.push_back({prog_.size(), label});
    op(code, dst, 0, 0, imm);
  }
  // A jump on comparing two registers (BPF_X).
  void jump_x(uint8_t code, uint8_t dst, uint8_t src, int label) {
    fixups_.push_back({prog_.size(), label});
    op(code, dst, src, 0, 0);
  }
  void bind(int label) {
    if (static_cast<size_t>(label) >= labels_.size()) labels_.resize(static_cast<size_t>(label) + 1, SIZE_MAX);
    labels_[static_cast<size_t>(label)] = prog_.size();
  }
  void load_map(uint8_t dst, int fd) {
    op(BPF_LD | BPF_DW | BPF_IMM, dst, BPF_PSEUDO_MAP_FD, 0, fd);
    op(0, 0, 0, 0, 0);
  }
  std::vector<bpf_insn>& finish() {
    for (const auto& f : fixups_) prog_[f.at].off = static_cast<int16_t>(labels_[static_cast<size_t>(f.label)] - f.at - 1);
    return prog_;
  }

 private:
  struct Fixup {
    size_t at;
    int label;
  };
  std::vector<bpf_insn> prog_;
  std::vector<Fixup> fixups_;
  std::vector<size_t> labels_;
};

// When a known flow may move to the CPU that sends its next packet (onto that CPU's queue), so that
// a request/response flow (ping, RPC) follows its sender when the scheduler moves it instead of
// waking a worker on the other CPU at every exchange (docs/datapath.md, "What the RTT floor is
// made of", measurement 6), while a bulk flow keeps its worker:
// - after a pause of kIdleNs, if the burst before the pause had at most kSmallBurst packets (a TSO
//   super-packet counts one) and its queue has been drained since its last packet (the drain
//   clock): nothing of it is left in the old worker. A bulk flow's pauses (its receiver falling
//   behind) follow long bursts, and datagrams it sent may still wait in the underlay's or the
//   receiver's queues, which no clock here sees: moving it then reordered TCP in the e2e test.
// - after kLongIdleNs, any flow: nothing of it is in flight any more.
constexpr int32_t kIdleNs = 5 * 1000 * 1000;
constexpr int32_t kLongIdleNs = 50 * 1000 * 1000;
constexpr int32_t kSmallBurst = 32;
constexpr uint32_t kFlows = 65536;  // LRU entries (one per flow key)

}  // namespace

bool load_tun_cpu_steering(const std::vector<int>& cpus, TunSteering* out, std::string* err) {
  // The flow table: key = (saddr ^ daddr, proto ^ (sport ^ dport) << 8; ICMP: the echo identifier
  // for the ports), the same for both directions of a flow; value = {queue, packets of its current
  // burst (counted up to kSmallBurst + 1), last packet's time in ns}.
  bpf_attr mattr{};
  mattr.map_type = BPF_MAP_TYPE_LRU_HASH;
  mattr.key_size = 8;
  mattr.value_size = 16;
  mattr.max_entries = kFlows;
  const int map = static_cast<int>(bpf(BPF_MAP_CREATE, &mattr));
  if (map < 0) {
    *err = std::string("bpf(BPF_MAP_CREATE) TUN flow table: ") + std::strerror(errno);
    return false;
  }
  // The drain clock: one u64 per queue, mapped into this process for the workers to write.
  bpf_attr dattr{};
  dattr.map_type = BPF_MAP_TYPE_ARRAY;
  dattr.key_size = 4;
  dattr.value_size = 8;
  dattr.max_entries = static_cast<uint32_t>(cpus.size());
  dattr.map_flags = BPF_F_MMAPABLE;
  const int dmap = static_cast<int>(bpf(BPF_MAP_CREATE, &dattr));
  if (dmap < 0) {
    *err = std::string("bpf(BPF_MAP_CREATE) TUN drain clock: ") + std::strerror(errno);
    ::close(map);
    return false;
  }
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t bytes = (cpus.size() * sizeof(uint64_t) + page - 1) / page * page;
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, dmap, 0);
  if (mem == MAP_FAILED) {
    *err = std::string("mmap TUN drain clock: ") + std::strerror(errno);
    ::close(map);
    ::close(dmap);
    return false;
  }
  enum { kNoPorts, kPorts, kMiss, kPlace, kStore, kKeep, kIdle };
  Asm a;
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0);  // r6 = skb (for the packet loads)
  // The packet loads end the program with 0 (queue 0) when the packet is shorter than they read.
  a.op(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 0);                     // r0 = version | IHL
  a.op(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_0, 0, 0, 0xf);
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 2);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_7, BPF_REG_0, 0, 0);  // r7 = IPv4 header length
  a.op(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 12);                    // saddr
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);
  a.op(BPF_LD | BPF_ABS | BPF_W, 0, 0, 0, 16);                    // daddr
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);  // r8 = saddr ^ daddr
  a.op(BPF_LD | BPF_ABS | BPF_B, 0, 0, 0, 9);                     // protocol
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);  // r9 = protocol
  a.op(BPF_LD | BPF_ABS | BPF_H, 0, 0, 0, 6);                     // flags | fragment offset
  a.jump(BPF_JMP | BPF_JSET | BPF_K, BPF_REG_0, 0x3fff, kNoPorts);  // a fragment: no ports to read
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_9, 6, kPorts);          // TCP
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_9, 17, kPorts);         // UDP
  a.jump(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_9, 1, kNoPorts);        // not ICMP
  // ICMP: the echo identifier stands in for the ports (an echo and its reply share it; for other
  // types these bytes are whatever the message carries there, as good a key as none).
  a.op(BPF_LD | BPF_IND | BPF_H, 0, BPF_REG_7, 0, 4);
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 8);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);
  a.jump(BPF_JMP | BPF_JA, 0, 0, kNoPorts);
  a.bind(kPorts);
  a.op(BPF_LD | BPF_IND | BPF_H, 0, BPF_REG_7, 0, 0);             // source port
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 8);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);
  a.op(BPF_LD | BPF_IND | BPF_H, 0, BPF_REG_7, 0, 2);             // destination port
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 8);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);
  a.bind(kNoPorts);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_8, -8, 0);  // key at fp-8
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_9, -4, 0);
  a.load_map(BPF_REG_1, map);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -8);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, kMiss);
  // A known flow: its queue, unless it pauses. After a pause of kIdleNs a flow whose last burst was
  // small (request/response) moves to this CPU once its queue has been drained since its last
  // packet; any flow moves after kLongIdleNs.
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_7, BPF_REG_0, 0, 0);  // r7 = &value
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);  // r8 = now
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_9, BPF_REG_7, 8, 0);   // r9 = last
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_7, BPF_REG_8, 8, 0);   // last = now
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_8, 0, 0);
  a.op(BPF_ALU64 | BPF_SUB | BPF_X, BPF_REG_2, BPF_REG_9, 0, 0);  // r2 = now - last (signed: another CPU may have written a later time)
  a.jump(BPF_JMP | BPF_JSGT | BPF_K, BPF_REG_2, kIdleNs, kIdle);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_7, 4, 0);    // in a burst: count it (up to one past small)
  a.jump(BPF_JMP | BPF_JGT | BPF_K, BPF_REG_1, kSmallBurst, kKeep);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 1);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_1, 4, 0);
  a.bind(kKeep);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);    // its queue
  a.op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  a.bind(kIdle);                                                  // after a pause
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_8, 0, 0);  // r0 = now
  a.jump(BPF_JMP | BPF_JSGT | BPF_K, BPF_REG_2, kLongIdleNs, kPlace);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_7, 4, 0);    // r1 = the burst before the pause
  a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_7, 0, 4, 1);             // this packet starts a new one
  a.jump(BPF_JMP | BPF_JGT | BPF_K, BPF_REG_1, kSmallBurst, kKeep);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -32, 0); // drain clock key at fp-32: its queue
  a.load_map(BPF_REG_1, dmap);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -32);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, kKeep);         // a queue beyond the clock: stays
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_0, 0, 0);   // r1 = drained
  a.jump_x(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_9, BPF_REG_1, kKeep);  // last >= drained: it may still be queued
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_8, 0, 0);  // r0 = now
  a.jump(BPF_JMP | BPF_JA, 0, 0, kPlace);
  a.bind(kMiss);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns);
  a.bind(kPlace);                                                 // r0 = now
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_smp_processor_id);
  // The queue of this CPU: i for cpus[i]; any other CPU its number (the TUN takes it modulo its queues).
  for (size_t i = 0; i < cpus.size(); ++i) {
    a.op(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 2, cpus[i]);
    a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, static_cast<int32_t>(i));
    a.jump(BPF_JMP | BPF_JA, 0, 0, kStore);
  }
  a.bind(kStore);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);  // r9 = queue
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -24, 0); // value at fp-24: queue
  a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -20, 1);          //   burst: this packet
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_8, -16, 0); //   last = now
  a.load_map(BPF_REG_1, map);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -8);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, -24);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, BPF_ANY);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_update_elem);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_9, 0, 0);
  a.op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  std::vector<bpf_insn>& prog = a.finish();

  static const char license[] = "GPL";
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
  attr.insn_cnt = static_cast<uint32_t>(prog.size());
  attr.insns = reinterpret_cast<uint64_t>(prog.data());
  attr.license = reinterpret_cast<uint64_t>(license);
  int fd = static_cast<int>(bpf(BPF_PROG_LOAD, &attr));
  if (fd < 0) {
    *err = std::string("bpf(BPF_PROG_LOAD) TUN steering: ") + std::strerror(errno);
    // Once more with the verifier's log, whose last line says why.
    std::vector<char> log(1 << 16, 0);
    attr.log_buf = reinterpret_cast<uint64_t>(log.data());
    attr.log_size = static_cast<uint32_t>(log.size());
    attr.log_level = 1;
    const int again = static_cast<int>(bpf(BPF_PROG_LOAD, &attr));
    if (again >= 0) {
      fd = again;  // refused, then taken: keep it
      err->clear();
    } else {
      std::string v(log.data());
      while (!v.empty() && v.back() == '\n') v.pop_back();
      const size_t nl = v.rfind('\n');
      if (!v.empty()) *err += " (" + (nl == std::string::npos ? v : v.substr(nl + 1)) + ")";
    }
  }
  ::close(map);  // the program holds its maps, the mapping the drain clock
  ::close(dmap);
  if (fd < 0) {
    ::munmap(mem, bytes);
    return false;
  }
  out->prog_fd = fd;
  out->drained = static_cast<uint64_t*>(mem);
  out->mapped = bytes;
  return true;
}

void unload_tun_steering(TunSteering* s) {
  if (s->prog_fd >= 0) ::close(s->prog_fd);
  if (s->drained) ::munmap(s->drained, s->mapped);
  *s = TunSteering();
}

bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err) {
  int fd = prog_fd;
  if (::ioctl(tun_fd, TUNSETSTEERINGEBPF, &fd) < 0) {
    *err = std::string("TUNSETSTEERINGEBPF: ") + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace vxnet
