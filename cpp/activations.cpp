#include "activations.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "vmath.h"

namespace fastmlp {

namespace {

// Each element-wise activation is a functor: fwd(x) = y and bwd(dy, x, y) = dL/dx.
// The loops below take it as a template argument, so every (loop, activation)
// pair is compiled into straight-line code, with an AVX-512, an AVX2 and a
// baseline clone chosen at run time.

// ---- Identity
struct IdentityF {
  template <class T> T fwd(T x) const { return x; }
  template <class T> T bwd(T dy, T, T) const { return dy; }
};

// ---- ReLU: y = max(x, 0); dy/dx = 1 where x > 0 (0 at x == 0, as PyTorch)
struct ReLUF {
  template <class T> T fwd(T x) const { return x > T(0) ? x : T(0); }
  template <class T> T bwd(T dy, T, T y) const { return y > T(0) ? dy : T(0); }
};

// ---- LeakyReLU: y = x if x > 0 else slope * x
struct LeakyReLUF {
  double slope;
  template <class T> T fwd(T x) const { return x > T(0) ? x : T(slope) * x; }
  template <class T> T bwd(T dy, T x, T) const { return x > T(0) ? dy : T(slope) * dy; }
};

// ---- Sigmoid: y = 1 / (1 + e^-x), with e = e^-|x| so that nothing overflows
struct SigmoidF {
  template <class T> T fwd(T x) const {
    const T e = vexp(-std::fabs(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  }
  template <class T> T bwd(T dy, T, T y) const { return dy * y * (T(1) - y); }
};

// ---- Tanh: dy/dx = 1 - y^2
struct TanhF {
  template <class T> T fwd(T x) const { return vtanh(x); }
  template <class T> T bwd(T dy, T, T y) const { return dy * (T(1) - y * y); }
};

// ---- GELU (erf form): y = x * Phi(x); dy/dx = Phi(x) + x * phi(x)
struct GELUF {
  template <class T> T fwd(T x) const { return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440))); }
  template <class T> T bwd(T dy, T x, T) const {
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.70710678118654752440)));
    const T pdf = T(0.39894228040143267794) * std::exp(T(-0.5) * x * x);
    return dy * (cdf + x * pdf);
  }
};

// y (n) = f(x)
template <class T, class F> FASTMLP_SIMD void map_forward(const T* x, T* y, idx n, F f) {
  for (idx i = 0; i < n; ++i) y[i] = f.fwd(x[i]);
}
// dx (n) = f'(dy, x, y)
template <class T, class F> FASTMLP_SIMD void map_backward(const T* dy, const T* x, const T* y, T* dx, idx n, F f) {
  for (idx i = 0; i < n; ++i) dx[i] = f.bwd(dy[i], x[i], y[i]);
}
// Rows are taken in blocks of about kBlock elements: small enough to stay in
// cache between the bias pass and the activation pass, and the activation runs
// over the whole contiguous block, not row by row (a row's last few elements
// would otherwise go through the scalar remainder loop).
constexpr idx kBlock = 8192;

// pre (B, C) += b (C) (if b), y (B, C) = f(pre)
template <class T, class F> FASTMLP_SIMD void bias_map_forward(T* pre, const T* b, T* y, idx B, idx C, F f) {
  const idx R = std::max<idx>(1, kBlock / std::max<idx>(C, 1));
  for (idx r0 = 0; r0 < B; r0 += R) {
    const idx r1 = std::min(B, r0 + R);
    if (b)
      for (idx r = r0; r < r1; ++r)
        for (idx j = 0; j < C; ++j) pre[r * C + j] += b[j];
    T* p = pre + r0 * C;
    T* q = y + r0 * C;
    const idx n = (r1 - r0) * C;
    for (idx i = 0; i < n; ++i) q[i] = f.fwd(p[i]);
  }
}
// dx (B, C) = f'(dy, x, y), db (C) += its column sums (if db)
template <class T, class F>
FASTMLP_SIMD void map_bias_backward(const T* dy, const T* x, const T* y, T* dx, T* db, idx B, idx C, F f) {
  const idx R = std::max<idx>(1, kBlock / std::max<idx>(C, 1));
  for (idx r0 = 0; r0 < B; r0 += R) {
    const idx r1 = std::min(B, r0 + R), o = r0 * C, n = (r1 - r0) * C;
    for (idx i = 0; i < n; ++i) dx[o + i] = f.bwd(dy[o + i], x[o + i], y[o + i]);
    if (db)
      for (idx r = r0; r < r1; ++r)
        for (idx j = 0; j < C; ++j) db[j] += dx[r * C + j];
  }
}

