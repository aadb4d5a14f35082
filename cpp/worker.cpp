#include "worker.h"

#include <chrono>

#include <unistd.h>

namespace fastmlp {

namespace {
// Spin on `until` for at most ~50 microseconds; true if it became true.
template <class F>
bool spin(F until) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  for (int i = 0;; ++i) {
    if (until()) return true;
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > end) return false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}
}  // namespace

Worker::Worker() : pid_(static_cast<long>(getpid())), thread_([this] { loop(); }) {}

bool Worker::alive_here() const { return pid_ == static_cast<long>(getpid()); }

Worker& worker_for(std::unique_ptr<Worker>& slot) {
  if (slot && !slot->alive_here()) slot.release();  // NOLINT: deliberately leaked, see worker.h
  if (!slot) slot = std::make_unique<Worker>();
  return *slot;
}

Worker::~Worker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    state_.store(Quit, std::memory_order_release);
  }
  cv_.notify_all();
  thread_.join();
}

void Worker::post(Job job, void* ctx) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    job_ = job;
    ctx_ = ctx;
    error_ = nullptr;
    state_.store(Posted, std::memory_order_release);
  }
  cv_.notify_all();
}

void Worker::wait() {
  if (!spin([&] { return state_.load(std::memory_order_acquire) == Done; })) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return state_.load(std::memory_order_acquire) == Done; });
  }
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> lk(mu_);
    state_.store(Idle, std::memory_order_release);
    e = error_;
  }
  if (e) std::rethrow_exception(e);
}

void Worker::loop() {
  for (;;) {
    auto ready = [&] {
      const int s = state_.load(std::memory_order_acquire);
      return s == Posted || s == Quit;
    };
    if (!spin(ready)) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, ready);
    }
    if (state_.load(std::memory_order_acquire) == Quit) return;
    std::exception_ptr e;
    try {
      job_(ctx_);
    } catch (...) {
      e = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      error_ = e;
      if (state_.load(std::memory_order_relaxed) != Quit) state_.store(Done, std::memory_order_release);
    }
    cv_.notify_all();
  }
}

}  // namespace fastmlp
