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

// 1 / (1 + e^-x), with e = e^-|x| so that nothing overflows
template <class T> FASTMLP_VINLINE T sigmoid(T x) {
  const T e = vexp(-std::fabs(x));
  return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}
// log(1 + e^x) = max(x, 0) + log1p(e^-|x|): no overflow, and e^x itself for x << 0
template <class T> FASTMLP_VINLINE T softplus(T x) { return std::max(x, T(0)) + vlog1p(vexp(-std::fabs(x))); }

// ---- Sigmoid
struct SigmoidF {
  static constexpr bool needs_input = false;
  explicit SigmoidF(const Options&) {}
  template <class T> T fwd(T x) const { return sigmoid(x); }
  template <class T> T bwd(T dy, T, T y) const { return dy * y * (T(1) - y); }
};

// ---- Tanh: dy/dx = 1 - y^2
struct TanhF {
  static constexpr bool needs_input = false;
  explicit TanhF(const Options&) {}
  template <class T> T fwd(T x) const { return vtanh(x); }
  template <class T> T bwd(T dy, T, T y) const { return dy * (T(1) - y * y); }
};

// ---- GELU (erf form): y = x * Phi(x); dy/dx = Phi(x) + x * phi(x). verf is long enough that GCC
// leaves fwd/bwd out of line (a scalar call per element, no vectorization) unless forced in, as for
// both GELU forms here.
struct GELUF {
  static constexpr bool needs_input = true;
  explicit GELUF(const Options&) {}
  template <class T> FASTMLP_VINLINE T fwd(T x) const {
    return T(0.5) * x * (T(1) + verf(x * T(0.70710678118654752440)));
  }
  template <class T> FASTMLP_VINLINE T bwd(T dy, T x, T) const {
    const T cdf = T(0.5) * (T(1) + verf(x * T(0.70710678118654752440)));
    const T pdf = T(0.39894228040143267794) * vexp(T(-0.5) * x * x);
    return dy * (cdf + x * pdf);
  }
};

// ---- GELU (approximate='tanh'): y = x/2 (1 + tanh(z)), z = k (x + 0.044715 x^3), k = sqrt(2/pi),
// computed as x sigmoid(2z) (1 + tanh(z) = 2 sigmoid(2z): no cancellation for x << 0);
// dy/dx = s + 2 x s (1 - s) k (1 + 3 * 0.044715 x^2), s = sigmoid(2z). Beyond |x| = 100, s is 0 or
// 1 to the last bit, so x is clamped there inside s and the second term (no x^3 overflow, no 0 * inf).
struct GELUTanhF {
  static constexpr bool needs_input = true;
  static constexpr double k = 0.79788456080286535588, c = 0.044715;
  explicit GELUTanhF(const Options&) {}
  template <class T> static FASTMLP_VINLINE T s_of(T xc) { return sigmoid(T(2 * k) * (xc + T(c) * xc * xc * xc)); }
  template <class T> static FASTMLP_VINLINE T clamp(T x) { return std::min(std::max(x, T(-100)), T(100)); }
  template <class T> FASTMLP_VINLINE T fwd(T x) const { return x * s_of(clamp(x)); }
  template <class T> FASTMLP_VINLINE T bwd(T dy, T x, T) const {
    const T xc = clamp(x), s = s_of(xc);
    return dy * (s + T(2) * xc * s * (T(1) - s) * T(k) * (T(1) + T(3 * c) * xc * xc));
  }
};