// Calls fn with the functor of an element-wise activation (not Softmax).
template <class Fn> void with_functor(Act a, double param, Fn fn) {
  switch (a) {
    case Act::Identity: fn(IdentityF{}); break;
    case Act::ReLU: fn(ReLUF{}); break;
    case Act::LeakyReLU: fn(LeakyReLUF{param}); break;
    case Act::Sigmoid: fn(SigmoidF{}); break;
    case Act::Tanh: fn(TanhF{}); break;
    case Act::GELU: fn(GELUF{}); break;
    case Act::Softmax: break;
  }
}

// ---- Softmax over each row of (B, C), shifted by the row maximum
template <class T> void softmax_forward(const T* x, T* y, idx B, idx C) {
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T m = -std::numeric_limits<T>::infinity();
    for (idx j = 0; j < C; ++j) m = std::max(m, xr[j]);
    T s = T(0);
    for (idx j = 0; j < C; ++j) { yr[j] = std::exp(xr[j] - m); s += yr[j]; }
    T inv = T(1) / s;
    for (idx j = 0; j < C; ++j) yr[j] *= inv;
  }
}
// Jacobian-vector product: dx_j = y_j * (dy_j - sum_k dy_k y_k)
template <class T> void softmax_backward(const T* dy, const T* y, T* dx, idx B, idx C) {
  for (idx r = 0; r < B; ++r) {
    const T* dyr = dy + r * C;
    const T* yr = y + r * C;
    T* dxr = dx + r * C;
    T dot = T(0);
    for (idx j = 0; j < C; ++j) dot += dyr[j] * yr[j];
    for (idx j = 0; j < C; ++j) dxr[j] = yr[j] * (dyr[j] - dot);
  }
}

}  // namespace

template <class T>
void activation_forward(Act a, const T* x, T* y, idx B, idx C, double param) {
  const idx n = checked_mul(B, C);
  if (a == Act::Softmax) return softmax_forward(x, y, B, C);
  with_functor(a, param, [&](auto f) { map_forward(x, y, n, f); });
}

template <class T>
void activation_backward(Act a, const T* dy, const T* x, const T* y, T* dx, idx B, idx C,
                         double param) {
  const idx n = checked_mul(B, C);
  if (a == Act::Softmax) return softmax_backward(dy, y, dx, B, C);
  with_functor(a, param, [&](auto f) { map_backward(dy, x, y, dx, n, f); });
}

template <class T>
void bias_activation_forward(Act a, T* pre, const T* b, T* y, idx B, idx C, double param) {
  if (a == Act::Softmax) {
    if (b) bias_map_forward(pre, b, pre, B, C, IdentityF{});
    return softmax_forward(pre, y, B, C);
  }
  with_functor(a, param, [&](auto f) { bias_map_forward(pre, b, y, B, C, f); });
}

template <class T>
void activation_bias_backward(Act a, const T* dy, const T* x, const T* y, T* dx, T* db, idx B, idx C,
                              double param, bool accumulate) {
  if (db && !accumulate) std::fill(db, db + C, T(0));
  if (a == Act::Softmax) {
    softmax_backward(dy, y, dx, B, C);
    if (db) map_bias_backward(dx, x, y, dx, db, B, C, IdentityF{});
    return;
  }
  with_functor(a, param, [&](auto f) { map_bias_backward(dy, x, y, dx, db, B, C, f); });
}

template void bias_activation_forward<float>(Act, float*, const float*, float*, idx, idx, double);
template void bias_activation_forward<double>(Act, double*, const double*, double*, idx, idx, double);
template void activation_bias_backward<float>(Act, const float*, const float*, const float*, float*, float*, idx,
                                              idx, double, bool);
template void activation_bias_backward<double>(Act, const double*, const double*, const double*, double*, double*,
                                               idx, idx, double, bool);
template void activation_forward<float>(Act, const float*, float*, idx, idx, double);
template void activation_forward<double>(Act, const double*, double*, idx, idx, double);
template void activation_backward<float>(Act, const float*, const float*, const float*, float*, idx,
                                         idx, double);
template void activation_backward<double>(Act, const double*, const double*, const double*, double*,
                                          idx, idx, double);

}  // namespace fastmlp
