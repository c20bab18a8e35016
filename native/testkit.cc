// The test kit: the datapath's pure per-packet functions (encapsulation, validation and
// decapsulation, route lookup) behind N-API, for byte-vector tests and microbenchmarks. Its own
// node-gyp target (vxnet_testkit.node): the product addon carries none of this. No fds: an
// Engine is an encapsulation config, a route snapshot and one counter block.
#include <napi.h>
#include <time.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "counters.h"
#include "encap.h"
#include "napi_common.h"
#include "offload.h"
#include "packet.h"
#include "route_table.h"

namespace {

using vxnet::Ctr;
using vxnet::Drop;

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint32_t need_u32(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + ": expected a number");
  return info[i].As<Napi::Number>().Uint32Value();
}

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {
                           InstanceMethod<&EngineWrap::SetRoutes>("setRoutes"),
                           InstanceMethod<&EngineWrap::Counters>("counters"),
                           InstanceMethod<&EngineWrap::PeerCounters>("peerCounters"),
                           InstanceMethod<&EngineWrap::Tx>("tx"),
                           InstanceMethod<&EngineWrap::Rx>("rx"),
                           InstanceMethod<&EngineWrap::BenchTx>("benchTx"),
                           InstanceMethod<&EngineWrap::BenchRx>("benchRx"),
                           InstanceMethod<&EngineWrap::BenchLookup>("benchLookup"),
                           InstanceAccessor<&EngineWrap::RouteCount>("routeCount"),
                       });
  }

  // The datapath's options (the same specs and messages); only the encapsulation's are used.
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    if (!info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "Engine(options): options must be an object");
    Napi::Object o = info[0].As<Napi::Object>();
    encap_ = vxnet::parse_datapath_options(o).encap;
    routes_.reset(new vxnet::RouteTable());
  }

 private:
  Napi::Value SetRoutes(const Napi::CallbackInfo& info) {
    Napi::Buffer<uint8_t> b = vxnet::need_bytes(info[0], "setRoutes(records)");
    std::vector<vxnet::RouteSpec> specs;
    std::string err;
    if (!vxnet::decode_route_records(b.Data(), b.Length(), &specs, &err)) throw Napi::Error::New(info.Env(), err);
    vxnet::RouteTable* rt = vxnet::RouteTable::build(specs, &err);
    if (!rt) throw Napi::Error::New(info.Env(), err);
    routes_.reset(rt);
    return info.Env().Undefined();
  }

  // All counters in the order of the product addon's `counterNames`.
  Napi::Value Counters(const Napi::CallbackInfo& info) {
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), vxnet::kNumCounters);
    for (size_t i = 0; i < vxnet::kNumCounters; ++i) out[i] = static_cast<double>(ctr_.get(i));
    return out;
  }

  // [txPackets, txBytes, rxPackets, rxBytes] per requested slot.
  Napi::Value PeerCounters(const Napi::CallbackInfo& info) {
    return vxnet::peer_counters(info, [this](uint32_t slot, uint64_t* v) {
      for (size_t k = 0; k < vxnet::kPeerCounters; ++k) {
        v[k] = slot < vxnet::kMaxPeerSlots ? ctr_.peer_get(slot * vxnet::kPeerCounters + k) : 0;
      }
    });
  }

  // One packet as a worker's transmit pass sees it: {drop, icmp?} or {peerIp, port, slot, frame}.
  Napi::Value Tx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Buffer<uint8_t> in = vxnet::need_bytes(info[0], "tx(packet)");
    std::vector<uint8_t> buf(vxnet::kHeadroom + in.Length());
    std::memcpy(buf.data() + vxnet::kHeadroom, in.Data(), in.Length());
    vxnet::TxResult res;
    const Drop d = vxnet::tx_encap(encap_, *routes_, buf.data() + vxnet::kHeadroom, in.Length(), &res);
    Napi::Object out = Napi::Object::New(env);
    if (d != Drop::Count) {
      ctr_.drop(d);
      out.Set("drop", vxnet::drop_name(d));
      if (d == Drop::TxNoRoute) {
        uint8_t reply[vxnet::kIcmpReplyMax];
        const size_t n = vxnet::build_icmp_unreachable(encap_, in.Data(), in.Length(), reply);
        if (n) out.Set("icmp", Napi::Buffer<uint8_t>::Copy(env, reply, n));
      }
      return out;
    }
    const uint64_t inner = res.frame_len - vxnet::encap_overhead(encap_.kind);
    ctr_.add(Ctr::TxPackets, 1);
    ctr_.add(Ctr::TxBytes, inner);
    ctr_.peer(res.peer->slot, 0, inner);
    out.Set("peerIp", Napi::Number::New(env, res.peer->ip));
    out.Set("port", Napi::Number::New(env, res.peer->port));
    out.Set("slot", Napi::Number::New(env, res.peer->slot));
    out.Set("frame", Napi::Buffer<uint8_t>::Copy(env, res.frame, res.frame_len));
    return out;
  }

  // One datagram from `srcIp` as a worker's receive pass sees it (an offloaded inner checksum is
  // completed, as the worker does): {drop} or {slot, inner}.
  Napi::Value Rx(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const uint32_t src = need_u32(info, 0, "rx(srcIp, datagram)");
    Napi::Buffer<uint8_t> in = vxnet::need_bytes(info[1], "rx(srcIp, datagram)");
    // Copy so the parser sees exactly Length() bytes and ASan would catch an over-read.
    std::vector<uint8_t> buf(in.Data(), in.Data() + in.Length());
    vxnet::RxResult res;
    const Drop d = vxnet::rx_decap(encap_, *routes_, src, buf.data(), buf.size(), &res);
    Napi::Object out = Napi::Object::New(env);
    if (d != Drop::Count) {
      ctr_.drop(d);
      out.Set("drop", vxnet::drop_name(d));
      return out;
    }
    ctr_.add(Ctr::RxPackets, 1);
    ctr_.add(Ctr::RxBytes, res.inner_len);
    ctr_.peer(res.peer->slot, 2, res.inner_len);
    // `res.inner` points into the writable `buf`.
    if (vxnet::complete_offloaded_csum(const_cast<uint8_t*>(res.inner), res.inner_len) == vxnet::L4Csum::Completed) {
      ctr_.add(Ctr::RxCsumCompleted, 1);
    }
    out.Set("slot", Napi::Number::New(env, res.peer->slot));
    out.Set("inner", Napi::Buffer<uint8_t>::Copy(env, res.inner, res.inner_len));
    return out;
  }

  // Microbenchmark kernels: run the hot-path function `iterations` times natively and return
  // elapsed nanoseconds, so the JS harness measures the datapath and not the call boundary.
  Napi::Value BenchTx(const Napi::CallbackInfo& info) {
    Napi::Buffer<uint8_t> in = vxnet::need_bytes(info[0], "benchTx(packet, iterations)");
    const uint32_t iters = need_u32(info, 1, "benchTx(packet, iterations)");
    std::vector<uint8_t> buf(vxnet::kHeadroom + in.Length());
    std::memcpy(buf.data() + vxnet::kHeadroom, in.Data(), in.Length());
    size_t sink = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t i = 0; i < iters; ++i) {
      vxnet::TxResult res;
      if (vxnet::tx_encap(encap_, *routes_, buf.data() + vxnet::kHeadroom, in.Length(), &res) == Drop::Count) {
        sink += res.frame_len;
      }
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(sink) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value BenchRx(const Napi::CallbackInfo& info) {
    const uint32_t src = need_u32(info, 0, "benchRx(srcIp, datagram, iterations)");
    Napi::Buffer<uint8_t> in = vxnet::need_bytes(info[1], "benchRx(srcIp, datagram, iterations)");
    const uint32_t iters = need_u32(info, 2, "benchRx(srcIp, datagram, iterations)");
    size_t sink = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t i = 0; i < iters; ++i) {
      vxnet::RxResult res;
      if (vxnet::rx_decap(encap_, *routes_, src, in.Data(), in.Length(), &res) == Drop::Count) sink += res.inner_len;
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(sink) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value BenchLookup(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) {
      throw Napi::TypeError::New(info.Env(), "benchLookup(dsts: Uint32Array, rounds)");
    }
    Napi::Uint32Array dsts = info[0].As<Napi::Uint32Array>();
    const uint32_t rounds = need_u32(info, 1, "benchLookup(dsts, rounds)");
    const uint32_t* d = dsts.Data();
    const size_t n = dsts.ElementLength();
    size_t hits = 0;
    const uint64_t t0 = mono_ns();
    for (uint32_t r = 0; r < rounds; ++r) {
      for (size_t i = 0; i < n; ++i) hits += routes_->lookup(d[i]) != nullptr;
    }
    const uint64_t t1 = mono_ns();
    asm volatile("" : : "r"(hits) : "memory");
    return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
  }

  Napi::Value RouteCount(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(routes_->size()));
  }

  vxnet::EncapConfig encap_;
  std::unique_ptr<vxnet::RouteTable> routes_;
  vxnet::CounterBlock ctr_;
};