// ---- ELU(alpha): x if x > 0 else alpha (e^x - 1); CELU(alpha) is ELU with e^(x / alpha) and
// SELU is scale * ELU(1.6732...). dy/dx = scale for x > 0, else scale * alpha * e^(x / alpha) / alpha
// (the x <= 0 branch at 0, as PyTorch's elu_backward). The exponent is min(x, 0) / alpha: no overflow.
struct ELUF {
  static constexpr bool needs_input = true;
  double alpha, scale, inv;  // inv: the input scale 1 / alpha (CELU) or 1
  ELUF(double a, double s, double i) : alpha(a), scale(s), inv(i) {}
  explicit ELUF(const Options& o) : ELUF(o.number("alpha", 1.0), 1.0, 1.0) {}
  template <class T> T fwd(T x) const {
    const T neg = T(alpha) * vexpm1(std::min(x, T(0)) * T(inv));
    return T(scale) * (x > T(0) ? x : neg);
  }
  template <class T> T bwd(T dy, T x, T) const {
    const T neg = T(alpha * inv) * vexp(std::min(x, T(0)) * T(inv));
    return dy * T(scale) * (x > T(0) ? T(1) : neg);
  }
};
struct CELUF : ELUF {
  explicit CELUF(const Options& o) : ELUF(o.number("alpha", 1.0), 1.0, 1.0 / o.number("alpha", 1.0)) {
    if (alpha == 0) throw value_error("CELU: alpha must not be 0");
  }
};
struct SELUF : ELUF {
  explicit SELUF(const Options&) : ELUF(1.6732632423543772848170429916717, 1.0507009873554804934193349852946, 1.0) {}
};

// ---- SiLU: y = x sigmoid(x); dy/dx = s (1 + x (1 - s))
struct SiLUF {
  static constexpr bool needs_input = true;
  explicit SiLUF(const Options&) {}
  template <class T> T fwd(T x) const { return x * sigmoid(x); }
  template <class T> T bwd(T dy, T x, T) const {
    const T s = sigmoid(x);
    return dy * s * (T(1) + x * (T(1) - s));
  }
};

// ---- Mish: y = x tanh(softplus(x)). With u = e^x and n = u (u + 2): tanh(log(1 + u)) = n / (n + 2)
// and 1 - tanh^2 = 4 (n + 1) / (n + 2)^2, no cancellation; x is clamped at 20 for u (tanh is then 1
// to the last bit in double). dy/dx = t + x sigmoid(x) (1 - t^2).
struct MishF {
  static constexpr bool needs_input = true;
  explicit MishF(const Options&) {}
  template <class T> static T n_of(T x) {
    const T u = vexp(std::min(x, T(20)));
    return u * (u + T(2));
  }
  template <class T> T fwd(T x) const {
    const T n = n_of(x);
    return x * (n / (n + T(2)));
  }
  template <class T> T bwd(T dy, T x, T) const {
    const T n = n_of(x), d = n + T(2);
    return dy * (n / d + x * sigmoid(x) * (T(4) * (n + T(1)) / (d * d)));
  }
};

// ---- Softplus(beta, threshold): y = log(1 + e^(beta x)) / beta, or x where beta x > threshold;
// dy/dx = sigmoid(beta x) (1 there)
struct SoftplusF {
  static constexpr bool needs_input = true;
  double beta, threshold;
  explicit SoftplusF(const Options& o) : beta(o.number("beta", 1.0)), threshold(o.number("threshold", 20.0)) {
    if (beta == 0) throw value_error("Softplus: beta must not be 0");
  }
  template <class T> T fwd(T x) const {
    const T z = x * T(beta);
    return z > T(threshold) ? x : softplus(z) / T(beta);
  }
  template <class T> T bwd(T dy, T x, T) const {
    const T z = x * T(beta);
    return z > T(threshold) ? dy : dy * sigmoid(z);
  }
};

// ---- LogSigmoid: y = -softplus(-x); dy/dx = sigmoid(-x)
struct LogSigmoidF {
  static constexpr bool needs_input = true;
  explicit LogSigmoidF(const Options&) {}
  template <class T> T fwd(T x) const { return -softplus(-x); }
  template <class T> T bwd(T dy, T x, T) const { return dy * sigmoid(-x); }
};

// ---- Softsign: y = x / (1 + |x|); dy/dx = 1 / (1 + |x|)^2
struct SoftsignF {
  static constexpr bool needs_input = true;
  explicit SoftsignF(const Options&) {}
  template <class T> T fwd(T x) const { return x / (T(1) + std::fabs(x)); }
  template <class T> T bwd(T dy, T x, T) const {
    const T d = T(1) + std::fabs(x);
    return dy / (d * d);
  }
};

