// pktgen: a batched UDP packet generator for the benchmarks (not part of the datapath).
//
//   pktgen --dst 10.244.2.2 [--dst-count N --dst-stride S] | --dst-file FILE  [--port 9] [--payload 18]
//          [--threads 2] [--seconds 5] [--batch 64] [--src-port 40000] [--pps N [--paced-batch 16]]
//   --gso N: every message carries N datagrams (UDP_SEGMENT), as QUIC senders do
//   pktgen --sink PORT      (bind UDP PORT, read nothing, until SIGTERM: see sink())
//
// Each thread owns one UDP socket and sends `batch` datagrams per sendmmsg() call as fast as the
// kernel takes them, until --seconds elapse or SIGINT/SIGTERM arrives.
//
// --pps N offers N packets/s in total instead (N / threads per thread): each thread sends batches of
// at most --paced-batch datagrams (fewer at low rates, so a batch spans at most about 1 ms) on an
// absolute schedule (batch k leaves at t0 + k·batch/rate, computed with clock_gettime), sleeping
// with clock_nanosleep(TIMER_ABSTIME) until each deadline. No burst is larger than one batch: a
// thread that is late (woken late, preempted) catches up at most at twice its rate (batches at
// least half an interval apart), and one that falls more than max(2 intervals, 1 ms) behind drops
// the missed slots and restarts its schedule from now, so the achieved rate can be below the
// requested one on a busy machine; both are reported. With --dst-count N the
// destinations are dst, dst+S, dst+2S, ... (N of them, host order), visited in a fixed shuffled
// order so consecutive packets hit different route entries. --dst-file reads one IPv4 address per
// line instead (also shuffled). The default payload of 18 bytes makes
// a 64-byte Ethernet frame (14 + 20 IPv4 + 8 UDP + 18 + 4 FCS). On exit it prints one JSON line:
//   {"sent":…,"errors":…,"seconds":…,"threads":…,"destinations":…,"payload":…,
//    "requestedPps":N or 0 (unpaced),"offeredPps":sent/seconds,"batch":…,"resets":…}
// where `resets` counts the times a paced thread fell behind and restarted its schedule.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <vector>

