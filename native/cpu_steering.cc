#include "cpu_steering.h"

#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
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

// Flows idle this long may be placed again (on the CPU of their next packet): nothing of them can
// still be in flight through a worker, so moving them reorders nothing.
constexpr int32_t kIdleNs = 50 * 1000 * 1000;
constexpr uint32_t kFlows = 65536;  // LRU entries (one per flow key)

}  // namespace

int load_tun_cpu_steering(const std::vector<int>& cpus, std::string* err) {
  // The flow table: key = (saddr ^ daddr, proto ^ (sport ^ dport) << 8; ICMP: the echo identifier
  // for the ports), the same for both directions of a flow; value = {queue, pad, last packet's time in ns}.
  bpf_attr mattr{};
  mattr.map_type = BPF_MAP_TYPE_LRU_HASH;
  mattr.key_size = 8;
  mattr.value_size = 16;
  mattr.max_entries = kFlows;
  const int map = static_cast<int>(bpf(BPF_MAP_CREATE, &mattr));
  if (map < 0) {
    *err = std::string("bpf(BPF_MAP_CREATE) TUN flow table: ") + std::strerror(errno);
    return -1;
  }
  enum { kNoPorts, kPorts, kMiss, kPlace, kStore };
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
  // A known flow: its queue, unless it was idle long enough to be placed again.
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_7, BPF_REG_0, 0, 0);  // r7 = &value
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns);
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_7, 8, 0);   // r1 = last
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_7, BPF_REG_0, 8, 0);   // last = now
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_0, 0, 0);
  a.op(BPF_ALU64 | BPF_SUB | BPF_X, BPF_REG_2, BPF_REG_1, 0, 0);  // r2 = now - last (signed: another CPU may have written a later time)
  a.jump(BPF_JMP | BPF_JSGT | BPF_K, BPF_REG_2, kIdleNs, kPlace);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);    // its queue
  a.op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
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
  a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -20, 0);          //   pad
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
  ::close(map);  // the program holds the map
  return fd;
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
