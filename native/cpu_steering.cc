#include "cpu_steering.h"

#include <linux/bpf.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
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
  // A label of its own (for code emitted in loops).
  int fresh() { return next_label_++; }
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
  int next_label_ = 1000;  // above every fixed label (the enums below)
};

// The flow decision's constants (cpu_steering.h):
// - kIdleNs: a pause that ends a burst. After one that followed at most kSmallBurst packets
//   (request/response traffic), a flow may follow its sender to another CPU (docs/datapath.md,
//   "What the RTT floor is made of", measurement 6), once its lane has been drained since its last
//   packet. A bulk flow's pauses (its receiver falling behind) follow long bursts, and datagrams it
//   sent may still wait in the underlay's or the receiver's queues, which no clock here sees:
//   moving it then reordered TCP in the e2e test.
// - kLongIdleNs: after this, any flow may move: nothing of it is in flight any more.
// - kSmallBurst: a burst longer than this makes a flow bulk.
constexpr int32_t kIdleNs = 5 * 1000 * 1000;
constexpr int32_t kLongIdleNs = 50 * 1000 * 1000;
constexpr int32_t kSmallBurst = 32;
constexpr uint32_t kFlows = 65536;  // LRU entries (one per flow key)
// The receiving program's load of a bulk lane: the bytes its datagrams carried in the current and
// the previous epoch of kEpochNs. A flow turning bulk takes the bulk lane of the CPU it arrives on
// unless another worker's carries kMargin fewer bytes per epoch (then the least loaded one's); the
// chosen lane is charged kFlowCharge at once, so flows turning bulk together (one sender's
// parallel streams) spread before their bytes show.
constexpr int32_t kEpochNs = 10 * 1000 * 1000;
constexpr int32_t kMargin = 1536 * 1024;  // 1.2 Gbit/s
constexpr int32_t kFlowCharge = 2048 * 1024;

// Stack slots of the programs (offsets from r10).
constexpr int16_t kKeySlot = -8;     // the flow key: u32 addresses, u32 protocol and ports
constexpr int16_t kValueSlot = -24;  // a new flow table value: u32 lane, u32 burst, u64 last
constexpr int16_t kLaneSlot = -32;   // a u32 lane, the key of the drain clock and of the socket array
constexpr int16_t kHdrSlot = -64;    // the reuseport program's copy of the inner IPv4 header (20 bytes)
constexpr int16_t kPortsSlot = -72;  // ... and of the 4 bytes after it
constexpr int16_t kCurSlot = -80;       // the balancing: the receiving CPU's worker (u64)
constexpr int16_t kCurLoadSlot = -88;   // ... its bulk lane's load
constexpr int16_t kBestSlot = -96;      // ... the least loaded worker so far
constexpr int16_t kBestLoadSlot = -104; // ... and its load

// Labels of the flow decision (the front ends use labels from kFrontLabels on).
enum { kMiss, kPlace, kStore, kKeep, kIdle, kBulk, kDone, kFrontLabels };

// Where a flow goes when it turns bulk:
// - kSameWorker (the TUN's program): the bulk lane of its light lane's worker. A move to another
//   CPU's lane could reorder the flow: what the old lane sent may still wait in that CPU's queues
//   below the socket (a veth's backlog, a NIC queue), which no drain clock sees (docs/datapath.md,
//   "One sender's streams").
// - kLeastLoaded (the receiving sockets' program): the bulk lane of the least loaded worker,
//   preferring the receiving CPU's. Safe: datagrams are steered as they arrive, and the old socket
//   has been drained past the flow's last one. It spreads one sender's parallel streams, which the
//   sending host's CPU-local steering keeps on one worker, over the receiving host's CPUs.
enum class BulkTarget { kSameWorker, kLeastLoaded };

// The maps behind a program: the flow table and the drain clock, mapped into this process, and
// (kLeastLoaded) the bulk lanes' loads.
struct Maps {
  int flows = -1, clock = -1, load = -1;
  void* mem = nullptr;
  size_t bytes = 0;
};

