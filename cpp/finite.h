// Finiteness checks, vectorized: the training loop checks each gathered batch
// (already in cache for its products) instead of a separate pass over the data.
#pragma once
#include <atomic>
#include <string>

#include "common.h"

namespace fastmlp {

// Set by whoever reads an input and meets a NaN or infinity in it, on any thread: a check folded into a
// pass that reads the data anyway (the first Linear's packing of x in predict, gemm.h).
struct FiniteProbe {
  std::atomic<bool> bad{false};
  void saw(bool finite) { if (!finite) bad.store(true, std::memory_order_relaxed); }
};

// True if none of p (n) is NaN or infinite.
template <class T>
bool all_finite(const T* p, idx n);

// Throws value_error "<what> contains NaN or infinity (row r)" naming the first
// such row of x (rows, cols) if there is one: row r of x is row index[r] of the
// caller's data if index is given, else first_row + r.
template <class T>
void check_rows_finite(const T* x, idx rows, idx cols, const char* what, idx first_row, const idx* index = nullptr);

// The same for x's rows in place (no index), read by up to `threads` of the pool's threads (pool.h).
template <class T>
void check_rows_finite_parallel(const T* x, idx rows, idx cols, const char* what, idx first_row, int threads);

}  // namespace fastmlp
