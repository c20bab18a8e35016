// Route-table building from the packed records JavaScript hands to setRoutes() (24 bytes each,
// little endian: net, peer_ip, slot, port, prefix_len, pad, mac[6], pad[2]; see
// src/datapath/index.ts): decode_route_records + RouteTable::build, then every lookup checked
// against a brute-force longest-prefix match over the same records.
#include <set>
#include <utility>

#include "fuzz_common.h"

using namespace fuzz;

namespace {

uint32_t mask_of(uint8_t len) { return len == 0 ? 0 : 0xffffffffu << (32 - len); }

const RouteSpec* brute_lookup(const std::vector<RouteSpec>& specs, uint32_t dst) {
  const RouteSpec* best = nullptr;
  for (const RouteSpec& s : specs) {
    if ((dst & mask_of(s.prefix_len)) == s.net && (!best || s.prefix_len > best->prefix_len)) best = &s;
  }
  return best;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<RouteSpec> specs;
  std::string err;
  const bool whole = size % kRouteRecordSize == 0;
  FUZZ_CHECK(decode_route_records(data, size, &specs, &err) == whole, "only whole records decode");
  if (!whole) {
    FUZZ_CHECK(!err.empty(), "a refusal says why");
    const size_t cut = size - size % kRouteRecordSize;
    FUZZ_CHECK(decode_route_records(data, cut, &specs, &err), "whole records decode");
  }
  FUZZ_CHECK(specs.size() == size / kRouteRecordSize, "one spec per record");

  // What build() must accept: prefix <= 32, no host bits, port != 0, no duplicate subnet.
  bool valid = true;
  std::set<std::pair<uint32_t, uint8_t>> seen;
  for (const RouteSpec& s : specs) {
    valid = valid && s.prefix_len <= 32 && s.port != 0 && (s.net & mask_of(s.prefix_len)) == s.net &&
            seen.insert({s.net, s.prefix_len}).second;
  }
  err.clear();
  RouteTable* rt = RouteTable::build(specs, &err);
  FUZZ_CHECK((rt != nullptr) == valid, "build accepts exactly the valid route sets");
  if (!rt) {
    FUZZ_CHECK(!err.empty(), "a refusal says why");
    return 0;
  }
  FUZZ_CHECK(rt->size() == specs.size(), "one peer per route");
  // Probe addresses: every record's subnet (first and last address), its underlay address, and a
  // few derived from the input bytes.
  std::vector<uint32_t> probes;
  for (const RouteSpec& s : specs) {
    probes.push_back(s.net);
    probes.push_back(s.net | ~mask_of(s.prefix_len));
    probes.push_back(s.peer_ip);
  }
  for (size_t i = 0; i + 4 <= size && probes.size() < 4096; i += 3) probes.push_back(load_be32(data + i));
  for (uint32_t a : probes) {
    const Peer* p = rt->lookup(a);
    const RouteSpec* b = brute_lookup(specs, a);
    FUZZ_CHECK((p == nullptr) == (b == nullptr), "lookup finds a route iff one matches");
    if (p) {
      FUZZ_CHECK(p->net == b->net && p->prefix_len == b->prefix_len, "lookup is the longest prefix match");
      FUZZ_CHECK(p->ip == b->peer_ip && p->port == b->port && p->slot == b->slot && std::memcmp(p->mac, b->mac, 6) == 0,
                 "peer carries its record");
      FUZZ_CHECK(p->mask == mask_of(p->prefix_len) && (a & p->mask) == p->net, "peer mask");
    }
    const Peer* const* first = nullptr;
    const size_t n = rt->by_public_ip(a, &first);
    size_t want = 0;
    for (const RouteSpec& s : specs) want += s.peer_ip == a;
    FUZZ_CHECK(n == want, "by_public_ip returns every route of that underlay address");
    for (size_t i = 0; i < n; ++i) FUZZ_CHECK(first[i]->ip == a, "by_public_ip returns only that address");
  }
  delete rt;
  return 0;
}
