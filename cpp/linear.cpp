#include "linear.h"

#include "activations.h"
#include "blas.h"
#include "gemm.h"
#include "pool.h"

namespace fastmlp {

namespace {
// db (out) (+)= sum over the B rows of dy (B, out)
template <class T>
FASTMLP_SIMD void column_sums(const T* dy, T* db, idx B, idx out, bool accumulate) {
  if (!accumulate)
    for (idx j = 0; j < out; ++j) db[j] = T(0);
  for (idx r = 0; r < B; ++r) {
    const T* dyr = dy + r * out;
    for (idx j = 0; j < out; ++j) db[j] += dyr[j];
  }
}
}  // namespace

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, bool fixed_order) {
  if (fixed_order) return dense_forward<T>(x, w, b, y, B, in, out, pool_threads());
  // y = x w^T, then + b on every row
  gemm<T>(false, true, B, out, in, T(1), x, in, w, in, T(0), y, out);
  if (b) bias_activation_forward(Act::Identity, y, b, y, B, out, 0.0);
}

template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, idx B, idx in,
                     idx out, bool accumulate) {
  const T beta = accumulate ? T(1) : T(0);
  // dw (out, in) (+)= dy^T (out, B) x (B, in)
  gemm<T>(true, false, out, in, B, T(1), dy, out, x, in, beta, dw, in);
  if (db) column_sums(dy, db, B, out, accumulate);
  // dx (B, in) = dy (B, out) w (out, in)
  if (dx) gemm<T>(false, false, B, in, out, T(1), dy, out, w, in, T(0), dx, in);
}

template void linear_forward<float>(const float*, const float*, const float*, float*, idx, idx, idx, bool);
template void linear_forward<double>(const double*, const double*, const double*, double*, idx, idx, idx, bool);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*, float*,
                                     idx, idx, idx, bool);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*,
                                      double*, idx, idx, idx, bool);

}  // namespace fastmlp
