// Matrix products through OpenBLAS (the scipy-openblas32 build, symbols
// prefixed scipy_). Row-major: C = alpha * op(A) op(B) + beta * C.
//
// Threads: OpenBLAS itself runs single-threaded (its own threads would spin
// against fastmlp's pool and oversubscribe the cores): fastmlp sets it to one
// thread when it loads, and training (BlasSingleThread) sets it to one again
// in case another library (threadpoolctl) changed it. A product big
// enough to gain from threads is cut into a fixed grid of tiles of C, by rows
// (M) and columns (N) but never along K, chosen from (M, N, K) alone; each
// tile is one single-threaded OpenBLAS call, and the tiles are spread over
// pool_threads() threads of fastmlp's pool. A tile's bits do not depend on the
// thread that computes it, so every thread count gives the same product.
#pragma once
#include "common.h"

namespace fastmlp {

// op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides.
template <class T>
void gemm(bool trans_a, bool trans_b, idx M, idx N, idx K, T alpha, const T* A, idx lda,
          const T* B, idx ldb, T beta, T* C, idx ldc);

// The tile grid of a product: tm row blocks by tn column blocks (1 x 1: one call).
struct TileGrid {
  idx tm = 1, tn = 1;
};
TileGrid gemm_tiles(idx M, idx N, idx K);

// While one exists (in any thread), OpenBLAS runs one thread; the last one to go restores the count
// the first one found.
class BlasSingleThread {
 public:
  BlasSingleThread();
  ~BlasSingleThread();
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;
};

// n_threads: the threads of fastmlp's pool, which run the tiles (OpenBLAS stays at one).
void blas_set_num_threads(int n);
int blas_get_num_threads();
std::string blas_core_name();
std::string blas_config();

}  // namespace fastmlp