// A BPF map, or -1 with *err naming `what`.
int create_map(bpf_map_type type, uint32_t key_size, uint32_t value_size, uint32_t entries, uint32_t flags, const char* what,
               std::string* err) {
  bpf_attr attr{};
  attr.map_type = type;
  attr.key_size = key_size;
  attr.value_size = value_size;
  attr.max_entries = entries;
  attr.map_flags = flags;
  const int fd = static_cast<int>(bpf(BPF_MAP_CREATE, &attr));
  if (fd < 0) *err = std::string("bpf(BPF_MAP_CREATE) ") + what + ": " + std::strerror(errno);
  return fd;
}

// `target`: kLeastLoaded also makes the bulk lanes' loads.
bool make_maps(size_t lanes, BulkTarget target, Maps* m, std::string* err) {
  // The flow table: key = (saddr ^ daddr, proto ^ (sport ^ dport) << 8; ICMP: the echo identifier
  // for the ports), the same for both directions of a flow; value = {lane, packets of its current
  // burst (counted up to kSmallBurst + 1), last packet's time in ns}.
  m->flows = create_map(BPF_MAP_TYPE_LRU_HASH, 8, 16, kFlows, 0, "flow table", err);
  if (m->flows < 0) return false;
  // The drain clock: one u64 per lane, mapped into this process for the workers to write.
  m->clock = create_map(BPF_MAP_TYPE_ARRAY, 4, 8, static_cast<uint32_t>(lanes), BPF_F_MMAPABLE, "drain clock", err);
  if (m->clock < 0) {
    ::close(m->flows);
    return false;
  }
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  m->bytes = (lanes * sizeof(uint64_t) + page - 1) / page * page;
  m->mem = ::mmap(nullptr, m->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, m->clock, 0);
  if (m->mem == MAP_FAILED) {
    *err = std::string("mmap drain clock: ") + std::strerror(errno);
    ::close(m->flows);
    ::close(m->clock);
    return false;
  }
  if (target == BulkTarget::kLeastLoaded) {
    // The bulk lanes' loads, one {epoch start, bytes this epoch, bytes the epoch before} per worker.
    m->load = create_map(BPF_MAP_TYPE_ARRAY, 4, 24, static_cast<uint32_t>(lanes / 2), 0, "bulk lane loads", err);
    if (m->load < 0) {
      ::munmap(m->mem, m->bytes);
      ::close(m->flows);
      ::close(m->clock);
      return false;
    }
  }
  return true;
}

// r0 = the index among the workers of the CPU number in r0 (i for cpus[i]; any other CPU's number
// modulo n), then on at `done`.
void cpu_to_worker(Asm& a, const std::vector<int>& cpus, int done) {
  for (size_t i = 0; i < cpus.size(); ++i) {
    a.op(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, 2, cpus[i]);
    a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, static_cast<int32_t>(i));
    a.jump(BPF_JMP | BPF_JA, 0, 0, done);
  }
  a.op(BPF_ALU64 | BPF_MOD | BPF_K, BPF_REG_0, 0, 0, static_cast<int32_t>(cpus.size()));
  a.bind(done);
}

// A bulk lane's load entry at r0 (u64 epoch start, bytes this epoch, bytes the epoch before), the
// time in r8: starts a new epoch once the current one is over. Uses r2, r3.
void roll_epoch(Asm& a) {
  const int done = a.fresh(), keep = a.fresh();
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_8, 0, 0);
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_0, 0, 0);
  a.op(BPF_ALU64 | BPF_SUB | BPF_X, BPF_REG_2, BPF_REG_3, 0, 0);   // r2 = age of the epoch
  a.jump(BPF_JMP | BPF_JSLT | BPF_K, BPF_REG_2, kEpochNs, done);
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_0, 8, 0);    // it becomes the previous one,
  a.jump(BPF_JMP | BPF_JSLT | BPF_K, BPF_REG_2, 2 * kEpochNs, keep);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_3, 0, 0, 0);           // unless another has passed since
  a.bind(keep);
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_3, 16, 0);
  a.op(BPF_ST | BPF_MEM | BPF_DW, BPF_REG_0, 0, 8, 0);
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_8, 0, 0);
  a.bind(done);
}

// r0 = the load map's entry of the worker whose u32 index is at kLaneSlot, or on at `none`.
void load_entry(Asm& a, const Maps& m, int none) {
  a.load_map(BPF_REG_1, m.load);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, kLaneSlot);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, none);
}

