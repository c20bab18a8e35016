// An immutable value published by pointer swap and read without locks (quiescent-state based
// reclamation): each reader thread announces the generation it entered with for the duration of one
// pass; a retired value is freed once every reader is outside a pass or entered at a later generation.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace vxnet {

template <typename T>
class Snapshot {
 public:
  // One per reader thread; only that thread calls enter()/leave().
  class Reader {
   public:
    // The current value (nullptr before the first publish) until leave().
    const T* enter() {
      // seq_cst store then load pairs with publish()'s exchange then reclaim()'s load.
      active_.store(owner_->gen_.load(std::memory_order_seq_cst), std::memory_order_seq_cst);
      return owner_->cur_.load(std::memory_order_seq_cst);
    }
    void leave() { active_.store(0, std::memory_order_release); }

   private:
    friend class Snapshot;
    explicit Reader(Snapshot* owner) : owner_(owner) {}
    Snapshot* owner_;
    std::atomic<uint64_t> active_{0};  // generation being read; 0 = holds nothing
  };

  Snapshot() = default;
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;
  ~Snapshot() {
    delete cur_.exchange(nullptr);
    for (const Retired& r : retired_) delete r.value;
  }

  // Control thread, before the readers start.
  Reader* add_reader() {
    readers_.push_back(std::unique_ptr<Reader>(new Reader(this)));
    return readers_.back().get();
  }

  // Takes ownership of `next`; the previous value is freed once no reader can still see it.
  void publish(T* next) {
    const T* old = cur_.exchange(next, std::memory_order_seq_cst);
    const uint64_t gen = gen_.fetch_add(1, std::memory_order_seq_cst) + 1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (old) retired_.push_back(Retired{old, gen});
    }
    reclaim();
  }

  void reclaim() {
    std::lock_guard<std::mutex> lock(mu_);
    if (retired_.empty()) return;
    uint64_t oldest = UINT64_MAX;
    for (const auto& r : readers_) {
      const uint64_t a = r->active_.load(std::memory_order_seq_cst);
      if (a != 0 && a < oldest) oldest = a;
    }
    size_t kept = 0;
    for (const Retired& r : retired_) {
      if (oldest >= r.gen) {
        delete r.value;
      } else {
        retired_[kept++] = r;
      }
    }
    retired_.resize(kept);
  }

  const T* current() const { return cur_.load(std::memory_order_acquire); }

 private:
  struct Retired {
    const T* value;
    uint64_t gen;  // a reader that entered before this generation may still see it
  };
  std::atomic<const T*> cur_{nullptr};
  std::atomic<uint64_t> gen_{1};
  std::mutex mu_;  // control thread only: guards retired_
  std::vector<Retired> retired_;
  std::vector<std::unique_ptr<Reader>> readers_;
};

}  // namespace vxnet
