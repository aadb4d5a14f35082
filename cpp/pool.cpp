#include "pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace fastmlp {

namespace {
std::atomic<int> g_threads{std::max(1, static_cast<int>(std::thread::hardware_concurrency()))};
constexpr int kMaxThreads = 256;

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

// The pool's threads and its one job at a time. A worker joins job `gen` only
// while it is open and a slot is left (at most threads - 1 workers join, so
// n_threads bounds the threads that run); the caller closes the job when every
// chunk is done and waits for the workers inside it to leave (seq_cst: a worker
// either is counted in `active` before the close or sees the job closed).
struct Pool {
  long pid = static_cast<long>(getpid());
  std::mutex mu;
  std::condition_variable wake;      // workers: a new job
  std::condition_variable finished;  // the caller: every chunk done, every worker out
  std::atomic<unsigned long> gen{0};
  std::atomic<bool> open{false};
  std::atomic<int> slots{0}, active{0};
  std::atomic<idx> next{0}, done{0};
  ChunkFn fn = nullptr;
  void* ctx = nullptr;
  idx n = 0;
  idx err_chunk = 0;  // the lowest chunk that threw, and its exception (under mu)
  std::exception_ptr err;
  int started = 0;  // worker threads (only the owner of the pool starts more)

  void work() {
    for (;;) {
      const idx c = next.fetch_add(1);
      if (c >= n) return;
      try {
        fn(ctx, c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (c < err_chunk) {
          err_chunk = c;
          err = std::current_exception();
        }
      }
      if (done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lk(mu);
        finished.notify_all();
      }
    }
  }

  void loop() {
    unsigned long seen = gen.load();
    for (;;) {
      auto ready = [&] { return gen.load(std::memory_order_acquire) != seen; };
      if (!spin(ready)) {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, ready);
      }
      seen = gen.load();
      active.fetch_add(1);
      if (open.load() && gen.load() == seen && slots.fetch_sub(1) > 0) work();
      if (active.fetch_sub(1) == 1) {
        std::lock_guard<std::mutex> lk(mu);
        finished.notify_all();
      }
    }
  }
};

// The pool of this process: a child forked from a process whose pool had threads gets a new one
// (its copy has no threads, and its mutex may have been held at the fork). Never destroyed: its
// threads sleep in a condition wait at exit.
std::atomic<Pool*> g_pool{nullptr};
Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (!p || p->pid != static_cast<long>(getpid())) {
    p = new Pool();  // NOLINT: deliberately never freed (and a forked child's copy abandoned)
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

// The pool is owned by the call that set `owner` to its process id. A child
// forked while a parent's thread owned it finds another pid there and takes it.
std::atomic<long> owner{0};
bool acquire() {
  const long me = static_cast<long>(getpid());
  long seen = 0;
  if (owner.compare_exchange_strong(seen, me, std::memory_order_acquire)) return true;
  return seen != me && owner.compare_exchange_strong(seen, me, std::memory_order_acquire);
}
void release() { owner.store(0, std::memory_order_release); }
}  // namespace

void pool_set_threads(int n) { g_threads.store(std::clamp(n, 1, kMaxThreads), std::memory_order_relaxed); }
int pool_threads() { return g_threads.load(std::memory_order_relaxed); }

void parallel_for(int threads, idx n_chunks, ChunkFn fn, void* ctx) {
  const idx t = std::min<idx>({std::max(1, threads), n_chunks, kMaxThreads});
  if (t <= 1 || !acquire()) {
    std::exception_ptr first;
    for (idx c = 0; c < n_chunks; ++c) {
      try {
        fn(ctx, c);
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
    return;
  }
  struct Release { ~Release() { release(); } } guard;
  Pool& p = pool();
  for (; p.started < t - 1; ++p.started) {
    try {
      std::thread([&p] { p.loop(); }).detach();
    } catch (...) {  // a thread that cannot start: the others (and the caller) take its chunks
      break;
    }
  }
  p.fn = fn;
  p.ctx = ctx;
  p.n = n_chunks;
  p.err_chunk = n_chunks;
  p.err = nullptr;
  p.next.store(0);
  p.done.store(0);
  p.slots.store(static_cast<int>(t - 1));
  p.open.store(true);
  {
    std::lock_guard<std::mutex> lk(p.mu);
    p.gen.fetch_add(1);
  }
  p.wake.notify_all();
  p.work();
  auto all_done = [&] { return p.done.load() == n_chunks; };
  if (!spin(all_done)) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.finished.wait(lk, all_done);
  }
  p.open.store(false);
  auto all_out = [&] { return p.active.load() == 0; };
  if (!spin(all_out)) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.finished.wait(lk, all_out);
  }
  if (p.err) std::rethrow_exception(p.err);
}

}  // namespace fastmlp