// r0 = the worker whose bulk lane a flow turning bulk now takes (BulkTarget::kLeastLoaded), its
// lane charged kFlowCharge. The time in r8; uses r1-r5, r9 and the balancing's stack slots.
void least_loaded_worker(Asm& a, const Maps& m, const std::vector<int>& cpus) {
  const int32_t n = static_cast<int32_t>(cpus.size());
  const int cur = a.fresh(), chosen = a.fresh(), charged = a.fresh();
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_smp_processor_id);
  cpu_to_worker(a, cpus, cur);
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_0, kCurSlot, 0);
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_0, kBestSlot, 0);
  a.op(BPF_ST | BPF_MEM | BPF_DW, BPF_REG_10, 0, kCurLoadSlot, 0);
  a.op(BPF_ST | BPF_MEM | BPF_DW, BPF_REG_10, 0, kBestLoadSlot, -1);   // UINT64_MAX
  for (int32_t w = 0; w < n; ++w) {
    // r1 = worker w's load: the larger of this epoch's and the previous one's bytes while this
    // epoch runs, this epoch's for one more epoch after, then none.
    const int next = a.fresh(), have = a.fresh(), not_cur = a.fresh();
    a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, kLaneSlot, w);
    load_entry(a, m, next);
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_8, 0, 0);
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_0, 0, 0);
    a.op(BPF_ALU64 | BPF_SUB | BPF_X, BPF_REG_2, BPF_REG_3, 0, 0);   // r2 = age of its epoch
    a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 0);
    a.jump(BPF_JMP | BPF_JSGE | BPF_K, BPF_REG_2, 2 * kEpochNs, have);
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_0, 8, 0);
    a.jump(BPF_JMP | BPF_JSGE | BPF_K, BPF_REG_2, kEpochNs, have);
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_0, 16, 0);
    a.jump_x(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_1, BPF_REG_3, have);
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_3, 0, 0);
    a.bind(have);
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_10, kCurSlot, 0);
    a.jump(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_3, w, not_cur);
    a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, kCurLoadSlot, 0);
    a.bind(not_cur);
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_3, BPF_REG_10, kBestLoadSlot, 0);
    a.jump_x(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_1, BPF_REG_3, next);
    a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_1, kBestLoadSlot, 0);
    a.op(BPF_ST | BPF_MEM | BPF_DW, BPF_REG_10, 0, kBestSlot, w);
    a.bind(next);
  }
  // The receiving CPU's worker unless the least loaded one carries kMargin less.
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_10, kCurSlot, 0);
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_10, kCurLoadSlot, 0);
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_2, BPF_REG_10, kBestLoadSlot, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, kMargin);
  a.jump_x(BPF_JMP | BPF_JLE | BPF_X, BPF_REG_1, BPF_REG_2, chosen);  // (a wrapped sum: no lane had an entry)
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_10, kBestSlot, 0);
  a.bind(chosen);
  // Charge the chosen lane for the flow now, so the next flow turning bulk sees it.
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);  // r9 = the chosen worker
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, kLaneSlot, 0);
  load_entry(a, m, charged);
  roll_epoch(a);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, kFlowCharge);
  a.op(BPF_STX | BPF_ATOMIC | BPF_DW, BPF_REG_0, BPF_REG_1, 8, BPF_ADD);
  a.bind(charged);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_9, 0, 0);
}

// The accounting of BulkTarget::kLeastLoaded (the receiving program): the datagram (sk_reuseport_md
// in r6) adds its length to its bulk lane's load; r0 = its lane on entry and on exit, the time in
// r8. Uses r1-r5, r7, r9.
void charge_bulk_lane(Asm& a, const Maps& m, int32_t n) {
  const int done = a.fresh();
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);   // r9 = lane
  a.jump(BPF_JMP | BPF_JLT | BPF_K, BPF_REG_0, n, done);           // a light lane: not counted
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_6, static_cast<int16_t>(offsetof(sk_reuseport_md, len)), 0);
  a.op(BPF_ALU64 | BPF_SUB | BPF_K, BPF_REG_0, 0, 0, n);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, kLaneSlot, 0);
  load_entry(a, m, done);
  roll_epoch(a);
  a.op(BPF_STX | BPF_ATOMIC | BPF_DW, BPF_REG_0, BPF_REG_7, 8, BPF_ADD);
  a.bind(done);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_9, 0, 0);
}

