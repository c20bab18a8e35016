// Immutable route snapshot: destination subnet -> peer. Built whole by the control thread and
// published by pointer swap; workers only read it. Lookup probes one hash table per distinct
// prefix length, so its cost does not depend on the number of peers.
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace vxnet {

constexpr uint32_t kNoSlot = 0xffffffffu;

struct Peer {
  uint32_t net = 0;   // subnet owned by the peer, host order
  uint32_t mask = 0;
  uint32_t ip = 0;    // public (underlay) address, host order
  uint16_t port = 0;
  uint8_t prefix_len = 0;
  uint8_t mac[6] = {};  // the peer's VTEP MAC (VXLAN)
  uint32_t slot = kNoSlot;  // per-peer counter slot assigned by the control plane
  sockaddr_in addr{};       // prebuilt destination for sendmmsg
};

// Wire layout of one route record handed over from JS (little endian): the one owner of it. The
// addon exports these fields (`routeRecord`) and the TypeScript face writes records from them.
struct RouteField {
  const char* name;
  uint8_t offset;
  uint8_t size;
};
namespace route_field {
constexpr RouteField kNet{"net", 0, 4};          // the peer's subnet, host order
constexpr RouteField kPeerIp{"peerIp", 4, 4};    // its underlay address, host order
constexpr RouteField kSlot{"slot", 8, 4};        // its counter slot, or kNoSlot
constexpr RouteField kPort{"port", 12, 2};       // its UDP port
constexpr RouteField kPrefixLen{"prefixLen", 14, 1};
constexpr RouteField kMac{"mac", 16, 6};         // its VTEP MAC (VXLAN)
constexpr const RouteField* kAll[] = {&kNet, &kPeerIp, &kSlot, &kPort, &kPrefixLen, &kMac};
}  // namespace route_field
constexpr size_t kRouteRecordSize = 24;
struct RouteSpec {
  uint32_t net;
  uint32_t peer_ip;
  uint32_t slot;
  uint16_t port;
  uint8_t prefix_len;
  uint8_t mac[6];
};
bool decode_route_records(const uint8_t* data, size_t len, std::vector<RouteSpec>* out, std::string* err);

class RouteTable {
 public:
  // Returns nullptr and sets *err on invalid input (bad prefix, host bits set, duplicate subnet).
  static RouteTable* build(const std::vector<RouteSpec>& specs, std::string* err);

  const Peer* lookup(uint32_t dst) const;
  // Routes announced by underlay address `ip` (usually one): [*first, *first + count).
  size_t by_public_ip(uint32_t ip, const Peer* const** first) const;

  size_t size() const { return peers_.size(); }
  const std::vector<Peer>& peers() const { return peers_; }

 private:
  struct Level {
    uint8_t prefix_len;
    uint32_t mask;
    uint32_t bits;
    std::vector<uint32_t> slots;  // index into peers_ + 1; 0 = empty
  };
  struct IpBucket {
    uint32_t ip;
    uint32_t first;  // into by_ip_
    uint32_t count;  // 0 = empty
  };
  std::vector<Peer> peers_;
  std::vector<Level> levels_;  // longest prefix first
  std::vector<const Peer*> by_ip_;
  std::vector<IpBucket> ip_index_;
  uint32_t ip_bits_ = 0;
};

inline uint32_t hash32(uint32_t key, uint32_t bits) { return bits ? (key * 0x9E3779B1u) >> (32 - bits) : 0; }

inline const Peer* RouteTable::lookup(uint32_t dst) const {
  for (const Level& lv : levels_) {
    const uint32_t key = dst & lv.mask;
    const uint32_t cap_mask = static_cast<uint32_t>(lv.slots.size() - 1);
    for (uint32_t i = hash32(key, lv.bits);; i = (i + 1) & cap_mask) {
      const uint32_t s = lv.slots[i];
      if (s == 0) break;
      const Peer& p = peers_[s - 1];
      if (p.net == key) return &p;
    }
  }
  return nullptr;
}

inline size_t RouteTable::by_public_ip(uint32_t ip, const Peer* const** first) const {
  if (ip_index_.empty()) return 0;
  const uint32_t cap_mask = static_cast<uint32_t>(ip_index_.size() - 1);
  for (uint32_t i = hash32(ip, ip_bits_);; i = (i + 1) & cap_mask) {
    const IpBucket& b = ip_index_[i];
    if (b.count == 0) return 0;
    if (b.ip == ip) {
      *first = &by_ip_[b.first];
      return b.count;
    }
  }
}

}  // namespace vxnet
