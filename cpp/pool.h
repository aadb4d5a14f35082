// fastmlp's own threads: one process-wide pool that runs every parallel loop
// of the engine (fit's row chunks, the tiles of a product, the eval-mode
// forwards). A loop is a number of chunks whose results do not depend on which
// thread computes them; the threads claim chunks one at a time from a shared
// counter, so a descheduled thread's chunks are taken by the others, and any
// number of threads gives the same bits. Waiting spins briefly (a chunk takes
// microseconds), then sleeps on a condition variable. A call that finds the
// pool in use by another call (a nested loop, a second Python thread) runs its
// chunks on the calling thread. A child forked while the pool ran starts a
// pool of its own.
#pragma once
#include "common.h"

namespace fastmlp {

// Threads a parallel_for may use, the caller included (>= 1). Default: the
// hardware threads. n_threads sets it (blas_set_num_threads).
void pool_set_threads(int n);
int pool_threads();

// Runs fn(ctx, c) for every chunk c in [0, n_chunks) on up to `threads`
// threads (the caller is one of them). Returns when all are done; rethrows the
// exception of the lowest chunk that threw (every chunk runs).
using ChunkFn = void (*)(void* ctx, idx chunk);
void parallel_for(int threads, idx n_chunks, ChunkFn fn, void* ctx);

}  // namespace fastmlp
