#include "route_table.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace vxnet {

namespace {

uint32_t mask_of(uint8_t len) { return len == 0 ? 0 : 0xffffffffu << (32 - len); }

// Smallest power of two >= 2n (load factor <= 0.5 keeps probe chains short), as log2.
uint32_t table_bits(size_t n) {
  uint32_t bits = 1;
  while ((size_t{1} << bits) < n * 2) ++bits;
  return bits;
}

uint32_t load_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

static_assert(route_field::kMac.offset + route_field::kMac.size <= kRouteRecordSize, "route record fields fit");

bool decode_route_records(const uint8_t* data, size_t len, std::vector<RouteSpec>* out, std::string* err) {
  if (len % kRouteRecordSize != 0) {
    *err = "route buffer length is not a multiple of " + std::to_string(kRouteRecordSize);
    return false;
  }
  out->clear();
  out->reserve(len / kRouteRecordSize);
  for (size_t off = 0; off < len; off += kRouteRecordSize) {
    const uint8_t* r = data + off;
    RouteSpec s{};
    namespace f = route_field;
    s.net = load_le32(r + f::kNet.offset);
    s.peer_ip = load_le32(r + f::kPeerIp.offset);
    s.slot = load_le32(r + f::kSlot.offset);
    s.port = static_cast<uint16_t>(r[f::kPort.offset] | (r[f::kPort.offset + 1] << 8));
    s.prefix_len = r[f::kPrefixLen.offset];
    std::memcpy(s.mac, r + f::kMac.offset, f::kMac.size);
    out->push_back(s);
  }
  return true;
}

RouteTable* RouteTable::build(const std::vector<RouteSpec>& specs, std::string* err) {
  auto* rt = new RouteTable();
  rt->peers_.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const RouteSpec& s = specs[i];
    if (s.prefix_len > 32) {
      *err = "route " + std::to_string(i) + ": prefix length " + std::to_string(s.prefix_len) + " > 32";
      delete rt;
      return nullptr;
    }
    const uint32_t mask = mask_of(s.prefix_len);
    if ((s.net & mask) != s.net) {
      *err = "route " + std::to_string(i) + ": host bits set in subnet";
      delete rt;
      return nullptr;
    }
    if (s.port == 0) {
      *err = "route " + std::to_string(i) + ": port 0";
      delete rt;
      return nullptr;
    }
    Peer p;
    p.net = s.net;
    p.mask = mask;
    p.prefix_len = s.prefix_len;
    p.ip = s.peer_ip;
    p.port = s.port;
    std::memcpy(p.mac, s.mac, 6);
    p.slot = s.slot;
    p.addr.sin_family = AF_INET;
    p.addr.sin_port = htons(s.port);
    p.addr.sin_addr.s_addr = htonl(s.peer_ip);
    rt->peers_.push_back(p);
  }

  // One open-addressing table per distinct prefix length.
  std::vector<uint8_t> lens;
  for (const Peer& p : rt->peers_) lens.push_back(p.prefix_len);
  std::sort(lens.begin(), lens.end(), std::greater<uint8_t>());
  lens.erase(std::unique(lens.begin(), lens.end()), lens.end());
  for (uint8_t len : lens) {
    size_t n = 0;
    for (const Peer& p : rt->peers_) n += p.prefix_len == len;
    Level lv;
    lv.prefix_len = len;
    lv.mask = mask_of(len);
    lv.bits = table_bits(n);
    lv.slots.assign(size_t{1} << lv.bits, 0);
    const uint32_t cap_mask = static_cast<uint32_t>(lv.slots.size() - 1);
    for (size_t i = 0; i < rt->peers_.size(); ++i) {
      const Peer& p = rt->peers_[i];
      if (p.prefix_len != len) continue;
      uint32_t h = hash32(p.net, lv.bits);
      while (lv.slots[h] != 0) {
        if (rt->peers_[lv.slots[h] - 1].net == p.net) {
          *err = "route " + std::to_string(i) + ": duplicate subnet";
          delete rt;
          return nullptr;
        }
        h = (h + 1) & cap_mask;
      }
      lv.slots[h] = static_cast<uint32_t>(i + 1);
    }
    rt->levels_.push_back(std::move(lv));
  }

  // Index by public address, for receive-side validation.
  std::vector<uint32_t> order(rt->peers_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<uint32_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [rt](uint32_t a, uint32_t b) { return rt->peers_[a].ip < rt->peers_[b].ip; });
  rt->by_ip_.reserve(order.size());
  for (uint32_t i : order) rt->by_ip_.push_back(&rt->peers_[i]);
  size_t distinct = 0;
  for (size_t i = 0; i < rt->by_ip_.size(); ++i) distinct += (i == 0 || rt->by_ip_[i]->ip != rt->by_ip_[i - 1]->ip);
  if (distinct) {
    rt->ip_bits_ = table_bits(distinct);
    rt->ip_index_.assign(size_t{1} << rt->ip_bits_, IpBucket{0, 0, 0});
    const uint32_t cap_mask = static_cast<uint32_t>(rt->ip_index_.size() - 1);
    for (size_t i = 0; i < rt->by_ip_.size();) {
      size_t j = i;
      while (j < rt->by_ip_.size() && rt->by_ip_[j]->ip == rt->by_ip_[i]->ip) ++j;
      uint32_t h = hash32(rt->by_ip_[i]->ip, rt->ip_bits_);
      while (rt->ip_index_[h].count != 0) h = (h + 1) & cap_mask;
      rt->ip_index_[h] = IpBucket{rt->by_ip_[i]->ip, static_cast<uint32_t>(i), static_cast<uint32_t>(j - i)};
      i = j;
    }
  }
  return rt;
}

}  // namespace vxnet
