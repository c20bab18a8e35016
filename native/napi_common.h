// N-API helpers shared by the product addon and the test kit: reading options by their specs
// (options.h), so both accept exactly the same options with the same messages, and counter arrays.
#pragma once

#include <napi.h>

#include <cstring>
#include <string>

#include "datapath.h"
#include "encap.h"
#include "options.h"

namespace vxnet {

// The value of `spec` in `o`: its default when absent, a TypeError/RangeError naming it otherwise.
inline uint32_t get_option(const Napi::Object& o, const char* what, const OptionSpec& spec, uint32_t max = 0) {
  const uint32_t hi = max ? max : spec.max;
  Napi::Value v = o.Get(spec.name);
  if (v.IsUndefined()) {
    if (spec.required) throw Napi::TypeError::New(o.Env(), std::string(what) + " option " + spec.name + ": required");
    return spec.def;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(what) + " option " + spec.name + ": not a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= spec.min && d <= hi) || d != static_cast<double>(static_cast<uint32_t>(d))) {
    throw Napi::RangeError::New(o.Env(), std::string(what) + " option " + spec.name + ": must be an integer in " +
                                             std::to_string(spec.min) + ".." + std::to_string(hi));
  }
  return static_cast<uint32_t>(d);
}

inline Napi::Buffer<uint8_t> need_bytes(const Napi::Value& v, const char* what) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a Buffer");
  return v.As<Napi::Buffer<uint8_t>>();
}

// `encap`: "udp" or "vxlan".
inline EncapKind get_encap(const Napi::Object& o, const char* what) {
  const std::string encap = o.Get("encap").IsString() ? o.Get("encap").As<Napi::String>().Utf8Value() : "";
  if (encap == "udp") return EncapKind::Udp;
  if (encap == "vxlan") return EncapKind::Vxlan;
  throw Napi::TypeError::New(o.Env(), std::string(what) + " option encap: must be \"udp\" or \"vxlan\"");
}

// The EncapConfig fields every network has: VNI, our subnet, ICMP source, VTEP MAC.
inline void get_encap_config(const Napi::Object& o, const char* what, const OptionSpec& vni, EncapConfig* e) {
  e->vni = get_option(o, what, vni);
  const uint32_t plen = get_option(o, what, opt::kLocalPrefixLen);
  e->local_mask = plen == 0 ? 0 : 0xffffffffu << (32 - plen);
  e->local_net = get_option(o, what, opt::kLocalNet) & e->local_mask;
  e->icmp_src = get_option(o, what, opt::kIcmpSrc);
  Napi::Value mac = o.Get("localMac");
  if (mac.IsUndefined()) return;
  Napi::Buffer<uint8_t> b = need_bytes(mac, (std::string(what) + " option localMac").c_str());
  if (b.Length() != 6) throw Napi::RangeError::New(o.Env(), std::string(what) + " option localMac: must be 6 bytes");
  std::memcpy(e->local_mac, b.Data(), 6);
}

// A datapath's options (DatapathOptions) from `o`, every field checked by its spec.
inline DatapathOptions parse_datapath_options(const Napi::Object& o) {
  DatapathOptions opts;
  namespace opt = vxnet::opt;
  const char* what = "datapath";
  Napi::Value name = o.Get("tunName");
  if (name.IsString()) opts.tun_name = name.As<Napi::String>().Utf8Value();
  opts.encap.kind = vxnet::get_encap(o, what);
  opts.mtu = vxnet::get_option(o, what, opt::kMtu, vxnet::max_mtu(opts.encap.kind));
  vxnet::get_encap_config(o, what, opt::kVni, &opts.encap);
  opts.bind_ip = vxnet::get_option(o, what, opt::kBindIp);
  opts.port = static_cast<uint16_t>(vxnet::get_option(o, what, opt::kPort));
  opts.batch = vxnet::get_option(o, what, opt::kBatch);
  opts.queues = vxnet::get_option(o, what, opt::kQueues);
  opts.busy_poll_us = vxnet::get_option(o, what, opt::kBusyPollUs);
  opts.slice_us = vxnet::get_option(o, what, opt::kSliceUs);
  opts.cpu_local = vxnet::get_option(o, what, opt::kCpuLocal) != 0;
  opts.sock_buf = vxnet::get_option(o, what, opt::kSockBuf);
  opts.tun_queue_len = vxnet::get_option(o, what, opt::kTunQueueLen);
  opts.icmp_per_sec = vxnet::get_option(o, what, opt::kIcmpPerSec);
  opts.tun_ip = vxnet::get_option(o, what, opt::kTunIp);
  Napi::Value dflt = o.Get("defaultNetwork");
  if (!dflt.IsUndefined()) {
    if (!dflt.IsBoolean()) throw Napi::TypeError::New(o.Env(), "datapath option defaultNetwork: not a boolean");
    opts.default_network = dflt.As<Napi::Boolean>().Value();
  }
  if (!opts.default_network && opts.encap.kind != vxnet::EncapKind::Vxlan) {
    throw Napi::TypeError::New(o.Env(), "datapath option defaultNetwork: only vxlan may go without one (udp carries no VNI)");
  }
  return opts;
}

// peerCounters(slots: Uint32Array) -> Float64Array of [txPackets, txBytes, rxPackets, rxBytes] per
// slot, each slot's four read by `read(slot, out4)`.
template <typename Read>
Napi::Value peer_counters(const Napi::CallbackInfo& info, Read read) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
    throw Napi::TypeError::New(info.Env(), "peerCounters(slots): expected a Uint32Array");
  }
  Napi::Uint32Array slots = info[0].As<Napi::Uint32Array>();
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), slots.ElementLength() * kPeerCounters);
  uint64_t v[kPeerCounters];
  for (size_t i = 0; i < slots.ElementLength(); ++i) {
    read(slots[i], v);
    for (size_t k = 0; k < kPeerCounters; ++k) out[i * kPeerCounters + k] = static_cast<double>(v[k]);
  }
  return out;
}

// {name: {min, max, default?, required}} of a spec list, as the addon exports it.
template <size_t N>
Napi::Object option_table(Napi::Env env, const OptionSpec* const (&specs)[N]) {
  Napi::Object t = Napi::Object::New(env);
  for (const OptionSpec* s : specs) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("min", Napi::Number::New(env, s->min));
    e.Set("max", Napi::Number::New(env, s->max));
    if (!s->required) e.Set("default", Napi::Number::New(env, s->def));
    e.Set("required", Napi::Boolean::New(env, s->required));
    t.Set(s->name, e);
  }
  return t;
}

}  // namespace vxnet