// ---- Hardtanh(min_val, max_val): y = clamp(x); dy/dx = 1 strictly inside (0 at the ends, as
// PyTorch); ReLU6 is Hardtanh(0, 6)
struct HardtanhF {
  static constexpr bool needs_input = true;
  double lo, hi;
  HardtanhF(double l, double h) : lo(l), hi(h) {
    if (!(lo < hi)) throw value_error("Hardtanh: min_val must be less than max_val");
  }
  explicit HardtanhF(const Options& o) : HardtanhF(o.number("min_val", -1.0), o.number("max_val", 1.0)) {}
  template <class T> T fwd(T x) const { return std::min(std::max(x, T(lo)), T(hi)); }
  template <class T> T bwd(T dy, T x, T) const { return x > T(lo) && x < T(hi) ? dy : T(0); }
};
struct ReLU6F : HardtanhF {
  explicit ReLU6F(const Options&) : HardtanhF(0.0, 6.0) {}
};

// ---- Hardsigmoid: y = clamp(x + 3, 0, 6) / 6; dy/dx = 1/6 for -3 < x < 3
struct HardsigmoidF {
  static constexpr bool needs_input = true;
  explicit HardsigmoidF(const Options&) {}
  template <class T> T fwd(T x) const { return std::min(std::max(x + T(3), T(0)), T(6)) / T(6); }
  template <class T> T bwd(T dy, T x, T) const { return x > T(-3) && x < T(3) ? dy / T(6) : T(0); }
};

