#!/usr/bin/env bash
# Builds the packet code with ASan + UBSan into build-asan/ and runs the native check harnesses
# (steering-check loads the eBPF steering programs: root, and a private network namespace of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build-asan
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Werror \
  native/encap.cc native/link_stats.cc native/offload.cc native/route_table.cc native/test/check.cc -o build-asan/native-check
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Werror \
  native/encap.cc native/offload.cc native/route_table.cc native/tun_queue.cc native/udp_socket.cc \
  native/test/passes_check.cc -o build-asan/passes-check
g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
  -Wall -Wextra -Werror \
  native/cpu_steering.cc native/test/steering_check.cc -o build-asan/steering-check
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
./build-asan/native-check
./build-asan/passes-check
./build-asan/steering-check