// benchChecksum(bytes, iterations, vector): elapsed ns for `iterations` checksums of a `bytes`-long
// buffer (the same buffer, so in cache: the loop's own speed), with the vector loop or the scalar one.
Napi::Value BenchChecksum(const Napi::CallbackInfo& info) {
  const char* what = "benchChecksum(bytes, iterations, vector)";
  const uint32_t bytes = need_u32(info, 0, what);
  const uint32_t iters = need_u32(info, 1, what);
  if (bytes > 65536 || info.Length() < 3 || !info[2].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + ": bytes <= 65536, vector a boolean");
  }
  const bool vector = info[2].As<Napi::Boolean>().Value();
  static const std::vector<uint8_t> buf = [] {
    std::vector<uint8_t> b(65536);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 131 + 7);
    return b;
  }();
  uint32_t sink = 0;
  const uint64_t t0 = mono_ns();
  for (uint32_t i = 0; i < iters; ++i) {
    sink += vector ? vxnet::detail::csum_partial_impl<true>(buf.data(), bytes, i)
                   : vxnet::detail::csum_partial_impl<false>(buf.data(), bytes, i);
  }
  const uint64_t t1 = mono_ns();
  asm volatile("" : : "r"(sink) : "memory");
  return Napi::Number::New(info.Env(), static_cast<double>(t1 - t0));
}

// The vector checksum loop this CPU runs ("avx2"), or "" where it has none (the scalar loop only).
const char* checksum_vector_loop() {
#if defined(__x86_64__)
  if (vxnet::detail::csum_avx2_ok()) return "avx2";
#endif
  return "";
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", EngineWrap::Init(env));
  exports.Set("benchChecksum", Napi::Function::New(env, BenchChecksum, "benchChecksum"));
  exports.Set("checksumVectorLoop", Napi::String::New(env, checksum_vector_loop()));
  return exports;
}

}  // namespace

NODE_API_MODULE(vxnet_testkit, Init)
