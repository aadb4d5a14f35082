#include "pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace fastmlp {

namespace {
std::atomic<int> g_threads{std::max(1, static_cast<int>(std::thread::hardware_concurrency()))};
constexpr int kMaxThreads = 256;
constexpr idx kMaxChunks = idx(1) << 31;  // chunk indices fit the claim word's low half

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

// The pool's threads and its one job at a time. Job g is published by `gen`;
// chunks are claimed by a compare-and-swap on `claim` = (g << 32 | next chunk),
// so a worker that wakes late (descheduled, or still asleep) finds another
// generation there and leaves without touching the job: the caller waits only
// for chunks that were claimed, never for a thread that has not started. Up to
// threads - 1 workers take a seat in a job (`seats` = g << 32 | free seats), so
// n_threads bounds the threads that run.
struct Pool {
  long pid = static_cast<long>(getpid());
  std::mutex mu;
  std::condition_variable wake;      // workers: a new job
  std::condition_variable finished;  // the caller: every chunk done
  std::atomic<std::uint32_t> gen{0};
  std::atomic<std::uint64_t> claim{0}, seats{0};
  std::atomic<idx> done{0};
  // the job (written by its caller before it publishes gen; read by a worker only for a chunk it claimed)
  ChunkFn fn = nullptr;
  void* ctx = nullptr;
  std::atomic<idx> n{0};
  idx err_chunk = 0;  // the lowest chunk that threw, and its exception (under mu)
  std::exception_ptr err;
  int started = 0;  // worker threads (only the owner of the pool starts more)

  static std::uint32_t gen_of(std::uint64_t v) { return static_cast<std::uint32_t>(v >> 32); }
  bool take_seat(std::uint32_t g) {
    std::uint64_t v = seats.load();
    do {
      if (gen_of(v) != g || (v & 0xFFFFFFFFu) == 0) return false;
    } while (!seats.compare_exchange_weak(v, v - 1));
    return true;
  }
  // claims and runs chunks of job g until none is left
  void work(std::uint32_t g) {
    for (;;) {
      std::uint64_t v = claim.load();
      do {
        if (gen_of(v) != g || idx(v & 0xFFFFFFFFu) >= n.load()) return;
      } while (!claim.compare_exchange_weak(v, v + 1));
      const idx c = idx(v & 0xFFFFFFFFu);
      try {
        fn(ctx, c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu);
        if (c < err_chunk) {
          err_chunk = c;
          err = std::current_exception();
        }
      }
      if (done.fetch_add(1) + 1 == n.load()) {
        std::lock_guard<std::mutex> lk(mu);
        finished.notify_all();
      }
    }
  }

  void loop() {
    std::uint32_t seen = gen.load();
    for (;;) {
      auto ready = [&] { return gen.load(std::memory_order_acquire) != seen; };
      if (!spin(ready)) {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, ready);
      }
      seen = gen.load();
      if (take_seat(seen)) work(seen);
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
  if (t <= 1 || n_chunks >= kMaxChunks || !acquire()) {
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
  // nothing of the last job is in use: its chunks are all done, and a worker still inside it finds no
  // chunk of its generation left to claim
  const std::uint32_t g = p.gen.load() + 1;
  p.fn = fn;
  p.ctx = ctx;
  p.n.store(n_chunks);
  p.err_chunk = n_chunks;
  p.err = nullptr;
  p.done.store(0);
  p.claim.store(std::uint64_t(g) << 32);
  p.seats.store(std::uint64_t(g) << 32 | std::uint64_t(t - 1));
  {
    std::lock_guard<std::mutex> lk(p.mu);
    p.gen.store(g);
  }
  for (idx k = 0; k < t - 1; ++k) p.wake.notify_one();  // the sleeping workers a job needs, not all of them
  p.work(g);
  auto all_done = [&] { return p.done.load() == n_chunks; };
  if (!spin(all_done)) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.finished.wait(lk, all_done);
  }
  if (p.err) std::rethrow_exception(p.err);
}

}  // namespace fastmlp
