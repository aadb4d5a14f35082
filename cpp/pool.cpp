#include "pool.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
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

// Runs go(ctx, t) for every t in [0, n) at once, t = 0 on the calling thread
// and the others on the pool's workers (on the caller, after its own, where a
// worker cannot start); errs[t] gets what t threw. n <= kMaxTeam.
constexpr idx kMaxTeam = 64;
using TeamFn = void (*)(void* ctx, idx t);
void team(idx n, TeamFn go, void* ctx, std::exception_ptr* errs) {
  struct Member {
    TeamFn go;
    void* ctx;
    idx t;
    static void run(void* p) {
      auto* m = static_cast<Member*>(p);
      m->go(m->ctx, m->t);
    }
  } members[kMaxTeam];
  auto& ws = workers();
  if (static_cast<idx>(ws.size()) < n - 1) ws.resize(n - 1);
  idx posted = 1;  // members [1, posted) are on workers
  for (; posted < n; ++posted) {
    members[posted] = {go, ctx, posted};
    try {
      worker_for(ws[posted - 1]).post(&Member::run, &members[posted]);
    } catch (...) {  // a thread that cannot start: the caller runs the rest
      break;
    }
  }
  auto here = [&](idx t) {
    try {
      go(ctx, t);
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
}
}  // namespace

void pool_set_threads(int n) { g_threads.store(std::max(1, n), std::memory_order_relaxed); }
int pool_threads() { return g_threads.load(std::memory_order_relaxed); }

void parallel_for(int threads, idx n_chunks, ChunkFn fn, void* ctx) {
  const idx n = std::min<idx>({std::max(1, threads), n_chunks, kMaxTeam});
  if (n <= 1 || !acquire()) {
    for (idx c = 0; c < n_chunks; ++c) fn(ctx, c);
    return;
  }
  struct Release { ~Release() { release(); } } guard;
  struct Runs {  // thread t runs chunks [n_chunks t / n, n_chunks (t + 1) / n)
    ChunkFn fn;
    void* ctx;
    idx n_chunks, n;
    static void go(void* p, idx t) {
      auto* r = static_cast<Runs*>(p);
      for (idx c = r->n_chunks * t / r->n; c < r->n_chunks * (t + 1) / r->n; ++c) r->fn(r->ctx, c);
    }
  } runs{fn, ctx, n_chunks, n};
  std::exception_ptr errs[kMaxTeam];
  team(n, &Runs::go, &runs, errs);
  for (idx t = 0; t < n; ++t)
    if (errs[t]) std::rethrow_exception(errs[t]);
}

void parallel_take(int threads, idx n_chunks, ChunkFn fn, void* ctx) {
  const idx n = std::min<idx>({std::max(1, threads), n_chunks, kMaxTeam});
  struct Take {
    ChunkFn fn;
    void* ctx;
    idx n_chunks;
    std::atomic<idx> next{0};
    std::mutex mu;
    idx failed = -1;  // the lowest chunk that threw, and what it threw
    std::exception_ptr error;
    static void go(void* p, idx) {
      auto* k = static_cast<Take*>(p);
      for (idx c; (c = k->next.fetch_add(1, std::memory_order_relaxed)) < k->n_chunks;) {
        try {
          k->fn(k->ctx, c);
        } catch (...) {
          std::lock_guard<std::mutex> lk(k->mu);
          if (k->failed < 0 || c < k->failed) {
            k->failed = c;
            k->error = std::current_exception();
          }
        }
      }
    }
  } take{fn, ctx, n_chunks, {0}, {}, -1, nullptr};
  if (n <= 1 || !acquire()) {
    Take::go(&take, 0);
  } else {
    struct Release { ~Release() { release(); } } guard;
    std::exception_ptr errs[kMaxTeam];  // (go catches everything)
    team(n, &Take::go, &take, errs);
  }
  if (take.error) std::rethrow_exception(take.error);
}

}  // namespace fastmlp
