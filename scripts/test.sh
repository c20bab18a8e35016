#!/usr/bin/env bash
# All tests: native sanitizer harness, a short bounded run of every libFuzzer target (scripts/fuzz.sh
# --smoke), unit and native byte-vector tests, then end-to-end tests in network namespaces (real
# etcd, kernel vxlan, iperf3). Run through `npm test` (which runs setup first).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== native packet code under ASan/UBSan"
bash scripts/sanitize.sh
echo "== fuzz smoke run (libFuzzer, all targets, bounded)"
bash scripts/fuzz.sh --smoke
echo "== unit, native and end-to-end tests"
node --test --test-concurrency=1 --test-timeout=600000 dist/test/unit dist/test/native dist/test/e2e
