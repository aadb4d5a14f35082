#include "activations.h"

#include <algorithm>
#include <cmath>

namespace fastmlp {

namespace {

// ---- ReLU: y = max(x, 0); dy/dx = 1 where x > 0 (0 at x == 0, as PyTorch)
template <class T> FASTMLP_SIMD void relu_forward(const T* x, T* y, idx n) {
  for (idx i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}
template <class T> FASTMLP_SIMD void relu_backward(const T* dy, const T* y, T* dx, idx n) {
  for (idx i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

// ---- LeakyReLU: y = x if x > 0 else slope * x
template <class T> FASTMLP_SIMD void leaky_relu_forward(const T* x, T* y, idx n, T slope) {
  for (idx i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : slope * x[i];
}
template <class T> FASTMLP_SIMD void leaky_relu_backward(const T* dy, const T* x, T* dx, idx n, T slope) {
  for (idx i = 0; i < n; ++i) dx[i] = x[i] > T(0) ? dy[i] : slope * dy[i];
}

// ---- Sigmoid: y = 1 / (1 + e^-x), evaluated so that e^|x| never overflows
template <class T> void sigmoid_forward(const T* x, T* y, idx n) {
  for (idx i = 0; i < n; ++i) {
    if (x[i] >= T(0)) {
      y[i] = T(1) / (T(1) + std::exp(-x[i]));
    } else {
      T e = std::exp(x[i]);
      y[i] = e / (T(1) + e);
    }
  }
}
template <class T> FASTMLP_SIMD void sigmoid_backward(const T* dy, const T* y, T* dx, idx n) {
  for (idx i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}

// ---- Tanh: dy/dx = 1 - y^2
template <class T> void tanh_forward(const T* x, T* y, idx n) {
  for (idx i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
template <class T> FASTMLP_SIMD void tanh_backward(const T* dy, const T* y, T* dx, idx n) {
  for (idx i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
}

// ---- GELU (erf form): y = x * Phi(x); dy/dx = Phi(x) + x * phi(x)
template <class T> void gelu_forward(const T* x, T* y, idx n) {
  const T r2 = T(0.70710678118654752440);
  for (idx i = 0; i < n; ++i) y[i] = T(0.5) * x[i] * (T(1) + std::erf(x[i] * r2));
}
template <class T> void gelu_backward(const T* dy, const T* x, T* dx, idx n) {
  const T r2 = T(0.70710678118654752440), inv_sqrt_2pi = T(0.39894228040143267794);
  for (idx i = 0; i < n; ++i) {
    T cdf = T(0.5) * (T(1) + std::erf(x[i] * r2));
    T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
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
  switch (a) {
    case Act::Identity: if (x != y) std::copy(x, x + n, y); break;
    case Act::ReLU: relu_forward(x, y, n); break;
    case Act::LeakyReLU: leaky_relu_forward(x, y, n, static_cast<T>(param)); break;
    case Act::Sigmoid: sigmoid_forward(x, y, n); break;
    case Act::Tanh: tanh_forward(x, y, n); break;
    case Act::GELU: gelu_forward(x, y, n); break;
    case Act::Softmax: softmax_forward(x, y, B, C); break;
  }
}

template <class T>
void activation_backward(Act a, const T* dy, const T* x, const T* y, T* dx, idx B, idx C,
                         double param) {
  const idx n = checked_mul(B, C);
  switch (a) {
    case Act::Identity: if (dy != dx) std::copy(dy, dy + n, dx); break;
    case Act::ReLU: relu_backward(dy, y, dx, n); break;
    case Act::LeakyReLU: leaky_relu_backward(dy, x, dx, n, static_cast<T>(param)); break;
    case Act::Sigmoid: sigmoid_backward(dy, y, dx, n); break;
    case Act::Tanh: tanh_backward(dy, y, dx, n); break;
    case Act::GELU: gelu_backward(dy, x, dx, n); break;
    case Act::Softmax: softmax_backward(dy, y, dx, B, C); break;
  }
}

namespace {
template <class T> FASTMLP_SIMD void add_row(T* dst, const T* src, idx n) {
  for (idx j = 0; j < n; ++j) dst[j] += src[j];
}
}  // namespace

template <class T>
void bias_activation_forward(Act a, T* pre, const T* b, T* y, idx B, idx C, double param) {
  // row by row, so the row is still in cache for the activation
  for (idx r = 0; r < B; ++r) {
    T* pr = pre + r * C;
    if (b) add_row(pr, b, C);
    activation_forward(a, pr, y + r * C, 1, C, param);
  }
}

template <class T>
void activation_bias_backward(Act a, const T* dy, const T* x, const T* y, T* dx, T* db, idx B, idx C,
                              double param, bool accumulate) {
  if (db && !accumulate)
    for (idx j = 0; j < C; ++j) db[j] = T(0);
  for (idx r = 0; r < B; ++r) {
    const idx o = r * C;
    activation_backward(a, dy + o, x + o, y + o, dx + o, 1, C, param);
    if (db) add_row(db, dx + o, C);
  }
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