namespace {

struct Options {
  uint32_t dst = 0;          // host order
  uint32_t dst_count = 1;
  uint32_t dst_stride = 1;
  uint16_t port = 9;
  uint32_t payload = 18;
  uint32_t threads = 2;
  double seconds = 5;
  uint32_t batch = 64;
  uint16_t src_port = 40000;
  uint32_t gso = 1;  // datagrams per message (UDP_SEGMENT when > 1)
  double pps = 0;            // total offered rate; 0 = as fast as possible
  uint32_t paced_batch = 16; // largest burst in paced mode
  std::vector<uint32_t> dst_list;  // host order, from --dst-file
};

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

[[noreturn]] void usage(const char* why) {
  fprintf(stderr, "pktgen: %s\nusage: pktgen --dst IP [--dst-count N] [--dst-stride S] | --dst-file F  [--port P] [--payload B] "
                  "[--threads T] [--seconds S] [--batch B] [--src-port P] [--pps N [--paced-batch B]] [--gso N]\n", why);
  exit(2);
}

uint64_t parse_uint(const char* s, uint64_t max, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = strtoull(s, &end, 10);
  if (errno || !end || *end || v > max) {
    fprintf(stderr, "pktgen: %s: bad value %s\n", what, s);
    exit(2);
  }
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  bool have_dst = false;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (i + 1 >= argc) usage("missing value");
    const char* v = argv[++i];
    if (!strcmp(a, "--dst")) {
      in_addr addr;
      if (inet_pton(AF_INET, v, &addr) != 1) usage("--dst: not an IPv4 address");
      o.dst = ntohl(addr.s_addr);
      have_dst = true;
    } else if (!strcmp(a, "--dst-file")) {
      FILE* f = fopen(v, "r");
      if (!f) usage("--dst-file: cannot open");
      char line[64];
      while (fgets(line, sizeof line, f)) {
        line[strcspn(line, " \t\r\n")] = 0;
        if (!line[0]) continue;
        in_addr addr;
        if (inet_pton(AF_INET, line, &addr) != 1) usage("--dst-file: a line is not an IPv4 address");
        o.dst_list.push_back(ntohl(addr.s_addr));
      }
      fclose(f);
      if (o.dst_list.empty()) usage("--dst-file: no addresses");
      have_dst = true;
    } else if (!strcmp(a, "--dst-count")) {
      o.dst_count = static_cast<uint32_t>(parse_uint(v, 1u << 20, a));
    } else if (!strcmp(a, "--dst-stride")) {
      o.dst_stride = static_cast<uint32_t>(parse_uint(v, 1u << 24, a));
    } else if (!strcmp(a, "--port")) {
      o.port = static_cast<uint16_t>(parse_uint(v, 65535, a));
    } else if (!strcmp(a, "--payload")) {
      o.payload = static_cast<uint32_t>(parse_uint(v, 65507, a));
    } else if (!strcmp(a, "--threads")) {
      o.threads = static_cast<uint32_t>(parse_uint(v, 64, a));
    } else if (!strcmp(a, "--seconds")) {
      o.seconds = atof(v);
    } else if (!strcmp(a, "--batch")) {
      o.batch = static_cast<uint32_t>(parse_uint(v, 1024, a));
    } else if (!strcmp(a, "--pps")) {
      char* end = nullptr;
      o.pps = strtod(v, &end);
      if (!end || *end || !(o.pps >= 0) || o.pps > 1e9) usage("--pps: must be a rate in packets/s (0 = unpaced)");
    } else if (!strcmp(a, "--paced-batch")) {
      o.paced_batch = static_cast<uint32_t>(parse_uint(v, 1024, a));
    } else if (!strcmp(a, "--gso")) {
      o.gso = static_cast<uint32_t>(parse_uint(v, 64, "--gso"));
    } else if (!strcmp(a, "--src-port")) {
      o.src_port = static_cast<uint16_t>(parse_uint(v, 65535, a));
    } else {
      usage("unknown option");
    }
  }
  if (!have_dst) usage("--dst or --dst-file is required");
  if (!o.dst_list.empty()) o.dst_count = static_cast<uint32_t>(o.dst_list.size());
  if (o.dst_count == 0 || o.threads == 0 || o.batch == 0 || o.paced_batch == 0 || o.gso == 0) usage("counts must be positive");
  if (o.gso > 1 && (o.payload == 0 || o.payload * o.gso > 65507)) usage("--gso: payload x datagrams must fit one UDP send (65507 bytes)");
  if (!(o.seconds > 0)) usage("--seconds must be positive");
  return o;
}

struct Worker {
  const Options* opt = nullptr;
  const std::vector<sockaddr_in>* dsts = nullptr;
  uint32_t index = 0;
  double deadline = 0;
  uint64_t sent = 0;
  uint64_t errors = 0;
  uint64_t resets = 0;
  uint32_t batch = 0;  // datagrams per sendmmsg()
  double rate = 0;     // this thread's paced rate, packets/s; 0 = unpaced
  int err = 0;
  pthread_t tid{};
};

void add_ns(timespec& t, int64_t ns) {
  t.tv_sec += ns / 1000000000;
  t.tv_nsec += ns % 1000000000;
  if (t.tv_nsec >= 1000000000) {
    t.tv_nsec -= 1000000000;
    ++t.tv_sec;
  }
}

int64_t diff_ns(const timespec& a, const timespec& b) {  // a - b
  return (static_cast<int64_t>(a.tv_sec) - b.tv_sec) * 1000000000 + (a.tv_nsec - b.tv_nsec);
}