// ---- Hardswish: y = x clamp(x + 3, 0, 6) / 6; dy/dx = 0 up to -3, x / 3 + 1/2 between, 1 from 3 on
// (PyTorch's choice at the two kinks)
struct HardswishF {
  static constexpr bool needs_input = true;
  explicit HardswishF(const Options&) {}
  template <class T> T fwd(T x) const { return x * std::min(std::max(x + T(3), T(0)), T(6)) / T(6); }
  template <class T> T bwd(T dy, T x, T) const {
    return x <= T(-3) ? T(0) : (x < T(3) ? dy * (x / T(3) + T(0.5)) : dy);
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

// ---- LogSoftmax over each row of (B, C): y = (x - m) - log(sum e^(x - m)), m the row maximum
template <class T> FASTMLP_SIMD void log_softmax_forward(const T* x, T* y, idx B, idx C) {
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T m = -std::numeric_limits<T>::infinity();
    for (idx j = 0; j < C; ++j) m = std::max(m, xr[j]);
    T s = T(0);
    for (idx j = 0; j < C; ++j) s += vexp(xr[j] - m);
    const T ls = std::log(s);
    for (idx j = 0; j < C; ++j) yr[j] = (xr[j] - m) - ls;
  }
}
// dx_j = dy_j - e^(y_j) sum_k dy_k
template <class T> FASTMLP_SIMD void log_softmax_backward(const T* dy, const T* y, T* dx, idx B, idx C) {
  for (idx r = 0; r < B; ++r) {
    const T* dyr = dy + r * C;
    const T* yr = y + r * C;
    T* dxr = dx + r * C;
    T sum = T(0);
    for (idx j = 0; j < C; ++j) sum += dyr[j];
    for (idx j = 0; j < C; ++j) dxr[j] = dyr[j] - vexp(yr[j]) * sum;
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

// Softmax (Log = false) or LogSoftmax (Log = true) over the features of each row (dim=1 of a
// (B, C) batch): both read only their output in backward.
template <class T, bool Log>
class RowSoftmaxLayer final : public Layer<T>, public Epilogue<T> {
 public:
  explicit RowSoftmaxLayer(const Options&) {}
  idx out_width(idx in) const override { return in; }
  bool backward_needs_input() const override { return false; }
  const Epilogue<T>* epilogue() const override { return this; }
  // x, y are (B, C)
  void forward(const LayerIO<T>& io) const override { run_forward(io.x, io.y, io.B, io.in); }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override { run_backward(dy, io.y, dx, io.B, io.in); }
  void bias_forward(T* pre, const T* b, T* y, idx B, idx C) const override {
    if (b) bias_map_forward(pre, b, pre, B, C, IdentityF{});
    run_forward(pre, y, B, C);
  }
  void bias_backward(const T* dy, const T* pre, const T* y, T* dpre, T* db, idx B, idx C,
                     bool accumulate) const override {
    if (db && !accumulate) std::fill(db, db + C, T(0));
    run_backward(dy, y, dpre, B, C);
    if (db) map_bias_backward(dpre, pre, y, dpre, db, B, C, IdentityF{});
  }

 private:
  static void run_forward(const T* x, T* y, idx B, idx C) {
    if (Log) log_softmax_forward(x, y, B, C); else softmax_forward(x, y, B, C);
  }
  static void run_backward(const T* dy, const T* y, T* dx, idx B, idx C) {
    if (Log) log_softmax_backward(dy, y, dx, B, C); else softmax_backward(dy, y, dx, B, C);
  }
};

// ---- PReLU's loops over one row
// y (C) = x > 0 ? x : w[j * step] x
template <class T> FASTMLP_SIMD void prelu_row(const T* x, const T* w, idx step, T* y, idx C) {
  for (idx j = 0; j < C; ++j) y[j] = x[j] > T(0) ? x[j] : w[j * step] * x[j];
}
template <class T> FASTMLP_SIMD void prelu_row_backward(const T* x, const T* dy, const T* w, idx step, T* dx, idx C) {
  for (idx j = 0; j < C; ++j) dx[j] = x[j] > T(0) ? dy[j] : w[j * step] * dy[j];
}
template <class T> FASTMLP_SIMD void prelu_row_weight_grad(const T* x, const T* dy, idx step, T* g, idx C) {
  if (step) {
    for (idx j = 0; j < C; ++j) g[j] += x[j] > T(0) ? T(0) : x[j] * dy[j];
  } else {
    T s = T(0);
    for (idx j = 0; j < C; ++j) s += x[j] > T(0) ? T(0) : x[j] * dy[j];
    g[0] += s;
  }
}

// nn.PReLU(num_parameters, init): y = x if x > 0 else w[c] x, c the feature (num_parameters == C)
// or 0 (one weight for all); w (num_parameters) starts at init. Not an epilogue: it has a parameter.
template <class T>
class PReLULayer final : public Layer<T> {
 public:
  explicit PReLULayer(const Options& o) : n_(o.integer("num_parameters", 1)), init_(o.number("init", 0.25)) {
    if (n_ < 1) throw value_error("PReLU: num_parameters must be >= 1, got " + std::to_string(n_));
  }
  idx in_width() const override { return n_ > 1 ? n_ : -1; }
  idx out_width(idx in) const override {
    if (n_ > 1 && in >= 0 && in != n_)
      throw value_error("PReLU has num_parameters=" + std::to_string(n_) + " but its input has " +
                        std::to_string(in) + " features");
    return in;
  }
  std::vector<TensorDecl> params() const override { return {{"weight", n_, 1, true, false}}; }
  void reset(T* p, T*, std::uint64_t, std::uint64_t) const override { std::fill(p, p + n_, T(init_)); }
  // x, y are (B, C), w is (n) with n == C or 1
  void forward(const LayerIO<T>& io) const override {
    const idx C = io.in, step = n_ > 1 ? 1 : 0;
    for (idx r = 0; r < io.B; ++r) prelu_row(io.x + r * C, io.w, step, io.y + r * C, C);
  }
  // dy, dx are (B, C); dw (n) (+)= sum of dy x where x <= 0
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    const idx C = io.in, step = n_ > 1 ? 1 : 0;
    if (io.g && !io.accumulate) std::fill(io.g, io.g + n_, T(0));
    for (idx r = 0; r < io.B; ++r) {
      const T* xr = io.x + r * C;
      const T* dyr = dy + r * C;
      if (dx) prelu_row_backward(xr, dyr, io.w, step, dx + r * C, C);
      if (io.g) prelu_row_weight_grad(xr, dyr, step, io.g, C);
    }
  }

 private:
  idx n_;
  double init_;
};

// nn.Flatten(start_dim=1, end_dim=-1) of a (B, C) batch: the input itself
template <class T>
class FlattenLayer final : public Layer<T> {
 public:
  explicit FlattenLayer(const Options&) {}
  idx out_width(idx in) const override { return in; }
  bool identity(bool) const override { return true; }
  bool backward_needs_input() const override { return false; }
  // x, y are (B, C)
  void forward(const LayerIO<T>& io) const override {
    if (io.y != io.x) std::copy(io.x, io.x + io.B * io.in, io.y);
  }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    if (dx != dy) std::copy(dy, dy + io.B * io.in, dx);
  }
};

template <class T> using IdentityLayer = ElementwiseLayer<T, IdentityF>;
template <class T> using ReLULayer = ElementwiseLayer<T, ReLUF>;
template <class T> using LeakyReLULayer = ElementwiseLayer<T, LeakyReLUF>;
template <class T> using SigmoidLayer = ElementwiseLayer<T, SigmoidF>;
template <class T> using TanhLayer = ElementwiseLayer<T, TanhF>;
template <class T> using ELULayer = ElementwiseLayer<T, ELUF>;
template <class T> using CELULayer = ElementwiseLayer<T, CELUF>;
template <class T> using SELULayer = ElementwiseLayer<T, SELUF>;
template <class T> using SiLULayer = ElementwiseLayer<T, SiLUF>;
template <class T> using MishLayer = ElementwiseLayer<T, MishF>;
template <class T> using SoftplusLayer = ElementwiseLayer<T, SoftplusF>;
template <class T> using LogSigmoidLayer = ElementwiseLayer<T, LogSigmoidF>;
template <class T> using SoftsignLayer = ElementwiseLayer<T, SoftsignF>;
template <class T> using HardtanhLayer = ElementwiseLayer<T, HardtanhF>;
template <class T> using ReLU6Layer = ElementwiseLayer<T, ReLU6F>;
template <class T> using HardsigmoidLayer = ElementwiseLayer<T, HardsigmoidF>;
template <class T> using HardswishLayer = ElementwiseLayer<T, HardswishF>;
template <class T> using SoftmaxLayer = RowSoftmaxLayer<T, false>;
template <class T> using LogSoftmaxLayer = RowSoftmaxLayer<T, true>;

// nn.GELU(approximate): the erf form ('none') or the tanh form ('tanh')
template <class T>
std::unique_ptr<Layer<T>> make_gelu(const Options& o) {
  const std::string a = o.string("approximate", "none");
  if (a == "none") return std::make_unique<ElementwiseLayer<T, GELUF>>(o);
  if (a == "tanh") return std::make_unique<ElementwiseLayer<T, GELUTanhF>>(o);
  throw value_error("GELU: approximate must be 'none' or 'tanh', got '" + a + "'");
}

}  // namespace

