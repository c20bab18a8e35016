#!/usr/bin/env bash
# Installs what vxnet needs on a fresh Debian machine, idempotently: Debian packages (etcd, iperf3,
# tcpdump, iptables, ping, iproute2, g++, clang + libFuzzer runtime, docker.io + busybox-static), npm dependencies (npm ci, from
# the lock file), the native addon and the TypeScript build.
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
# dockerd 20.10 and a static busybox for the Docker network tests and demo (src/testbed/docker.ts).
[ -x /usr/sbin/dockerd ] || need_pkgs+=(docker.io)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=(busybox-static)
have nsenter || need_pkgs+=(util-linux)
have g++ || need_pkgs+=(g++)
have make || need_pkgs+=(make)
# clang with libFuzzer's runtime (libclang-rt-dev) for the fuzz targets (scripts/fuzz.sh).
have clang++ || need_pkgs+=(clang)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a' >/dev/null || need_pkgs+=(libclang-rt-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing docker.io must not start dockerd on this host (that would add docker0 and iptables
  # rules here): a policy-rc.d that refuses service starts, only for the install, unless one exists.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  status=0
  apt-get install -y -qq "${need_pkgs[@]}" >/dev/null || status=$?
  if [ -n "$own_policy" ]; then rm -f "$policy"; fi
  if [ "$status" != 0 ]; then exit "$status"; fi
fi

if [ "$(id -u)" != 0 ]; then
  echo "setup: vxnet's demo, tests and benchmarks build network namespaces and need root" >&2
  exit 1
fi

# npm ci installs exactly what package-lock.json pins (it never rewrites the lock file) and runs the
# "install" script, which builds the addon (node-gyp rebuild). Skipped when npm's record of the last
# install (node_modules/.package-lock.json) is newer than package.json and package-lock.json.
if [ ! -f build/Release/vxnet_datapath.node ] || [ ! -d node_modules/etcd3 ] \
  || [ package.json -nt node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci (dependencies from package-lock.json + native addon)"
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "setup: npm ci failed; if package.json changed, regenerate the lock file with 'npm install' and commit it" >&2
    exit 1
  fi
fi
# Rebuild the addon when a native source is newer than the binary.
if [ -n "$(find native binding.gyp -newer build/Release/vxnet_datapath.node -type f 2>/dev/null | head -1)" ]; then
  echo "setup: rebuilding the native addon"
  npm run --silent build:native >/dev/null
fi
npx tsc -p .
