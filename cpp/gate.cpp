#include "gate.h"

#include <algorithm>
#include <chrono>
#include <new>
#include <vector>

#include <pthread.h>

namespace fastmlp {

namespace {
// The gates this thread holds, with their depth and mode.
struct Held {
  Gate* gate;
  int depth;
  bool exclusive;
};
thread_local std::vector<Held> held;

Held* find_held(Gate* g) {
  for (auto& h : held)
    if (h.gate == g) return &h;
  return nullptr;
}
void forget_held(Gate* g) {
  held.erase(std::remove_if(held.begin(), held.end(), [g](const Held& h) { return h.gate == g; }), held.end());
}

std::mutex& registry_mutex() {
  static std::mutex* m = new std::mutex;  // never destroyed: used by fork handlers until exit
  return *m;
}
std::vector<Gate*>& registry() {
  static auto* r = new std::vector<Gate*>;
  return *r;
}
}  // namespace

// pthread_atfork handlers: take every gate before fork (bounded wait), then
// release them in the parent and reset them in the child.
struct GateForkHandlers {
  static std::vector<Gate*>& taken() {
    static auto* t = new std::vector<Gate*>;
    return *t;
  }
  static void prepare() {
    registry_mutex().lock();
    taken().clear();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    for (Gate* g : registry()) {
      if (find_held(g)) continue;  // this thread holds it: its state is this thread's to keep consistent
      std::unique_lock<std::mutex> lk(g->mu_);
      ++g->waiting_;
      ++g->want_write_;
      const bool ok = g->cv_.wait_until(lk, deadline, [g] { return !g->writer_ && g->readers_ == 0; });
      --g->want_write_;
      --g->waiting_;
      if (ok) {
        g->writer_ = true;
        taken().push_back(g);
      } else {
        g->cv_.notify_all();  // a fit in boundary() may be waiting for this waiter to go
      }
    }
  }
  static void parent() {
    for (Gate* g : taken()) {
      {
        std::lock_guard<std::mutex> lk(g->mu_);
        g->writer_ = false;
      }
      g->cv_.notify_all();
    }
    taken().clear();
    registry_mutex().unlock();
  }
  static void child() {
    for (Gate* g : registry()) g->reset_after_fork();
    taken().clear();
    registry_mutex().unlock();  // locked by this very thread in prepare()
  }
  GateForkHandlers() { pthread_atfork(&prepare, &parent, &child); }
};

Gate::Gate() {
  static GateForkHandlers handlers;  // installed once, on the first gate
  std::lock_guard<std::mutex> lk(registry_mutex());
  registry().push_back(this);
}

Gate::~Gate() {
  std::lock_guard<std::mutex> lk(registry_mutex());
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), this), r.end());
  forget_held(this);
}

void Gate::reset_after_fork() {
  // The other threads of the parent do not exist here: their holds and waits are gone. The mutex and
  // condition variable may have been in use by them, so they are made anew (the old ones are abandoned).
  new (&mu_) std::mutex;
  new (&cv_) std::condition_variable;
  const Held* h = find_held(this);  // this thread's own hold, if any, stays
  writer_ = h && h->exclusive;
  readers_ = h && !h->exclusive ? 1 : 0;
  want_write_ = 0;
  waiting_ = 0;
}

void Gate::lock(bool exclusive) {
  if (Held* h = find_held(this)) {  // re-entrant
    ++h->depth;
    return;
  }
  held.reserve(held.size() + 1);  // before taking it: an allocation failure leaves nothing held
  {
    std::unique_lock<std::mutex> lk(mu_);
    ++waiting_;
    if (exclusive) {
      ++want_write_;
      cv_.wait(lk, [this] { return !writer_ && readers_ == 0; });
      --want_write_;
      writer_ = true;
    } else {
      cv_.wait(lk, [this] { return !writer_ && want_write_ == 0; });
      ++readers_;
    }
    --waiting_;
    ++admitted_;
  }
  cv_.notify_all();  // a fit waiting in boundary() counts the threads let in
  held.push_back({this, 1, exclusive});
}

void Gate::unlock(bool) {
  Held* h = find_held(this);
  if (!h) return;
  if (--h->depth > 0) return;
  const bool exclusive = h->exclusive;
  forget_held(this);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (exclusive) writer_ = false;
    else if (readers_ > 0) --readers_;
  }
  cv_.notify_all();
}

void Gate::boundary() {
  if (waiting_.load(std::memory_order_relaxed) == 0) return;
  {
    std::unique_lock<std::mutex> lk(mu_);
    const std::uint64_t target = admitted_ + static_cast<std::uint64_t>(waiting_.load());
    writer_ = false;
    cv_.notify_all();
    // every thread that waited now gets its turn, then this one waits as a writer
    cv_.wait(lk, [&] { return admitted_ >= target || waiting_.load() == 0; });
    ++want_write_;
    cv_.wait(lk, [this] { return !writer_ && readers_ == 0; });
    --want_write_;
    writer_ = true;
  }
}

void Gate::release_all() {
  Held* h = find_held(this);
  if (!h) return;
  saved_depth_ = h->depth;
  h->depth = 1;
  unlock(true);
}

void Gate::retake() {
  lock(true);
  find_held(this)->depth = saved_depth_;
}

}  // namespace fastmlp
