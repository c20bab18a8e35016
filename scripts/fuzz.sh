#!/usr/bin/env bash
# libFuzzer targets for the native packet code: builds every native/fuzz/*.cc (one target each)
# against the pure sources with clang -fsanitize=fuzzer,address,undefined into build-fuzz/, then
# runs each target from its seed corpus native/fuzz/corpus/<target>/ (plus what earlier runs found,
# kept in build-fuzz/corpus/<target>/), and prints the executions per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   SECONDS per target (default $FUZZ_SECONDS or 180)
#   scripts/fuzz.sh --smoke                 bounded run for npm test: $FUZZ_SMOKE_SECONDS (40) in all,
#                                           from the committed seeds only
#   scripts/fuzz.sh --build                 build only
#   scripts/fuzz.sh --seeds                 regenerate the seed corpora (native/fuzz/seeds.cc)
#   FUZZ_JOBS=N                             N parallel fuzzing processes per target (default 1)
#
# A crash leaves its input in build-fuzz/crashes/<target>-crash-*; reproduce with
# build-fuzz/<target> FILE. Exit status is non-zero when any target found a problem.
set -euo pipefail
cd "$(dirname "$0")/.."

# The packet code every target links against: the pure functions, and the TUN queue and UDP batch
# types, whose syscalls the targets replace by their tap and sink.
PURE_SOURCES=(native/encap.cc native/link_stats.cc native/offload.cc native/route_table.cc native/tun_queue.cc native/udp_socket.cc)
# More pure sources (e.g. a GRO-train splitter moved out of datapath.cc): add them here, or pass
# them space-separated in FUZZ_EXTRA_SOURCES.
EXTRA_SOURCES=()
# shellcheck disable=SC2206
EXTRA_SOURCES+=(${FUZZ_EXTRA_SOURCES:-})

CXX=${FUZZ_CXX:-clang++}
FLAGS=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
       -Wall -Wextra -Werror)
OUT=build-fuzz

mode=run
seconds=${FUZZ_SECONDS:-180}
targets=()
for a in "$@"; do
  case "$a" in
    --smoke) mode=smoke ;;
    --build) mode=build ;;
    --seeds) mode=seeds ;;
    ''|*[!0-9]*) targets+=("$a") ;;
    *) seconds=$a ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  for f in native/fuzz/*.cc; do
    t=$(basename "$f" .cc)
    [ "$t" = seeds ] || targets+=("$t")  # seeds.cc is the seed generator, not a target
  done
fi

if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "fuzz: $CXX not found (scripts/setup.sh installs clang and libclang-rt-dev)" >&2
  exit 1
fi

mkdir -p "$OUT/obj" "$OUT/crashes"
if [ "$mode" = seeds ]; then
  "$CXX" -std=c++17 -O1 -Wall -Wextra -Werror native/fuzz/seeds.cc native/offload.cc -o "$OUT/seeds"
  "./$OUT/seeds" native/fuzz/corpus
  exit 0
fi
# The library objects are built once for all targets (instrumented for coverage, no fuzzer main).
objs=()
for src in "${PURE_SOURCES[@]}" "${EXTRA_SOURCES[@]}"; do
  obj="$OUT/obj/$(basename "$src" .cc).o"
  if [ ! -f "$obj" ] || [ -n "$(find "$src" native/*.h -newer "$obj" 2>/dev/null | head -1)" ]; then
    "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  objs+=("$obj")
done
for t in "${targets[@]}"; do
  src="native/fuzz/$t.cc"
  [ -f "$src" ] || { echo "fuzz: no target $src" >&2; exit 1; }
  bin="$OUT/$t"
  if [ ! -f "$bin" ] || [ -n "$(find "$src" native/fuzz/*.h native/*.h "${objs[@]}" -newer "$bin" 2>/dev/null | head -1)" ]; then
    "$CXX" "${FLAGS[@]}" -fsanitize=fuzzer "$src" "${objs[@]}" -o "$bin"
  fi
done
[ "$mode" = build ] && { echo "fuzz: built ${targets[*]} in $OUT/"; exit 0; }

if [ "$mode" = smoke ]; then
  budget=${FUZZ_SMOKE_SECONDS:-40}
  seconds=$(( budget / ${#targets[@]} ))
  [ "$seconds" -ge 1 ] || seconds=1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
summary=()
for t in "${targets[@]}"; do
  seeds="native/fuzz/corpus/$t"
  work="$OUT/corpus/$t"
  # The smoke run starts from the committed seeds only (same work whatever earlier runs found)
  # and keeps nothing.
  [ "$mode" = smoke ] && work="$OUT/smoke/$t" && rm -rf "$work"
  mkdir -p "$work" "$seeds"
  log="$OUT/$t.log"
  # New inputs go to the first directory (build-fuzz/, not committed); the seeds are read only.
  # Largest input: a 64 KiB packet (+ headers) for the packet paths, fewer records for the route
  # table (each execution compares every lookup with a brute-force match).
  case "$t" in
    routes) max_len=4800 ;;
    icmp) max_len=256 ;;
    netlink) max_len=4096 ;;
    *) max_len=70000 ;;
  esac
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" -print_final_stats=1
        -artifact_prefix="$OUT/crashes/$t-")
  [ -f "native/fuzz/$t.dict" ] && args+=(-dict="native/fuzz/$t.dict")
  rc=0
  crashes_before=$(find "$OUT/crashes" -name "$t-*" | wc -l)
  if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
    # libFuzzer writes one fuzz-<n>.log per job into the current directory: keep them in build-fuzz/.
    args+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    root=$(pwd)
    mkdir -p "$OUT/jobs/$t"
    (cd "$OUT/jobs/$t" && "$root/$OUT/$t" "${args[@]/-artifact_prefix=/-artifact_prefix=$root/}" "$root/$work" "$root/$seeds" >"$root/$log" 2>&1) || rc=$?
    statlogs=("$OUT/jobs/$t"/fuzz-*.log)
  else
    "./$OUT/$t" "${args[@]}" "$work" "$seeds" >"$log" 2>&1 || rc=$?
    statlogs=("$log")
  fi
  execs=$(cat "${statlogs[@]}" | grep -ao 'stat::number_of_executed_units: *[0-9]*' | awk '{s += $2} END {print s + 0}')
  cov=$(cat "${statlogs[@]}" | grep -ao 'cov: [0-9]*' | awk '$2 > m {m = $2} END {print m + 0}')
  files=$(find "$work" -type f | wc -l)
  # A new artifact is a failure even if the exit status did not say so (parallel jobs).
  [ "$(find "$OUT/crashes" -name "$t-*" | wc -l)" -gt "$crashes_before" ] && [ "$rc" -eq 0 ] && rc=1
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    summary+=("$(printf '%-8s %10s execs in %ss  cov %s  FAILED (exit %s) — see %s' "$t" "$execs" "$seconds" "${cov:-?}" "$rc" "$log")")
    grep -a -m1 -E 'ERROR: |FUZZ CHECK FAILED|runtime error' "$log" | sed "s/^/  $t: /" >&2 || true
  else
    summary+=("$(printf '%-8s %10s execs in %ss  cov %s  corpus %s new + %s seeds' "$t" "$execs" "$seconds" "${cov:-?}" "$files" "$(find "$seeds" -type f | wc -l)")")
  fi
done
echo "fuzz: per target"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $OUT/crashes/, logs in $OUT/<target>.log)" >&2
  exit 1
fi
