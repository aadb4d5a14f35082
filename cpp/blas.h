// Matrix products through OpenBLAS (the scipy-openblas32 build, symbols
// prefixed scipy_). Row-major: C = alpha * op(A) op(B) + beta * C.
#pragma once
#include "common.h"

namespace fastmlp {

// op(A) is (M, K), op(B) is (K, N), C is (M, N); lda/ldb/ldc are row strides.
template <class T>
void gemm(bool trans_a, bool trans_b, idx M, idx N, idx K, T alpha, const T* A, idx lda,
          const T* B, idx ldb, T beta, T* C, idx ldc);

void blas_set_num_threads(int n);
int blas_get_num_threads();

// n threads (OpenBLAS's and the pool's, as blas_set_num_threads) for the scope's
// lifetime, then those before it; n <= 0 changes nothing. Only what differs is set:
// OpenBLAS's setter takes a lock even when nothing changes.
class ThreadsScope {
 public:
  explicit ThreadsScope(int n);
  ~ThreadsScope();
  ThreadsScope(const ThreadsScope&) = delete;
  ThreadsScope& operator=(const ThreadsScope&) = delete;

 private:
  int blas_ = 0, pool_ = 0;  // what to restore (0: nothing)
};
std::string blas_core_name();
std::string blas_config();

}  // namespace fastmlp
