#include "blas.h"

#include <cblas.h>
#include <pthread.h>

#include <mutex>

#include "pool.h"

namespace fastmlp {

namespace {
blasint to_blasint(idx v) {
  if (v < 0 || v > std::numeric_limits<blasint>::max())
    throw value_error("matrix dimension " + std::to_string(v) + " is out of range for 32-bit BLAS");
  return static_cast<blasint>(v);
}

// K == 0 or an empty output: BLAS is not asked, C = beta * C by hand.
template <class T>
bool gemm_trivial(idx M, idx N, idx K, T beta, T* C, idx ldc) {
  if (M == 0 || N == 0) return true;
  if (K != 0) return false;
  for (idx i = 0; i < M; ++i)
    for (idx j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
  return true;
}
}  // namespace

namespace {
// The two precisions' BLAS entry points, so that one template serves both.
void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K, float alpha, const float* A,
                blasint lda, const float* B, blasint ldb, float beta, float* C, blasint ldc) {
  scipy_cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void cblas_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blasint M, blasint N, blasint K, double alpha,
                const double* A, blasint lda, const double* B, blasint ldb, double beta, double* C, blasint ldc) {
  scipy_cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
}  // namespace

template <class T>
void gemm(bool ta, bool tb, idx M, idx N, idx K, T alpha, const T* A, idx lda, const T* B, idx ldb, T beta, T* C,
          idx ldc) {
  if (gemm_trivial(M, N, K, beta, C, ldc)) return;
  cblas_gemm(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, to_blasint(M), to_blasint(N),
             to_blasint(K), alpha, A, to_blasint(lda), B, to_blasint(ldb), beta, C, to_blasint(ldc));
}

template void gemm<float>(bool, bool, idx, idx, idx, float, const float*, idx, const float*, idx, float, float*, idx);
template void gemm<double>(bool, bool, idx, idx, idx, double, const double*, idx, const double*, idx, double, double*,
                           idx);

namespace {
// OpenBLAS's set_num_threads takes its thread server's lock; a fork while another thread of ours is
// inside it leaves the child that lock held forever (its next set_num_threads hangs: seen with a
// predict loop in one thread and fork in another). Our calls hold this mutex, and fork takes it first.
std::mutex& openblas_threads_mu() {
  static std::mutex mu;
  static const int once = pthread_atfork([] { mu.lock(); }, [] { mu.unlock(); }, [] { mu.unlock(); });
  (void)once;
  return mu;
}
void set_openblas_threads(int n) {
  std::lock_guard<std::mutex> hold(openblas_threads_mu());
  scipy_openblas_set_num_threads(n);
}
}  // namespace

void blas_set_num_threads(int n) {  // n_threads bounds OpenBLAS's threads and fastmlp's together
  set_openblas_threads(n);
  pool_set_threads(n);
}
int blas_get_num_threads() { return scipy_openblas_get_num_threads(); }

ThreadsScope::ThreadsScope(int n) {
  if (n <= 0) return;
  if (const int b = scipy_openblas_get_num_threads(); b != n) {
    set_openblas_threads(n);
    blas_ = b;
  }
  if (const int p = pool_threads(); p != n) {
    pool_set_threads(n);
    pool_ = p;
  }
}
ThreadsScope::~ThreadsScope() {
  if (blas_) set_openblas_threads(blas_);
  if (pool_) pool_set_threads(pool_);
}
std::string blas_core_name() { return scipy_openblas_get_corename(); }
std::string blas_config() { return scipy_openblas_get_config(); }

}  // namespace fastmlp
