#include "activations.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "layer.h"
#include "vmath.h"

namespace fastmlp {

namespace {

// Each element-wise activation is a functor: fwd(x) = y and bwd(dy, x, y) = dL/dx.
// The loops below take it as a template argument, so every (loop, activation)
// pair is compiled into straight-line code, with an AVX-512, an AVX2 and a
// baseline clone chosen at run time.

// ---- Identity
struct IdentityF {
  static constexpr bool needs_input = false;
  IdentityF() = default;
  explicit IdentityF(const Options&) {}
  template <class T> T fwd(T x) const { return x; }
  template <class T> T bwd(T dy, T, T) const { return dy; }
};

// ---- ReLU: y = max(x, 0); dy/dx = 1 where x > 0 (0 at x == 0, as PyTorch)
struct ReLUF {
  static constexpr bool needs_input = false;
  explicit ReLUF(const Options&) {}
  template <class T> T fwd(T x) const { return x > T(0) ? x : T(0); }
  template <class T> T bwd(T dy, T, T y) const { return y > T(0) ? dy : T(0); }
};

// ---- LeakyReLU: y = x if x > 0 else slope * x
struct LeakyReLUF {
  static constexpr bool needs_input = true;
  double slope;
  explicit LeakyReLUF(const Options& o) : slope(o.number("negative_slope", 0.01)) {}
  template <class T> T fwd(T x) const { return x > T(0) ? x : T(slope) * x; }
  template <class T> T bwd(T dy, T x, T) const { return x > T(0) ? dy : T(slope) * dy; }
};

// ---- Sigmoid: y = 1 / (1 + e^-x), with e = e^-|x| so that nothing overflows
struct SigmoidF {
  static constexpr bool needs_input = false;
  explicit SigmoidF(const Options&) {}
  template <class T> T fwd(T x) const {
    const T e = vexp(-std::fabs(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  }
  template <class T> T bwd(T dy, T, T y) const { return dy * y * (T(1) - y); }
};

// ---- Tanh: dy/dx = 1 - y^2
struct TanhF {
  static constexpr bool needs_input = false;
  explicit TanhF(const Options&) {}
  template <class T> T fwd(T x) const { return vtanh(x); }
  template <class T> T bwd(T dy, T, T y) const { return dy * (T(1) - y * y); }
};

// ---- GELU (erf form): y = x * Phi(x); dy/dx = Phi(x) + x * phi(x)
struct GELUF {
  static constexpr bool needs_input = true;
  explicit GELUF(const Options&) {}
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

// ---- the layers
// An element-wise activation: F's fwd/bwd over every element, and the fused
// epilogue of a preceding Linear (bias + F in one pass over the product).
template <class T, class F>
class ElementwiseLayer final : public Layer<T>, public Epilogue<T> {
 public:
  explicit ElementwiseLayer(const Options& o) : f_(o) {}
  idx out_width(idx in) const override { return in; }
  bool backward_needs_input() const override { return F::needs_input; }
  const Epilogue<T>* epilogue() const override { return this; }
  // x, y are (B, C)
  void forward(const LayerIO<T>& io) const override { map_forward(io.x, io.y, checked_mul(io.B, io.in), f_); }
  // dy, dx are (B, C)
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    map_backward(dy, io.x, io.y, dx, io.B * io.in, f_);
  }
  // pre (B, C) += b (C), y (B, C) = f(pre)
  void bias_forward(T* pre, const T* b, T* y, idx B, idx C) const override { bias_map_forward(pre, b, y, B, C, f_); }
  // dpre (B, C) = f'(dy, pre, y), db (C) (+)= its column sums
  void bias_backward(const T* dy, const T* pre, const T* y, T* dpre, T* db, idx B, idx C,
                     bool accumulate) const override {
    if (db && !accumulate) std::fill(db, db + C, T(0));
    map_bias_backward(dy, pre, y, dpre, db, B, C, f_);
  }

 private:
  F f_;
};

// Softmax over the features of each row (dim=1 of a (B, C) batch).
template <class T>
class SoftmaxLayer final : public Layer<T>, public Epilogue<T> {
 public:
  explicit SoftmaxLayer(const Options&) {}
  idx out_width(idx in) const override { return in; }
  bool backward_needs_input() const override { return false; }
  const Epilogue<T>* epilogue() const override { return this; }
  void forward(const LayerIO<T>& io) const override { softmax_forward(io.x, io.y, io.B, io.in); }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override { softmax_backward(dy, io.y, dx, io.B, io.in); }
  void bias_forward(T* pre, const T* b, T* y, idx B, idx C) const override {
    if (b) bias_map_forward(pre, b, pre, B, C, IdentityF{});
    softmax_forward(pre, y, B, C);
  }
  void bias_backward(const T* dy, const T* pre, const T* y, T* dpre, T* db, idx B, idx C,
                     bool accumulate) const override {
    if (db && !accumulate) std::fill(db, db + C, T(0));
    softmax_backward(dy, y, dpre, B, C);
    if (db) map_bias_backward(dpre, pre, y, dpre, db, B, C, IdentityF{});
  }
};

template <class T> using IdentityLayer = ElementwiseLayer<T, IdentityF>;
template <class T> using ReLULayer = ElementwiseLayer<T, ReLUF>;
template <class T> using LeakyReLULayer = ElementwiseLayer<T, LeakyReLUF>;
template <class T> using SigmoidLayer = ElementwiseLayer<T, SigmoidF>;
template <class T> using TanhLayer = ElementwiseLayer<T, TanhF>;
template <class T> using GELULayer = ElementwiseLayer<T, GELUF>;

}  // namespace

FASTMLP_REGISTER_LAYER("identity", IdentityLayer);
FASTMLP_REGISTER_LAYER("relu", ReLULayer);
FASTMLP_REGISTER_LAYER("leaky_relu", LeakyReLULayer);
FASTMLP_REGISTER_LAYER("sigmoid", SigmoidLayer);
FASTMLP_REGISTER_LAYER("tanh", TanhLayer);
FASTMLP_REGISTER_LAYER("gelu", GELULayer);
FASTMLP_REGISTER_LAYER("softmax", SoftmaxLayer);

template <class T>
void bias_identity_forward(T* y, const T* b, idx B, idx C) {
  bias_map_forward(y, b, y, B, C, IdentityF{});
}
template void bias_identity_forward<float>(float*, const float*, idx, idx);
template void bias_identity_forward<double>(double*, const double*, idx, idx);

}  // namespace fastmlp