FASTMLP_REGISTER_LAYER("identity", IdentityLayer);
FASTMLP_REGISTER_LAYER("relu", ReLULayer);
FASTMLP_REGISTER_LAYER("leaky_relu", LeakyReLULayer);
FASTMLP_REGISTER_LAYER("sigmoid", SigmoidLayer);
FASTMLP_REGISTER_LAYER("tanh", TanhLayer);
FASTMLP_REGISTER_LAYER("elu", ELULayer);
FASTMLP_REGISTER_LAYER("celu", CELULayer);
FASTMLP_REGISTER_LAYER("selu", SELULayer);
FASTMLP_REGISTER_LAYER("silu", SiLULayer);
FASTMLP_REGISTER_LAYER("mish", MishLayer);
FASTMLP_REGISTER_LAYER("softplus", SoftplusLayer);
FASTMLP_REGISTER_LAYER("logsigmoid", LogSigmoidLayer);
FASTMLP_REGISTER_LAYER("softsign", SoftsignLayer);
FASTMLP_REGISTER_LAYER("hardtanh", HardtanhLayer);
FASTMLP_REGISTER_LAYER("relu6", ReLU6Layer);
FASTMLP_REGISTER_LAYER("hardsigmoid", HardsigmoidLayer);
FASTMLP_REGISTER_LAYER("hardswish", HardswishLayer);
FASTMLP_REGISTER_LAYER("softmax", SoftmaxLayer);
FASTMLP_REGISTER_LAYER("log_softmax", LogSoftmaxLayer);
FASTMLP_REGISTER_LAYER("prelu", PReLULayer);
FASTMLP_REGISTER_LAYER("flatten", FlattenLayer);
static const bool fastmlp_registered_gelu = register_layer({"gelu", &make_gelu<float>, &make_gelu<double>});

template <class T>
void bias_identity_forward(T* y, const T* b, idx B, idx C) {
  bias_map_forward(y, b, y, B, C, IdentityF{});
}
template void bias_identity_forward<float>(float*, const float*, idx, idx);
template void bias_identity_forward<double>(double*, const double*, idx, idx);

}  // namespace fastmlp
