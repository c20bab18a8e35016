// wakeup: what one thread wake-up costs on this machine, the unit of a userspace forwarder's
// latency. A waker thread writes an eventfd every `interval` µs; a sleeper blocked in epoll_wait
// (as a datapath worker is) notes how long after the write it ran. Between wake-ups both threads
// sleep, so the sleeper's CPU is idle (halted, on a VM) when it is woken, exactly as a worker's is
// when a ping arrives. Prints percentiles in µs as one JSON line.
//
//   wakeup [--count N] [--interval-us U] [--same-cpu]
//
// --same-cpu pins both threads to CPU 0 (a context switch, no cross-CPU wake-up); the default pins
// them to CPUs 0 and 1 when there are two.
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(idx);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

}  // namespace

int main(int argc, char** argv) {
  int count = 1000;
  int interval_us = 10000;
  bool same_cpu = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--count") && i + 1 < argc) {
      count = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--interval-us") && i + 1 < argc) {
      interval_us = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--same-cpu")) {
      same_cpu = true;
    } else {
      std::fprintf(stderr, "usage: wakeup [--count N] [--interval-us U] [--same-cpu]\n");
      return 2;
    }
  }
  if (count < 1 || count > 1000000 || interval_us < 100 || interval_us > 1000000) {
    std::fprintf(stderr, "wakeup: --count must be 1..1000000 and --interval-us 100..1000000\n");
    return 2;
  }
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  const int waker_cpu = 0;
  const int sleeper_cpu = same_cpu || cpus < 2 ? 0 : 1;
  const int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (efd < 0 || ep < 0) {
    std::perror("wakeup: eventfd/epoll");
    return 1;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) < 0) {
    std::perror("wakeup: epoll_ctl");
    return 1;
  }
  std::atomic<uint64_t> sent_at{0};
  std::vector<double> lat;
  lat.reserve(static_cast<size_t>(count));
  std::thread sleeper([&] {
    pin(sleeper_cpu);
    // Every write is one wake-up; a wake-up that finds two (this thread was late) counts both
    // writes but measures only the last, so the loop always ends.
    for (uint64_t seen = 0; seen < static_cast<uint64_t>(count);) {
      epoll_event e;
      if (epoll_wait(ep, &e, 1, -1) != 1) continue;
      const uint64_t t = now_ns();
      uint64_t v = 0;
      if (read(efd, &v, sizeof v) != static_cast<ssize_t>(sizeof v)) continue;
      seen += v;
      lat.push_back(static_cast<double>(t - sent_at.load(std::memory_order_acquire)) / 1000.0);
    }
  });
  pin(waker_cpu);
  for (int i = 0; i < count; ++i) {
    usleep(static_cast<useconds_t>(interval_us));
    sent_at.store(now_ns(), std::memory_order_release);
    const uint64_t one = 1;
    if (write(efd, &one, sizeof one) < 0) {
      std::perror("wakeup: write");
      return 1;
    }
  }
  sleeper.join();
  std::printf("{\"count\":%d,\"intervalUs\":%d,\"crossCpu\":%s,\"p50Us\":%.1f,\"p90Us\":%.1f,\"p99Us\":%.1f}\n", count,
              interval_us, sleeper_cpu != waker_cpu ? "true" : "false", pct(lat, 50), pct(lat, 90), pct(lat, 99));
  return 0;
}
