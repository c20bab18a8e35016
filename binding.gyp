{
  "targets": [
    {
      "target_name": "vxnet_datapath",
      "sources": [
        "native/addon.cc",
        "native/datapath.cc",
        "native/cpu_steering.cc",
        "native/encap.cc",
        "native/link_stats.cc",
        "native/offload.cc",
        "native/route_table.cc",
        "native/tun.cc",
        "native/tun_queue.cc",
        "native/udp_socket.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "-pthread"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Werror", "-O2"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "vxnet_testkit",
      "sources": [
        "native/testkit.cc",
        "native/encap.cc",
        "native/offload.cc",
        "native/route_table.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "-pthread"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Werror", "-O2"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "pktgen",
      "type": "executable",
      "sources": ["native/tools/pktgen.cc"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "-pthread"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "wakeup",
      "type": "executable",
      "sources": ["native/tools/wakeup.cc"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2", "-pthread"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2"],
      "ldflags": ["-pthread"]
    },
    {
      "target_name": "relay",
      "type": "executable",
      "sources": ["native/tools/relay.cc"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