// The flow decision (cpu_steering.h). On entry r8 and r9 hold the flow key's two words (addresses;
// protocol and ports); it ends at kDone with r0 = the flow's lane and r8 = the time. Uses r7-r9;
// r6 is left alone. Lanes 0..n-1 are the workers' light lanes, n..2n-1 their bulk lanes.
void flow_choice(Asm& a, const Maps& m, const std::vector<int>& cpus, BulkTarget target) {
  const int32_t n = static_cast<int32_t>(cpus.size());
  // Jumps to `keep` unless the drain clock of lane r0 passed the flow's previous packet (r9).
  auto unless_drained = [&](int keep) {
    a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, kLaneSlot, 0);
    a.load_map(BPF_REG_1, m.clock);
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
    a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, kLaneSlot);
    a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
    a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, keep);           // a lane beyond the clock: stays
    a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_1, BPF_REG_0, 0, 0);     // r1 = drained
    a.jump_x(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_9, BPF_REG_1, keep);  // last >= drained: it may still be queued
  };
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_8, kKeySlot, 0);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_9, kKeySlot + 4, 0);
  a.load_map(BPF_REG_1, m.flows);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, kKeySlot);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem);
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, kMiss);
  // A known flow: its lane, unless its burst grows past small (to bulk) or it pauses (kIdle).
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_7, BPF_REG_0, 0, 0);  // r7 = &value
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);  // r8 = now
  a.op(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_9, BPF_REG_7, 8, 0);   // r9 = last
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_7, BPF_REG_8, 8, 0);   // last = now
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_8, 0, 0);
  a.op(BPF_ALU64 | BPF_SUB | BPF_X, BPF_REG_2, BPF_REG_9, 0, 0);  // r2 = now - last (signed: another CPU may have written a later time)
  a.jump(BPF_JMP | BPF_JSGT | BPF_K, BPF_REG_2, kIdleNs, kIdle);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_7, 4, 0);    // in a burst: count it (up to one past small)
  a.jump(BPF_JMP | BPF_JGT | BPF_K, BPF_REG_1, kSmallBurst, kBulk);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_1, 0, 0, 1);
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_1, 4, 0);
  a.jump(BPF_JMP | BPF_JLE | BPF_K, BPF_REG_1, kSmallBurst, kKeep);
  a.bind(kBulk);                                                  // a bulk burst: on a light lane, move
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);    // r0 = its lane
  a.jump(BPF_JMP | BPF_JGE | BPF_K, BPF_REG_0, n, kKeep);         // already bulk (or beyond the lanes)
  unless_drained(kKeep);
  if (target == BulkTarget::kSameWorker) {
    a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);  // its light lane's worker
  } else {
    least_loaded_worker(a, m, cpus);
  }
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_0, 0, 0, n);          // r0 = that worker's bulk lane
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_0, 0, 0);
  a.jump(BPF_JMP | BPF_JA, 0, 0, kDone);
  a.bind(kKeep);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);    // its lane
  a.jump(BPF_JMP | BPF_JA, 0, 0, kDone);
  a.bind(kIdle);                                                  // after a pause
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_8, 0, 0);  // r0 = now
  a.jump(BPF_JMP | BPF_JSGT | BPF_K, BPF_REG_2, kLongIdleNs, kPlace);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_7, 4, 0);    // r1 = the burst before the pause
  a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_7, 0, 4, 1);             // this packet starts a new one
  a.jump(BPF_JMP | BPF_JGT | BPF_K, BPF_REG_1, kSmallBurst, kKeep);
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_7, 0, 0);
  a.jump(BPF_JMP | BPF_JGE | BPF_K, BPF_REG_0, n, kKeep);         // bulk stays bulk until a long pause
  unless_drained(kKeep);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_8, 0, 0);  // r0 = now
  a.jump(BPF_JMP | BPF_JA, 0, 0, kPlace);
  a.bind(kMiss);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_ktime_get_ns);
  a.bind(kPlace);                                                 // r0 = now
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_smp_processor_id);
  cpu_to_worker(a, cpus, kStore);  // the light lane of this CPU
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);  // r9 = lane
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, kValueSlot, 0);      // value: lane
  a.op(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, kValueSlot + 4, 1);          //   burst: this packet
  a.op(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_8, kValueSlot + 8, 0); //   last = now
  a.load_map(BPF_REG_1, m.flows);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, kKeySlot);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, kValueSlot);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, BPF_ANY);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_update_elem);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_0, BPF_REG_9, 0, 0);
  a.bind(kDone);
}

