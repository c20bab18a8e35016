// N-API face of the datapath: adapts types and errors, nothing else.
#include <napi.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "datapath.h"
#include "packet.h"

namespace {

using vxnet::Ctr;
using vxnet::Drop;

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint32_t get_u32(const Napi::Object& o, const char* key, uint32_t def, uint32_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return def;
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("datapath option ") + key + ": not a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= max) || d != static_cast<double>(static_cast<uint32_t>(d))) {
    throw Napi::RangeError::New(o.Env(), std::string("datapath option ") + key + ": out of range 0.." +
                                             std::to_string(max));
  }
  return static_cast<uint32_t>(d);
}

Napi::Buffer<uint8_t> need_bytes(const Napi::Value& v, const char* what) {
  if (!v.IsBuffer()) throw Napi::TypeError::New(v.Env(), std::string(what) + ": expected a Buffer");
  return v.As<Napi::Buffer<uint8_t>>();
}

class DatapathWrap : public Napi::ObjectWrap<DatapathWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Datapath",
                       {
                           InstanceMethod<&DatapathWrap::Open>("open"),
                           InstanceMethod<&DatapathWrap::Start>("start"),
                           InstanceMethod<&DatapathWrap::Stop>("stop"),
                           InstanceMethod<&DatapathWrap::SetRoutes>("setRoutes"),
                           InstanceMethod<&DatapathWrap::Counters>("counters"),
                           InstanceMethod<&DatapathWrap::PeerCounters>("peerCounters"),
                           InstanceMethod<&DatapathWrap::WorkerCounters>("workerCounters"),
                           InstanceMethod<&DatapathWrap::AddNetwork>("addNetwork"),
                           InstanceMethod<&DatapathWrap::RemoveNetwork>("removeNetwork"),
                           InstanceMethod<&DatapathWrap::NetworkReleased>("networkReleased"),
                           InstanceMethod<&DatapathWrap::ForgetNetwork>("forgetNetwork"),
                           InstanceMethod<&DatapathWrap::NetworkInfo>("networkInfo"),
                           InstanceMethod<&DatapathWrap::TestTx>("testTx"),
                           InstanceMethod<&DatapathWrap::TestRx>("testRx"),
                           InstanceMethod<&DatapathWrap::BenchTx>("benchTx"),
                           InstanceMethod<&DatapathWrap::BenchRx>("benchRx"),
                           InstanceMethod<&DatapathWrap::BenchLookup>("benchLookup"),
                           InstanceAccessor<&DatapathWrap::TunName>("tunName"),
                           InstanceAccessor<&DatapathWrap::Offload>("offload"),
                           InstanceAccessor<&DatapathWrap::Running>("running"),
                           InstanceAccessor<&DatapathWrap::RouteCount>("routeCount"),
                       });
  }

  explicit DatapathWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DatapathWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "Datapath(options): options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    vxnet::DatapathOptions opts;
    Napi::Value name = o.Get("tunName");
    if (name.IsString()) opts.tun_name = name.As<Napi::String>().Utf8Value();
    const std::string encap = o.Get("encap").IsString() ? o.Get("encap").As<Napi::String>().Utf8Value() : "";
    if (encap == "udp") {
      opts.encap.kind = vxnet::EncapKind::Udp;
    } else if (encap == "vxlan") {
      opts.encap.kind = vxnet::EncapKind::Vxlan;
    } else {
      throw Napi::TypeError::New(env, "datapath option encap: must be \"udp\" or \"vxlan\"");
    }
    opts.mtu = get_u32(o, "mtu", 1450, 65535);
    opts.encap.vni = get_u32(o, "vni", 1, 0xffffff);
    opts.bind_ip = get_u32(o, "bindIp", 0, 0xffffffffu);
    opts.port = static_cast<uint16_t>(get_u32(o, "port", opts.encap.kind == vxnet::EncapKind::Vxlan ? 8472 : 8285, 65535));
    opts.batch = get_u32(o, "batch", 64, 1024);
    opts.queues = get_u32(o, "queues", 1, 16);
    opts.busy_poll_us = get_u32(o, "busyPollUs", 50, 10000);
    opts.slice_us = get_u32(o, "sliceUs", 100, 100000);
    opts.sock_buf = get_u32(o, "sockBuf", 4 << 20, 1u << 30);
    opts.icmp_per_sec = get_u32(o, "icmpPerSec", 100, 1000000);
    opts.encap.local_net = get_u32(o, "localNet", 0, 0xffffffffu);
    const uint32_t plen = get_u32(o, "localPrefixLen", 0, 32);
    opts.encap.local_mask = plen == 0 ? 0 : 0xffffffffu << (32 - plen);
    opts.encap.local_net &= opts.encap.local_mask;
    opts.encap.icmp_src = get_u32(o, "icmpSrc", 0, 0xffffffffu);
    opts.tun_ip = get_u32(o, "tunIp", 0, 0xffffffffu);
    get_mac(o, &opts.encap);
    Napi::Value dflt = o.Get("defaultNetwork");
    if (!dflt.IsUndefined()) {
      if (!dflt.IsBoolean()) throw Napi::TypeError::New(env, "datapath option defaultNetwork: not a boolean");
      opts.default_network = dflt.As<Napi::Boolean>().Value();
    }
    if (!opts.default_network && opts.encap.kind != vxnet::EncapKind::Vxlan) {
      throw Napi::TypeError::New(env, "datapath option defaultNetwork: only vxlan may go without one (udp carries no VNI)");
    }
    dp_ = std::make_unique<vxnet::Datapath>(opts);
  }

 private:
  static void get_mac(const Napi::Object& o, vxnet::EncapConfig* encap) {
    Napi::Value mac = o.Get("localMac");
    if (mac.IsUndefined()) return;
    Napi::Buffer<uint8_t> b = need_bytes(mac, "datapath option localMac");
    if (b.Length() != 6) throw Napi::RangeError::New(o.Env(), "datapath option localMac: must be 6 bytes");
    std::memcpy(encap->local_mac, b.Data(), 6);
  }

  // The network id argument at `i`: a number naming a network, or the default network if absent.
  static uint32_t network_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
    if (info.Length() <= i || info[i].IsUndefined()) return vxnet::Datapath::kDefaultNetwork;
    if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": network id must be a number");
    return info[i].As<Napi::Number>().Uint32Value();
  }

  const vxnet::Network& need_network(const Napi::CallbackInfo& info, uint32_t id, const char* what) {
    const vxnet::Network* n = dp_->network(id);
    if (!n) throw Napi::Error::New(info.Env(), std::string(what) + ": no network " + std::to_string(id));
    return *n;
  }

  // addNetwork({tunName, netns?, mtu, vni, localNet, localPrefixLen, localMac, tunIp, icmpSrc}) -> id
  Napi::Value AddNetwork(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "addNetwork(options): options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    vxnet::NetworkOptions n;
    if (!o.Get("tunName").IsString()) throw Napi::TypeError::New(env, "network option tunName: must be a string");
    n.tun_name = o.Get("tunName").As<Napi::String>().Utf8Value();
    Napi::Value ns = o.Get("netns");
    if (!ns.IsUndefined()) {
      if (!ns.IsString()) throw Napi::TypeError::New(env, "network option netns: must be a string");
      n.netns = ns.As<Napi::String>().Utf8Value();
    }
    n.mtu = get_u32(o, "mtu", 1450, 65535);
    n.tun_ip = get_u32(o, "tunIp", 0, 0xffffffffu);
    n.encap.vni = get_u32(o, "vni", 1, 0xffffff);
    n.encap.local_net = get_u32(o, "localNet", 0, 0xffffffffu);
    const uint32_t plen = get_u32(o, "localPrefixLen", 0, 32);
    n.encap.local_mask = plen == 0 ? 0 : 0xffffffffu << (32 - plen);
    n.encap.icmp_src = get_u32(o, "icmpSrc", 0, 0xffffffffu);
    get_mac(o, &n.encap);
    std::string err;
    const uint32_t id = dp_->add_network(n, &err);
    if (id == vxnet::Datapath::kNoNetwork) throw Napi::Error::New(env, err);
    return Napi::Number::New(env, id);
  }

  Napi::Value RemoveNetwork(const Napi::CallbackInfo& info) {
    std::string err;
    if (!info[0].IsNumber() || !dp_->remove_network(info[0].As<Napi::Number>().Uint32Value(), &err)) {
      throw Napi::Error::New(info.Env(), "removeNetwork: " + (err.empty() ? std::string("network id must be a number") : err));
    }
    return info.Env().Undefined();
  }

  // True once no worker holds the removed network and its TUN fds are closed.
  Napi::Value NetworkReleased(const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "networkReleased(id): id must be a number");
    return Napi::Boolean::New(info.Env(), dp_->network_released(info[0].As<Napi::Number>().Uint32Value()));
  }

  Napi::Value ForgetNetwork(const Napi::CallbackInfo& info) {
    if (!info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "forgetNetwork(id): id must be a number");
    dp_->forget_network(info[0].As<Napi::Number>().Uint32Value());
    return info.Env().Undefined();
  }

  // {tunName, tunTso, tunUso, routeCount} of a network.
  Napi::Value NetworkInfo(const Napi::CallbackInfo& info) {
    const uint32_t id = network_arg(info, 0, "networkInfo");
    const vxnet::Network& n = need_network(info, id, "networkInfo");
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("tunName", n.tun_name());
    out.Set("tunTso", n.tun_tso());
    out.Set("tunUso", n.tun_uso());
    const vxnet::RouteTable* rt = dp_->routes_of(id);
    out.Set("routeCount", Napi::Number::New(info.Env(), rt ? static_cast<double>(rt->size()) : 0));
    return out;
  }

  Napi::Value Open(const Napi::CallbackInfo& info) {
    std::string err;
    if (!dp_->open(&err)) throw Napi::Error::New(info.Env(), err);
    return Napi::String::New(info.Env(), dp_->tun_name());
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    std::string err;
    if (!dp_->start(&err)) throw Napi::Error::New(info.Env(), err);
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    dp_->stop();
    return info.Env().Undefined();
  }

  Napi::Value SetRoutes(const Napi::CallbackInfo& info) {
    Napi::Buffer<uint8_t> b = need_bytes(info[0], "setRoutes(records)");
    std::vector<vxnet::RouteSpec> specs;
    std::string err;
    if (!vxnet::decode_route_records(b.Data(), b.Length(), &specs, &err)) throw Napi::Error::New(info.Env(), err);
    const uint32_t id = network_arg(info, 1, "setRoutes");
    vxnet::RouteTable* rt = vxnet::RouteTable::build(specs, &err);
    if (!rt) throw Napi::Error::New(info.Env(), err);
    if (!dp_->set_routes(id, rt, &err)) throw Napi::Error::New(info.Env(), "setRoutes: " + err);
    return info.Env().Undefined();
  }

  // All counters in the order of `counterNames`, as doubles (exact below 2^53): without an
  // argument the datapath's totals (default network and what belongs to no network), with a
  // network id that network's.
  Napi::Value Counters(const Napi::CallbackInfo& info) {
    dp_->reclaim();
    uint64_t vals[vxnet::kNumCounters] = {};
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      need_network(info, network_arg(info, 0, "counters"), "counters").totals(vals);
    } else {
      dp_->totals(vals);
    }
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), vxnet::kNumCounters);
    for (size_t i = 0; i < vxnet::kNumCounters; ++i) out[i] = static_cast<double>(vals[i]);
    return out;
  }

  // [txPackets, txBytes, rxPackets, rxBytes] per requested slot.
  Napi::Value PeerCounters(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      throw Napi::TypeError::New(info.Env(), "peerCounters(slots): expected a Uint32Array");
    }
    Napi::Uint32Array slots = info[0].As<Napi::Uint32Array>();
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), slots.ElementLength() * vxnet::kPeerCounters);
    uint64_t v[vxnet::kPeerCounters];
    for (size_t i = 0; i < slots.ElementLength(); ++i) {
      dp_->peer_totals(slots[i], v);
      for (size_t k = 0; k < vxnet::kPeerCounters; ++k) out[i * vxnet::kPeerCounters + k] = static_cast<double>(v[k]);
    }
    return out;
  }

  // [txPackets, rxPackets] per worker, as doubles.
  Napi::Value WorkerCounters(const Napi::CallbackInfo& info) {
    const std::vector<uint64_t> v = info.Length() > 0 && !info[0].IsUndefined()
                                        ? need_network(info, network_arg(info, 0, "workerCounters"), "workerCounters").worker_packets()
                                        : dp_->worker_packets();
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(v[i]);
    return out;
  }

  Napi::Value TestTx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Buffer<uint8_t> in = need_bytes(info[0], "testTx(packet)");
    std::vector<uint8_t> buf(vxnet::kHeadroom + in.Length());
    std::memcpy(buf.data() + vxnet::kHeadroom, in.Data(), in.Length());
    vxnet::TxResult res;
    const Drop d = dp_->test_tx(buf.data() + vxnet::kHeadroom, in.Length(), &res);
    Napi::Object out = Napi::Object::New(env);
    if (d != Drop::Count) {
      out.Set("drop", vxnet::drop_name(d));
      if (d == Drop::TxNoRoute) {
        uint8_t reply[vxnet::kIcmpReplyMax];
        const size_t n = vxnet::build_icmp_unreachable(dp_->encap(), in.Data(), in.Length(), reply);
        if (n) out.Set("icmp", Napi::Buffer<uint8_t>::Copy(env, reply, n));
      }
      return out;
    }
    out.Set("peerIp", Napi::Number::New(env, res.peer->ip));
    out.Set("port", Napi::Number::New(env, res.peer->port));
    out.Set("slot", Napi::Number::New(env, res.peer->slot));
    out.Set("frame", Napi::Buffer<uint8_t>::Copy(env, res.frame, res.frame_len));
    return out;
  }

  Napi::Value TestRx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "testRx(srcIp, datagram): srcIp must be a number");
    const uint32_t src = info[0].As<Napi::Number>().Uint32Value();
    Napi::Buffer<uint8_t> in = need_bytes(info[1], "testRx(srcIp, datagram)");
    // Copy so the parser sees exactly Length() bytes and ASan would catch an over-read.
    std::vector<uint8_t> buf(in.Data(), in.Data() + in.Length());
    vxnet::RxResult res;
    const Drop d = dp_->test_rx(src, buf.data(), buf.size(), &res);
    Napi::Object out = Napi::Object::New(env);
    if (d != Drop::Count) {
      out.Set("drop", vxnet::drop_name(d));
      return out;
    }
    out.Set("slot", Napi::Number::New(env, res.peer->slot));
    out.Set("inner", Napi::Buffer<uint8_t>::Copy(env, res.inner, res.inner_len));
    return out;
  }

  // Microbenchmark kernels: run the hot-path function `iterations` times natively and return
  // elapsed nanoseconds, so the JS harness measures the datapath and not the call boundary.
  Napi::Value BenchTx(const Napi::CallbackInfo& info) {
    Napi::Buffer<uint8_t> in = need_bytes(info[0], "benchTx(packet, iterations)");
    const uint32_t iters = info[1].As<Napi::Number>().Uint32Value();
    std::vector<uint8_t> buf(vxnet::kHeadroom + in.Length());
    std::memcpy(buf.data() + vxnet::kHeadroom, in.Data(), in.Length());
    const vxnet::RouteTable* rt = dp_->current_table();
    if (!rt) throw Napi::Error::New(info.Env(), "benchTx: no routes published");
    size_t sink = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t i = 0; i < iters; ++i) {
      vxnet::TxResult res;
      if (vxnet::tx_encap(dp_->encap(), *rt, buf.data() + vxnet::kHeadroom, in.Length(), &res) == Drop::Count) {
        sink += res.frame_len;
      }
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(sink) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value BenchRx(const Napi::CallbackInfo& info) {
    const uint32_t src = info[0].As<Napi::Number>().Uint32Value();
    Napi::Buffer<uint8_t> in = need_bytes(info[1], "benchRx(srcIp, datagram, iterations)");
    const uint32_t iters = info[2].As<Napi::Number>().Uint32Value();
    const vxnet::RouteTable* rt = dp_->current_table();
    if (!rt) throw Napi::Error::New(info.Env(), "benchRx: no routes published");
    size_t sink = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t i = 0; i < iters; ++i) {
      vxnet::RxResult res;
      if (vxnet::rx_decap(dp_->encap(), *rt, src, in.Data(), in.Length(), &res) == Drop::Count) sink += res.inner_len;
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(sink) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value BenchLookup(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "benchLookup(dsts: Uint32Array, rounds)");
    Napi::Uint32Array dsts = info[0].As<Napi::Uint32Array>();
    const uint32_t rounds = info[1].As<Napi::Number>().Uint32Value();
    const vxnet::RouteTable* rt = dp_->current_table();
    if (!rt) throw Napi::Error::New(info.Env(), "benchLookup: no routes published");
    const uint32_t* d = dsts.Data();
    const size_t n = dsts.ElementLength();
    size_t hits = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t r = 0; r < rounds; ++r) {
      for (size_t i = 0; i < n; ++i) hits += rt->lookup(d[i]) != nullptr;
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(hits) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value TunName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dp_->tun_name()); }
  // Which offloads the kernel accepted when the datapath was opened.
  Napi::Value Offload(const Napi::CallbackInfo& info) {
    const vxnet::OffloadState& o = dp_->offload();
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("vnetHdr", o.vnet_hdr);
    out.Set("tunTso", o.tun_tso);
    out.Set("tunUso", o.tun_uso);
    out.Set("udpGso", o.udp_gso);
    out.Set("udpGro", o.udp_gro);
    return out;
  }
  Napi::Value Running(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), dp_->running()); }
  Napi::Value RouteCount(const Napi::CallbackInfo& info) {
    const vxnet::RouteTable* rt = dp_->current_table();
    return Napi::Number::New(info.Env(), rt ? static_cast<double>(rt->size()) : 0);
  }

  std::unique_ptr<vxnet::Datapath> dp_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Datapath", DatapathWrap::Init(env));
  Napi::Array names = Napi::Array::New(env, vxnet::kNumCounters);
  uint32_t i = 0;
  for (size_t c = 0; c < static_cast<size_t>(Ctr::Count); ++c) names[i++] = vxnet::ctr_name(static_cast<Ctr>(c));
  for (size_t d = 0; d < static_cast<size_t>(Drop::Count); ++d) names[i++] = vxnet::drop_name(static_cast<Drop>(d));
  exports.Set("counterNames", names);
  exports.Set("routeRecordSize", Napi::Number::New(env, vxnet::kRouteRecordSize));
  exports.Set("maxPeerSlots", Napi::Number::New(env, vxnet::kMaxPeerSlots));
  exports.Set("headroom", Napi::Number::New(env, vxnet::kHeadroom));
  return exports;
}

}  // namespace

NODE_API_MODULE(vxnet_datapath, Init)
