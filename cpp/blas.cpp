#include "blas.h"

#include <algorithm>
#include <mutex>

#include <cblas.h>

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

// Tiles of at least kTileWork multiply-adds and kTileSide rows or columns along a cut dimension (cut at
// multiples of 16, whole register blocks of the kernels), at most kMaxTiles. Each tile repacks its
// operands (OpenBLAS packs each once per call), so tiles cost time on one thread: measured on the large
// config's products (one thread, CPU time), 4M multiply-adds and 64-wide tiles (up to 64 per product)
// cost 35-50%, 64M and 256-wide (4-8 per product) 15%.
constexpr double kTileWork = double(1 << 26);
constexpr idx kTileSide = 256, kMaxTiles = 64, kAlign = 16;

TileGrid gemm_tiles(idx M, idx N, idx K) {
  TileGrid g;
  const double work = double(M) * double(N) * double(std::max<idx>(K, 1));
  const double want = std::min(double(kMaxTiles), work / kTileWork);
  // halve the longer tile side while the grid is short of `want` tiles and the halves stay wide enough
  while (double(g.tm * g.tn * 2) <= want) {
    const idx rows = M / g.tm, cols = N / g.tn;
    const bool cut_m = rows / 2 >= kTileSide && (rows >= cols || cols / 2 < kTileSide);
    if (cut_m) g.tm *= 2;
    else if (cols / 2 >= kTileSide) g.tn *= 2;
    else break;
  }
  return g;
}

namespace {
// The start of block i of n over a dimension of d: multiples of kAlign (the last ends at d).
idx block_start(idx d, idx n, idx i) { return i >= n ? d : d * i / n / kAlign * kAlign; }

template <class T>
struct TileJob {
  bool ta, tb;
  idx M, N, K;
  T alpha;
  const T* A;
  idx lda;
  const T* B;
  idx ldb;
  T beta;
  T* C;
  idx ldc;
  TileGrid g;
  static void run(void* ctx, idx t) {
    const auto& j = *static_cast<const TileJob*>(ctx);
    const idx bi = t / j.g.tn, bj = t % j.g.tn;
    const idx i0 = block_start(j.M, j.g.tm, bi), i1 = block_start(j.M, j.g.tm, bi + 1);
    const idx j0 = block_start(j.N, j.g.tn, bj), j1 = block_start(j.N, j.g.tn, bj + 1);
    // rows i0..i1 of op(A): A's rows (no transpose) or columns; columns j0..j1 of op(B) likewise
    const T* a = j.ta ? j.A + i0 : j.A + i0 * j.lda;
    const T* b = j.tb ? j.B + j0 * j.ldb : j.B + j0;
    cblas_gemm(j.ta ? CblasTrans : CblasNoTrans, j.tb ? CblasTrans : CblasNoTrans, to_blasint(i1 - i0),
               to_blasint(j1 - j0), to_blasint(j.K), j.alpha, a, to_blasint(j.lda), b, to_blasint(j.ldb), j.beta,
               j.C + i0 * j.ldc + j0, to_blasint(j.ldc));
  }
};

// OpenBLAS's own threads off from the start (fastmlp's pool runs the tiles)
const bool g_single = (scipy_openblas_set_num_threads(1), true);
}  // namespace

template <class T>
void gemm(bool ta, bool tb, idx M, idx N, idx K, T alpha, const T* A, idx lda, const T* B, idx ldb, T beta, T* C,
          idx ldc) {
  if (gemm_trivial(M, N, K, beta, C, ldc)) return;
  TileJob<T> job{ta, tb, M, N, K, alpha, A, to_blasint(lda), B, to_blasint(ldb), beta, C, to_blasint(ldc),
                 gemm_tiles(M, N, K)};
  to_blasint(M);
  to_blasint(N);
  to_blasint(K);
  parallel_for(pool_threads(), job.g.tm * job.g.tn, &TileJob<T>::run, &job);
}

template void gemm<float>(bool, bool, idx, idx, idx, float, const float*, idx, const float*, idx, float, float*, idx);
template void gemm<double>(bool, bool, idx, idx, idx, double, const double*, idx, const double*, idx, double, double*,
                           idx);

namespace {
std::mutex g_single_mu;
int g_single_depth = 0, g_single_saved = 1;
}  // namespace

BlasSingleThread::BlasSingleThread() {
  std::lock_guard<std::mutex> lk(g_single_mu);
  if (g_single_depth++ == 0) {
    g_single_saved = scipy_openblas_get_num_threads();
    if (g_single_saved != 1) scipy_openblas_set_num_threads(1);
  }
}
BlasSingleThread::~BlasSingleThread() {
  std::lock_guard<std::mutex> lk(g_single_mu);
  if (--g_single_depth == 0 && g_single_saved != 1) scipy_openblas_set_num_threads(g_single_saved);
}

void blas_set_num_threads(int n) {
  (void)g_single;
  pool_set_threads(n);
}
int blas_get_num_threads() { return pool_threads(); }
std::string blas_core_name() { return scipy_openblas_get_corename(); }
std::string blas_config() { return scipy_openblas_get_config(); }

}  // namespace fastmlp
