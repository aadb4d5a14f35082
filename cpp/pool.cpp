#include "pool.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <thread>
#include <vector>

#include <unistd.h>

#include "worker.h"

namespace fastmlp {

namespace {
std::atomic<int> g_threads{std::max(1, static_cast<int>(std::thread::hardware_concurrency()))};

// The pool is owned by the call that set `owner` to its process id. A child
// forked while a parent's thread owned it finds another pid there and takes it.
std::atomic<long> owner{0};
// Never destroyed: its threads sleep in a condition wait at exit.
std::vector<std::unique_ptr<Worker>>& workers() {
  static auto* w = new std::vector<std::unique_ptr<Worker>>();
  return *w;
}

bool acquire() {
  const long me = static_cast<long>(getpid());
  long seen = 0;
  if (owner.compare_exchange_strong(seen, me, std::memory_order_acquire)) return true;
  return seen != me && owner.compare_exchange_strong(seen, me, std::memory_order_acquire);
}
void release() { owner.store(0, std::memory_order_release); }

struct Run {
  ChunkFn fn;
  void* ctx;
  idx begin, end;
  static void go(void* p) {
    Run* r = static_cast<Run*>(p);
    for (idx c = r->begin; c < r->end; ++c) r->fn(r->ctx, c);
  }
};
}  // namespace

void pool_set_threads(int n) { g_threads.store(std::max(1, n), std::memory_order_relaxed); }
int pool_threads() { return g_threads.load(std::memory_order_relaxed); }

void parallel_for(int threads, idx n_chunks, ChunkFn fn, void* ctx) {
  constexpr idx kMaxRuns = 64;
  const idx n = std::min<idx>({std::max(1, threads), n_chunks, kMaxRuns});
  if (n <= 1 || !acquire()) {
    for (idx c = 0; c < n_chunks; ++c) fn(ctx, c);
    return;
  }
  struct Release { ~Release() { release(); } } guard;
  auto& ws = workers();
  if (static_cast<idx>(ws.size()) < n - 1) ws.resize(n - 1);
  Run runs[kMaxRuns];
  std::exception_ptr errs[kMaxRuns];
  for (idx t = 0; t < n; ++t) runs[t] = {fn, ctx, n_chunks * t / n, n_chunks * (t + 1) / n};
  idx posted = 1;  // runs [1, posted) are on workers
  for (; posted < n; ++posted) {
    try {
      worker_for(ws[posted - 1]).post(&Run::go, &runs[posted]);
    } catch (...) {  // a thread that cannot start: the caller runs the rest
      break;
    }
  }
  auto here = [&](idx t) {
    try {
      Run::go(&runs[t]);
    } catch (...) {
      errs[t] = std::current_exception();
    }
  };
  here(0);
  for (idx t = posted; t < n; ++t) here(t);
  for (idx t = 1; t < posted; ++t) {
    try {
      ws[t - 1]->wait();
    } catch (...) {
      errs[t] = std::current_exception();
    }
  }
  for (idx t = 0; t < n; ++t)
    if (errs[t]) std::rethrow_exception(errs[t]);
}

}  // namespace fastmlp
