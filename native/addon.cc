// N-API face of the datapath: adapts types and errors, nothing else.
#include <napi.h>

#include <memory>
#include <string>
#include <vector>

#include "datapath.h"
#include "napi_common.h"
#include "packet.h"

namespace {

using vxnet::Ctr;
using vxnet::Drop;

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
    const vxnet::DatapathOptions opts = vxnet::parse_datapath_options(o);
    dp_ = std::make_unique<vxnet::Datapath>(opts);
  }

 private:
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
    n.mtu = vxnet::get_option(o, "network", vxnet::opt::kMtu, vxnet::max_mtu(vxnet::EncapKind::Vxlan));
    n.tun_ip = vxnet::get_option(o, "network", vxnet::opt::kTunIp);
    vxnet::get_encap_config(o, "network", vxnet::opt::kNetworkVni, &n.encap);
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
    Napi::Buffer<uint8_t> b = vxnet::need_bytes(info[0], "setRoutes(records)");
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
    return vxnet::peer_counters(info, [this](uint32_t slot, uint64_t* v) { dp_->peer_totals(slot, v); });
  }

  // [txPackets, rxPackets] per lane (Datapath::lanes()), as doubles.
  Napi::Value WorkerCounters(const Napi::CallbackInfo& info) {
    const std::vector<uint64_t> v = info.Length() > 0 && !info[0].IsUndefined()
                                        ? need_network(info, network_arg(info, 0, "workerCounters"), "workerCounters").lane_packets()
                                        : dp_->lane_packets();
    Napi::Float64Array out = Napi::Float64Array::New(info.Env(), v.size());
    for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(v[i]);
    return out;
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
    out.Set("cpuLocal", o.cpu_local);
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
  exports.Set("maxPeerSlots", Napi::Number::New(env, vxnet::kMaxPeerSlots));
  exports.Set("noSlot", Napi::Number::New(env, vxnet::kNoSlot));
  exports.Set("headroom", Napi::Number::New(env, vxnet::kHeadroom));
  Napi::Object options = Napi::Object::New(env);
  options.Set("datapath", vxnet::option_table(env, vxnet::opt::kDatapath));
  options.Set("network", vxnet::option_table(env, vxnet::opt::kNetwork));
  exports.Set("options", options);
  Napi::Object max_mtu = Napi::Object::New(env);
  max_mtu.Set("udp", Napi::Number::New(env, vxnet::max_mtu(vxnet::EncapKind::Udp)));
  max_mtu.Set("vxlan", Napi::Number::New(env, vxnet::max_mtu(vxnet::EncapKind::Vxlan)));
  exports.Set("maxMtu", max_mtu);
  Napi::Object record = Napi::Object::New(env);
  record.Set("size", Napi::Number::New(env, vxnet::kRouteRecordSize));
  for (const vxnet::RouteField* f : vxnet::route_field::kAll) {
    Napi::Object field = Napi::Object::New(env);
    field.Set("offset", Napi::Number::New(env, f->offset));
    field.Set("size", Napi::Number::New(env, f->size));
    record.Set(f->name, field);
  }
  exports.Set("routeRecord", record);
  return exports;
}

}  // namespace

NODE_API_MODULE(vxnet_datapath, Init)