void* run_worker(void* arg) {
  Worker* w = static_cast<Worker*>(arg);
  const Options& o = *w->opt;
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) {
    w->err = errno;
    return nullptr;
  }
  int sndbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  src.sin_port = htons(static_cast<uint16_t>(o.src_port + w->index));
  if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
    src.sin_port = 0;  // the fixed port is taken: any port will do
    if (bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0) {
      w->err = errno;
      close(fd);
      return nullptr;
    }
  }
  // With --gso N each message carries N datagrams of `payload` bytes, cut by the kernel (UDP_SEGMENT).
  std::vector<uint8_t> payload((o.payload ? o.payload : 1) * (o.gso ? o.gso : 1), 0);
  alignas(cmsghdr) uint8_t ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
  if (o.gso > 1) {
    msghdr tmp{};
    tmp.msg_control = ctrl;
    tmp.msg_controllen = sizeof ctrl;
    cmsghdr* cm = CMSG_FIRSTHDR(&tmp);
    cm->cmsg_level = IPPROTO_UDP;  // SOL_UDP
    cm->cmsg_type = 103;          // UDP_SEGMENT
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t seg = static_cast<uint16_t>(o.payload);
    memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7 + w->index);
  const std::vector<sockaddr_in>& dsts = *w->dsts;
  const size_t nd = dsts.size();
  const uint32_t batch = w->batch;
  std::vector<iovec> iov(batch);
  std::vector<mmsghdr> msgs(batch);
  size_t next = (nd * w->index) / o.threads;  // threads start at different destinations
  uint32_t loops = 0;
  // Paced mode: batch k of the current schedule leaves at `base` + k * interval.
  const bool paced = w->rate > 0;
  const int64_t interval_ns = paced ? static_cast<int64_t>(1e9 * batch / w->rate) : 0;
  // Catch-up after a late wake-up: batches at least half an interval apart (twice the rate, never
  // back to back), and only for a backlog of up to max(2 intervals, 1 ms); beyond, restart.
  const int64_t min_gap_ns = interval_ns / 2;
  const int64_t late_ns = 2 * interval_ns > 1000000 ? 2 * interval_ns : 1000000;
  timespec base{}, due{}, next_ok{};
  uint64_t k = 0;
  if (paced) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake at the deadline, not up to 50 µs later
    clock_gettime(CLOCK_MONOTONIC, &base);
    // Threads start at staggered offsets so their batches interleave instead of coinciding.
    add_ns(base, interval_ns * w->index / o.threads);
    next_ok = base;
  }
  while (!g_stop.load(std::memory_order_relaxed)) {
    if (paced) {
      timespec sched = base;
      add_ns(sched, static_cast<int64_t>(k) * interval_ns);
      due = diff_ns(sched, next_ok) >= 0 ? sched : next_ok;
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (static_cast<double>(now.tv_sec) + now.tv_nsec * 1e-9 >= w->deadline) break;
      const int64_t ahead = diff_ns(due, now);
      if (ahead > 2000) {
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, nullptr) == EINTR && !g_stop.load(std::memory_order_relaxed)) {
        }
      } else if (ahead > 0) {
        do clock_gettime(CLOCK_MONOTONIC, &now);  // under 2 µs: spin
        while (diff_ns(due, now) > 0);
      } else if (diff_ns(now, sched) > late_ns) {
        // Far behind (preempted): restart the schedule from now rather than chase the backlog.
        base = now;
        k = 0;
        ++w->resets;
      }
      next_ok = ahead > 0 ? due : now;
      add_ns(next_ok, min_gap_ns);
      ++k;
    }
    for (uint32_t i = 0; i < batch; ++i) {
      iov[i].iov_base = payload.data();
      iov[i].iov_len = payload.size();
      msghdr& h = msgs[i].msg_hdr;
      memset(&h, 0, sizeof h);
      if (o.gso > 1) {
        h.msg_control = ctrl;
        h.msg_controllen = sizeof ctrl;
      }
      h.msg_name = const_cast<sockaddr_in*>(&dsts[next]);
      h.msg_namelen = sizeof(sockaddr_in);
      h.msg_iov = &iov[i];
      h.msg_iovlen = 1;
      if (++next == nd) next = 0;
    }
    uint32_t off = 0;
    while (off < batch) {
      const int n = sendmmsg(fd, msgs.data() + off, batch - off, 0);
      if (n > 0) {
        off += static_cast<uint32_t>(n);
        w->sent += static_cast<uint64_t>(n) * (o.gso > 1 ? o.gso : 1);
        continue;
      }
      if (errno == EINTR) break;
      // ENOBUFS/EAGAIN/unreachable: count it and skip the message so a bad one cannot wedge us.
      ++w->errors;
      ++off;
    }
    // Checking the clock every 16 batches keeps it off the per-packet path (paced mode checks above).
    if (!paced && (++loops & 15) == 0 && now_s() >= w->deadline) break;
  }
  close(fd);
  return nullptr;
}

}  // namespace