// Loads `prog` (of `type`, for `attach`), closes the maps (the program holds them) and, on success,
// hands the program and the drain clock to *out.
bool load(const char* what, bpf_prog_type type, bpf_attach_type attach, std::vector<bpf_insn>& prog, Maps& m,
          size_t lanes, Steering* out, std::string* err) {
  static const char license[] = "GPL";
  bpf_attr attr{};
  attr.prog_type = type;
  attr.expected_attach_type = attach;
  attr.insn_cnt = static_cast<uint32_t>(prog.size());
  attr.insns = reinterpret_cast<uint64_t>(prog.data());
  attr.license = reinterpret_cast<uint64_t>(license);
  int fd = static_cast<int>(bpf(BPF_PROG_LOAD, &attr));
  if (fd < 0) {
    *err = std::string("bpf(BPF_PROG_LOAD) ") + what + ": " + std::strerror(errno);
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
  ::close(m.flows);  // the program holds its maps, the mapping the drain clock
  ::close(m.clock);
  if (m.load >= 0) ::close(m.load);
  if (fd < 0) {
    ::munmap(m.mem, m.bytes);
    return false;
  }
  out->prog_fd = fd;
  out->drained = static_cast<uint64_t*>(m.mem);
  out->lanes = lanes;
  out->mapped = m.bytes;
  return true;
}

}  // namespace

bool load_tun_steering(const std::vector<int>& cpus, Steering* out, std::string* err) {
  const size_t lanes = 2 * cpus.size();
  Maps m;
  if (!make_maps(lanes, BulkTarget::kSameWorker, &m, err)) return false;
  enum { kNoPorts = kFrontLabels, kPorts };
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
  flow_choice(a, m, cpus, BulkTarget::kSameWorker);
  a.op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);                           // the queue: the flow's lane
  return load("TUN steering", BPF_PROG_TYPE_SOCKET_FILTER, static_cast<bpf_attach_type>(0), a.finish(), m, lanes,
              out, err);
}

bool attach_tun_steering(int tun_fd, int prog_fd, std::string* err) {
  int fd = prog_fd;
  if (::ioctl(tun_fd, TUNSETSTEERINGEBPF, &fd) < 0) {
    *err = std::string("TUNSETSTEERINGEBPF: ") + std::strerror(errno);
    return false;
  }
  return true;
}

