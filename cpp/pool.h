// fastmlp's own threads for row-parallel loops (the forward products, fit's
// batch chunks). One
// process-wide pool of Workers (worker.h: spin briefly, then sleep; restarted
// in a forked child). A call that finds the pool in use by another call runs
// its chunks on the calling thread: callers never wait for each other, and
// since every chunk's result is independent of which thread computes it, any
// split gives the same bits.
#pragma once
#include "common.h"

namespace fastmlp {

// Threads a parallel_for may use, the caller included (>= 1). Default: the
// hardware threads. Set together with OpenBLAS's (blas_set_num_threads).
void pool_set_threads(int n);
int pool_threads();

// Runs fn(ctx, c) for every chunk c in [0, n_chunks), split into contiguous
// runs of chunks over up to `threads` threads (the caller runs the first run).
// Returns when all are done; rethrows the exception of the lowest run that threw.
using ChunkFn = void (*)(void* ctx, idx chunk);
void parallel_for(int threads, idx n_chunks, ChunkFn fn, void* ctx);

// The same, but each of the up to `threads` threads takes the next chunk not yet
// taken, so a descheduled thread's chunks go to the others (for few, large chunks:
// fit's batch chunks). Rethrows the exception of the lowest chunk that threw.
void parallel_take(int threads, idx n_chunks, ChunkFn fn, void* ctx);

}  // namespace fastmlp