// `pktgen --sink PORT`: binds UDP PORT and reads (discards) until SIGTERM/SIGINT. A bound socket makes
// the receiving stack cut GSO super-packets into datagrams, so /proc/net/snmp's Udp InDatagrams
// (counted when read) + RcvbufErrors count every datagram that arrived (an unbound port counts one
// NoPorts per skb).
int sink(int argc, char** argv) {
  if (argc != 3) usage("--sink takes one port");
  const uint16_t port = static_cast<uint16_t>(parse_uint(argv[2], 65535, "--sink"));
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    fprintf(stderr, "pktgen: --sink %u: %s\n", port, strerror(errno));
    return 1;
  }
  const int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  printf("{\"sink\":%u}\n", port);
  fflush(stdout);
  constexpr unsigned kBatch = 64;
  static char bufs[kBatch][2048];
  mmsghdr msgs[kBatch];
  iovec iovs[kBatch];
  while (!g_stop.load(std::memory_order_relaxed)) {
    for (unsigned i = 0; i < kBatch; ++i) {
      iovs[i] = iovec{bufs[i], sizeof bufs[i]};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // Blocks; SIGTERM interrupts it (no SA_RESTART).
    recvmmsg(fd, msgs, kBatch, MSG_WAITFORONE, nullptr);
  }
  close(fd);
  return 0;
}

int main(int argc, char** argv) {
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (argc > 1 && !strcmp(argv[1], "--sink")) return sink(argc, argv);
  const Options o = parse(argc, argv);

  std::vector<sockaddr_in> dsts(o.dst_count);
  for (uint32_t i = 0; i < o.dst_count; ++i) {
    dsts[i] = sockaddr_in{};
    dsts[i].sin_family = AF_INET;
    dsts[i].sin_port = htons(o.port);
    dsts[i].sin_addr.s_addr = htonl(o.dst_list.empty() ? o.dst + i * o.dst_stride : o.dst_list[i]);
  }
  // Fixed-seed Fisher-Yates: the same spread on every run, no locality between neighbours.
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (uint32_t i = o.dst_count; i > 1; --i) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    const uint32_t j = static_cast<uint32_t>(seed % i);
    const sockaddr_in t = dsts[i - 1];
    dsts[i - 1] = dsts[j];
    dsts[j] = t;
  }

  std::vector<Worker> workers(o.threads);
  const double per_thread = o.pps / o.threads;
  // Paced: about 1 ms of packets per batch, at least 1, at most --paced-batch (and --batch).
  uint32_t batch = o.batch;
  if (per_thread > 0) {
    const double b = per_thread * 1e-3;
    batch = b < 1 ? 1 : static_cast<uint32_t>(b);
    if (batch > o.paced_batch) batch = o.paced_batch;
    if (batch > o.batch) batch = o.batch;
  }
  const double t0 = now_s();
  for (uint32_t i = 0; i < o.threads; ++i) {
    workers[i].opt = &o;
    workers[i].batch = batch;
    workers[i].rate = per_thread;
    workers[i].dsts = &dsts;
    workers[i].index = i;
    workers[i].deadline = t0 + o.seconds;
    if (pthread_create(&workers[i].tid, nullptr, run_worker, &workers[i]) != 0) {
      fprintf(stderr, "pktgen: cannot start thread %u\n", i);
      return 1;
    }
  }
  uint64_t sent = 0, errors = 0, resets = 0;
  int err = 0;
  for (Worker& w : workers) {
    pthread_join(w.tid, nullptr);
    sent += w.sent;
    errors += w.errors;
    resets += w.resets;
    if (w.err) err = w.err;
  }
  const double elapsed = now_s() - t0;
  if (err && sent == 0) {
    fprintf(stderr, "pktgen: socket setup failed: %s\n", strerror(err));
    return 1;
  }
  printf("{\"sent\":%llu,\"errors\":%llu,\"seconds\":%.6f,\"threads\":%u,\"destinations\":%u,\"payload\":%u,"
         "\"requestedPps\":%.1f,\"offeredPps\":%.1f,\"batch\":%u,\"resets\":%llu}\n",
         static_cast<unsigned long long>(sent), static_cast<unsigned long long>(errors), elapsed, o.threads, o.dst_count,
         o.payload, o.pps, elapsed > 0 ? static_cast<double>(sent) / elapsed : 0.0, batch,
         static_cast<unsigned long long>(resets));
  return 0;
}