bool load_rx_steering(const std::vector<int>& cpus, const std::vector<int>& socks, size_t inner_offset, Steering* out,
                      std::string* err) {
  const size_t lanes = 2 * cpus.size();  // a light and a bulk socket per worker
  if (socks.size() != lanes || socks.empty()) {
    *err = "receive steering needs " + std::to_string(lanes) + " sockets (a light and a bulk one per worker), got " + std::to_string(socks.size());
    return false;
  }
  // The sockets, by lane.
  const int smap = create_map(BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, static_cast<uint32_t>(lanes), 0, "reuseport socket array", err);
  if (smap < 0) return false;
  for (uint32_t i = 0; i < lanes; ++i) {
    const uint64_t fd = static_cast<uint64_t>(socks[i]);
    bpf_attr u{};
    u.map_fd = static_cast<uint32_t>(smap);
    u.key = reinterpret_cast<uint64_t>(&i);
    u.value = reinterpret_cast<uint64_t>(&fd);
    u.flags = BPF_ANY;
    if (bpf(BPF_MAP_UPDATE_ELEM, &u) < 0) {
      *err = std::string("reuseport socket array, socket ") + std::to_string(i) + ": " + std::strerror(errno);
      ::close(smap);
      return false;
    }
  }
  Maps m;
  if (!make_maps(lanes, BulkTarget::kLeastLoaded, &m, err)) {
    ::close(smap);
    return false;
  }
  const int32_t ip = static_cast<int32_t>(8 + inner_offset);  // the inner IPv4 header, from the UDP header
  enum { kNoPorts = kFrontLabels, kPorts, kHash };
  Asm a;
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0);  // r6 = ctx (sk_reuseport_md)
  // Copies of the inner IPv4 header and of what follows it; a datagram too short for them is left
  // to the kernel's hash (the worker drops it).
  auto load_bytes = [&](int32_t off, uint8_t off_reg, int16_t slot, int32_t len) {
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0);
    if (off_reg) {
      a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, off_reg, 0, 0);
      a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, off);
    } else {
      a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, off);
    }
    a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
    a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, slot);
    a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, len);
    a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_skb_load_bytes);
    a.jump(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_0, 0, kHash);
  };
  load_bytes(ip, 0, kHdrSlot, 20);
  a.op(BPF_LDX | BPF_MEM | BPF_B, BPF_REG_7, BPF_REG_10, kHdrSlot, 0);  // version | IHL
  a.op(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_7, 0, 0, 0xf);
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_7, 0, 0, 2);          // r7 = IPv4 header length
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_8, BPF_REG_10, kHdrSlot + 12, 0);  // saddr
  a.op(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_10, kHdrSlot + 16, 0);  // daddr
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_8, BPF_REG_0, 0, 0);  // r8 = saddr ^ daddr
  a.op(BPF_LDX | BPF_MEM | BPF_B, BPF_REG_9, BPF_REG_10, kHdrSlot + 9, 0);   // r9 = protocol
  // Flags and fragment offset as stored (network order): the offset and MF are 0x3fff in network
  // order, 0xff3f as loaded on a little-endian machine.
  a.op(BPF_LDX | BPF_MEM | BPF_H, BPF_REG_0, BPF_REG_10, kHdrSlot + 6, 0);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_0, 0, 0);
  a.op(BPF_ALU64 | BPF_AND | BPF_K, BPF_REG_1, 0, 0, __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ ? 0xff3f : 0x3fff);
  a.jump(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_1, 0, kNoPorts);     // a fragment: no ports to read
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_9, 6, kPorts);          // TCP
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_9, 17, kPorts);         // UDP
  a.jump(BPF_JMP | BPF_JNE | BPF_K, BPF_REG_9, 1, kNoPorts);        // not ICMP
  // ICMP: the echo identifier stands in for the ports, as in the TUN's program.
  load_bytes(ip + 4, BPF_REG_7, kPortsSlot, 2);
  a.op(BPF_LDX | BPF_MEM | BPF_H, BPF_REG_0, BPF_REG_10, kPortsSlot, 0);
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 8);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);
  a.jump(BPF_JMP | BPF_JA, 0, 0, kNoPorts);
  a.bind(kPorts);
  load_bytes(ip, BPF_REG_7, kPortsSlot, 4);
  a.op(BPF_LDX | BPF_MEM | BPF_H, BPF_REG_0, BPF_REG_10, kPortsSlot, 0);
  a.op(BPF_LDX | BPF_MEM | BPF_H, BPF_REG_1, BPF_REG_10, kPortsSlot + 2, 0);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_0, BPF_REG_1, 0, 0);
  a.op(BPF_ALU64 | BPF_LSH | BPF_K, BPF_REG_0, 0, 0, 8);
  a.op(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_9, BPF_REG_0, 0, 0);
  a.bind(kNoPorts);
  flow_choice(a, m, cpus, BulkTarget::kLeastLoaded);
  charge_bulk_lane(a, m, static_cast<int32_t>(cpus.size()));
  // The flow's lane is the socket.
  a.op(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, kLaneSlot, 0);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0);
  a.load_map(BPF_REG_2, smap);
  a.op(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0);
  a.op(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, kLaneSlot);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, 0);
  a.op(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_select_reuseport);  // failing, the kernel's hash picks
  a.bind(kHash);
  a.op(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, SK_PASS);
  a.op(BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
  const bool ok = load("receive steering", BPF_PROG_TYPE_SK_REUSEPORT, BPF_SK_REUSEPORT_SELECT, a.finish(), m, lanes,
                       out, err);
  ::close(smap);
  if (!ok) return false;
  if (::setsockopt(socks[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &out->prog_fd, sizeof out->prog_fd) < 0) {
    *err = std::string("SO_ATTACH_REUSEPORT_EBPF: ") + std::strerror(errno);
    unload_steering(out);
    return false;
  }
  return true;
}

void unload_steering(Steering* s) {
  if (s->prog_fd >= 0) ::close(s->prog_fd);
  if (s->drained) ::munmap(s->drained, s->mapped);
  *s = Steering();
}

}  // namespace vxnet
