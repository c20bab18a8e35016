#!/usr/bin/env bash
# Installs what vxnet needs on a fresh Debian machine, idempotently: Debian packages (etcd, iperf3,
# tcpdump, iptables, ping, iproute2, g++, clang + libFuzzer runtime), npm dependencies, the native
# addon and the TypeScript build.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have etcd || need_pkgs+=(etcd-server)
have etcdctl || need_pkgs+=(etcd-client)
have iperf3 || need_pkgs+=(iperf3)
have tcpdump || need_pkgs+=(tcpdump)
have iptables || need_pkgs+=(iptables)
have ping || need_pkgs+=(iputils-ping)
have ip || need_pkgs+=(iproute2)
have bridge || need_pkgs+=(iproute2)
have g++ || need_pkgs+=(g++)
have make || need_pkgs+=(make)
# clang with libFuzzer's runtime (libclang-rt-dev) for the fuzz targets (scripts/fuzz.sh).
have clang++ || need_pkgs+=(clang)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a' >/dev/null || need_pkgs+=(libclang-rt-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup: vxnet's demo, tests and benchmarks build network namespaces and need root" >&2
  exit 1
fi

# npm install also builds the addon (package.json "install": node-gyp rebuild).
if [ ! -f build/Release/vxnet_datapath.node ] || [ ! -d node_modules/etcd3 ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm install (dependencies + native addon)"
  npm install --no-audit --no-fund --loglevel=error
fi
# Rebuild the addon when a native source is newer than the binary.
if [ -n "$(find native binding.gyp -newer build/Release/vxnet_datapath.node -type f 2>/dev/null | head -1)" ]; then
  echo "setup: rebuilding the native addon"
  npm run --silent build:native >/dev/null
fi
npx tsc -p .
