// Normalization layers with PyTorch's math: BatchNorm1d (per feature, over the
// batch), LayerNorm and RMSNorm (per row, over the features). Mean and
// variance are two-pass ((x - mean)^2, never E[x^2] - mean^2), so constant
// features and large values (1e6) stay exact enough; the saved statistics go
// from forward to backward in the layer's scratch.
#include <cmath>
#include <limits>
#include <string>

#include "layer.h"

namespace fastmlp {

namespace {

// Sums are accumulated in double for both dtypes (as PyTorch's CPU kernels do), so that
// a float32 feature of values near 1e6 keeps its spread.
// sum over k < n of f(k), in eight partial sums so that the loop vectorizes
template <class F>
inline double sum8(idx n, F f) {
  double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  idx k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) p[l] += f(k + l);
  for (; k < n; ++k) p[0] += f(k);
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

// ---------------------------------------------------------------- BatchNorm1d
// x (B, C); mean, var (C): each column's mean and biased variance, rows summed in order
template <class T>
FASTMLP_SIMD void column_mean_var(const T* x, idx B, idx C, double* mean, double* var) {
  for (idx c = 0; c < C; ++c) mean[c] = var[c] = 0;
  for (idx r = 0; r < B; ++r)
    for (idx c = 0; c < C; ++c) mean[c] += double(x[r * C + c]);
  for (idx c = 0; c < C; ++c) mean[c] /= double(B);
  for (idx r = 0; r < B; ++r)
    for (idx c = 0; c < C; ++c) {
      const double d = double(x[r * C + c]) - mean[c];
      var[c] += d * d;
    }
  for (idx c = 0; c < C; ++c) var[c] /= double(B);
}

// y (B, C) = (x - mean) * invstd * w + b; w, b (C) or null (1 and 0)
template <class T>
FASTMLP_SIMD void batchnorm_forward(const T* x, const T* mean, const T* invstd, const T* w, const T* b, T* y, idx B,
                                    idx C) {
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    if (w)
      for (idx c = 0; c < C; ++c) yr[c] = (xr[c] - mean[c]) * invstd[c] * w[c] + (b ? b[c] : T(0));
    else
      for (idx c = 0; c < C; ++c) yr[c] = (xr[c] - mean[c]) * invstd[c];
  }
}

// dy, x, dx (B, C); sdy, sdyx (C) get sum dy and sum dy * xhat per column.
// Batch statistics: dx = w invstd (dy - sdy / B - xhat sdyx / B); fixed (running) ones:
// dx = w invstd dy. dx may be null.
template <class T>
FASTMLP_SIMD void batchnorm_backward(const T* dy, const T* x, const T* mean, const T* invstd, const T* w, T* dx,
                                     double* sdy, double* sdyx, idx B, idx C, bool batch_stats) {
  for (idx c = 0; c < C; ++c) sdy[c] = sdyx[c] = 0;
  for (idx r = 0; r < B; ++r)
    for (idx c = 0; c < C; ++c) {
      const T g = dy[r * C + c];
      sdy[c] += double(g);
      sdyx[c] += double(g * ((x[r * C + c] - mean[c]) * invstd[c]));
    }
  if (!dx) return;
  const double k = batch_stats ? 1.0 / double(B) : 0.0;
  for (idx r = 0; r < B; ++r)
    for (idx c = 0; c < C; ++c) {
      const T xhat = (x[r * C + c] - mean[c]) * invstd[c];
      const T a = w ? w[c] * invstd[c] : invstd[c];
      dx[r * C + c] = a * (dy[r * C + c] - T(k * sdy[c]) - xhat * T(k * sdyx[c]));
    }
}

// out (n) (+)= in (n)
template <class T>
FASTMLP_SIMD void add_or_set(T* out, const double* in, idx n, bool accumulate) {
  if (accumulate)
    for (idx i = 0; i < n; ++i) out[i] += T(in[i]);
  else
    for (idx i = 0; i < n; ++i) out[i] = T(in[i]);
}

std::string batch_size_error(idx B, idx C) {
  return "Expected more than 1 value per channel when training, got input size [" + std::to_string(B) + ", " +
         std::to_string(C) + "]";
}

// A feature count from the spec: at least 1.
idx features(const Options& o, const char* key, const char* layer) {
  const idx n = o.integer(key);
  if (n < 1) throw value_error(std::string(layer) + ": " + key + " must be at least 1, got " + std::to_string(n));
  return n;
}

// ---- nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1 (absent: None, the cumulative
// average), affine=True, track_running_stats=True) on (B, C) inputs. Parameters weight, bias (C);
// buffers running_mean, running_var (C) and num_batches_tracked (a scalar).
template <class T>
class BatchNormLayer final : public Layer<T> {
 public:
  explicit BatchNormLayer(const Options& o)
      : C_(features(o, "num_features", "BatchNorm1d")), eps_(o.number("eps", 1e-5)),
        momentum_(o.number("momentum", -1)), cumulative_(o.num.count("momentum") == 0),
        affine_(o.flag("affine", true)), track_(o.flag("track_running_stats", true)) {
    if (!(eps_ > 0) || !std::isfinite(eps_)) throw value_error("BatchNorm1d: eps must be a finite number > 0");
    if (!cumulative_ && !(momentum_ >= 0 && momentum_ <= 1))
      throw value_error("BatchNorm1d: momentum must be in [0, 1] or None");
  }
  idx in_width() const override { return C_; }
  idx out_width(idx in) const override {
    if (in >= 0 && in != C_)
      throw value_error("BatchNorm1d expects " + std::to_string(C_) + " features but the previous layers give " +
                        std::to_string(in));
    return C_;
  }
  std::vector<TensorDecl> params() const override {
    if (!affine_) return {};
    return {{"weight", C_, 1, true, false}, {"bias", C_, 1, true, false}};
  }
  std::vector<TensorDecl> buffers() const override {
    if (!track_) return {};
    return {{"running_mean", C_, 1, true, false}, {"running_var", C_, 1, true, false},
            {"num_batches_tracked", 1, 1, false, false, true}};
  }
  void reset(T* p, T* buf, std::uint64_t, std::uint64_t) const override {
    for (idx c = 0; p && c < C_; ++c) p[c] = T(1), p[C_ + c] = T(0);
    for (idx c = 0; buf && c < C_; ++c) buf[c] = T(0), buf[C_ + c] = T(1);
    if (buf) buf[2 * C_] = T(0);
  }
  bool rows_independent(bool train) const override { return !batch_stats(train); }
  // mean, invstd (C) of the statistics used, kept for backward
  idx scratch_size(idx, idx) const override { return checked_mul(C_, 2); }
  // two double sums per column (C each): the batch's mean and variance, then backward's sums
  idx byte_scratch(idx, idx) const override { return checked_mul(C_, 2 * sizeof(double)); }

  // x, y (B, C)
  void forward(const LayerIO<T>& io) const override {
    const idx B = io.B;
    T* mean = io.scratch;
    T* invstd = io.scratch + C_;
    const T* w = affine_ ? io.w : nullptr;
    const T* b = affine_ ? io.w + C_ : nullptr;
    if (batch_stats(io.train)) {
      if (B == 0) {  // as torch: an empty output, the batch counted, the statistics unchanged
        if (io.train && track_) io.buf[2 * C_] += T(1);
        return;
      }
      if (B == 1) throw value_error(batch_size_error(B, C_));
      double* m = reinterpret_cast<double*>(io.bytes);  // (C) each; the byte scratch is 64-byte aligned
      double* v = m + C_;
      column_mean_var(io.x, B, C_, m, v);
      if (io.train && track_) update_running(io.buf, m, v, B);
      for (idx c = 0; c < C_; ++c) {
        mean[c] = T(m[c]);
        invstd[c] = T(1.0 / std::sqrt(v[c] + eps_));
      }
    } else {
      for (idx c = 0; c < C_; ++c) {
        mean[c] = io.buf[c];
        invstd[c] = T(1) / std::sqrt(io.buf[C_ + c] + T(eps_));
      }
    }
    batchnorm_forward(io.x, mean, invstd, w, b, io.y, B, C_);
  }
  // dy, dx (B, C); weight and bias gradients (C) are the column sums of dy * xhat and dy
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    const T* mean = io.scratch;
    const T* invstd = io.scratch + C_;
    double* sdy = reinterpret_cast<double*>(io.bytes);
    double* sdyx = sdy + C_;
    batchnorm_backward(dy, io.x, mean, invstd, affine_ ? io.w : nullptr, dx, sdy, sdyx, io.B, C_,
                       batch_stats(io.train));
    if (affine_ && io.g) {
      add_or_set(io.g, sdyx, C_, io.accumulate);
      add_or_set(io.g + C_, sdy, C_, io.accumulate);
    }
  }

 private:
  bool batch_stats(bool train) const { return train || !track_; }
  // buf: running_mean, running_var (C), num_batches_tracked; var is the batch's biased variance
  void update_running(T* buf, const double* mean, const double* var, idx B) const {
    buf[2 * C_] += T(1);
    const T f = cumulative_ ? T(1) / buf[2 * C_] : T(momentum_);
    const double unbias = double(B) / double(B - 1);
    for (idx c = 0; c < C_; ++c) {
      buf[c] = (T(1) - f) * buf[c] + f * T(mean[c]);
      buf[C_ + c] = (T(1) - f) * buf[C_ + c] + f * T(var[c] * unbias);
    }
  }

  idx C_;
  double eps_, momentum_;
  bool cumulative_, affine_, track_;
};

// ---------------------------------------------------------------- LayerNorm, RMSNorm
// Per row r of x (B, C): xhat = (x - mean_r) * invstd_r (LayerNorm) or x * invstd_r with
// invstd_r = 1 / sqrt(mean(x^2) + eps) (RMSNorm, center = false); y = xhat * w + b.
// mean, invstd (B) are saved for backward.
template <class T>
FASTMLP_SIMD void rownorm_forward(const T* x, const T* w, const T* b, T* y, T* mean, T* invstd, idx B, idx C, double eps,
                                  bool center) {
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    const double md = center ? sum8(C, [&](idx c) { return double(xr[c]); }) / double(C) : 0.0;
    const double v = sum8(C, [&](idx c) { const double d = double(xr[c]) - md; return d * d; }) / double(C);
    const T m = T(md), s = T(1.0 / std::sqrt(v + eps));
    mean[r] = m;
    invstd[r] = s;
    if (w)
      for (idx c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s * w[c] + (b ? b[c] : T(0));
    else
      for (idx c = 0; c < C; ++c) yr[c] = (xr[c] - m) * s;
  }
}

// dy, x, dx (B, C); dw, db (C) (+)= column sums of dy * xhat and dy (null: not wanted).
// dx = invstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dy * w; RMSNorm drops mean(dxhat).
template <class T>
FASTMLP_SIMD void rownorm_backward(const T* dy, const T* x, const T* w, const T* mean, const T* invstd, T* dx, T* dw,
                                   T* db, idx B, idx C, bool center, bool accumulate) {
  if (!accumulate) {
    for (idx c = 0; dw && c < C; ++c) dw[c] = T(0);
    for (idx c = 0; db && c < C; ++c) db[c] = T(0);
  }
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    const T* dyr = dy + r * C;
    const T m = mean[r], s = invstd[r];
    if (dw)
      for (idx c = 0; c < C; ++c) dw[c] += dyr[c] * ((xr[c] - m) * s);
    if (db)
      for (idx c = 0; c < C; ++c) db[c] += dyr[c];
    if (!dx) continue;
    T* dxr = dx + r * C;
    auto dxhat = [&](idx c) { return w ? dyr[c] * w[c] : dyr[c]; };
    const T a = center ? T(sum8(C, [&](idx c) { return double(dxhat(c)); }) / double(C)) : T(0);
    const T k = T(sum8(C, [&](idx c) { return double(dxhat(c) * ((xr[c] - m) * s)); }) / double(C));
    for (idx c = 0; c < C; ++c) dxr[c] = s * (dxhat(c) - a - ((xr[c] - m) * s) * k);
  }
}

// ---- nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True) and
// nn.RMSNorm(normalized_shape, eps=None (machine epsilon of the dtype), elementwise_affine=True)
// over the last dimension of (B, C): weight (C), bias (C; LayerNorm only).
template <class T, bool Center>
class RowNormLayer final : public Layer<T> {
 public:
  explicit RowNormLayer(const Options& o)
      : C_(features(o, "normalized_shape", Center ? "LayerNorm" : "RMSNorm")),
        eps_(o.number("eps", Center ? 1e-5 : double(std::numeric_limits<T>::epsilon()))),
        affine_(o.flag("elementwise_affine", true)), bias_(Center && affine_ && o.flag("bias", true)) {
    if (!(eps_ >= 0) || !std::isfinite(eps_)) throw value_error(name() + ": eps must be a finite number >= 0");
  }
  idx in_width() const override { return C_; }
  idx out_width(idx in) const override {
    if (in >= 0 && in != C_)
      throw value_error(name() + " normalizes " + std::to_string(C_) + " features but the previous layers give " +
                        std::to_string(in));
    return C_;
  }
  std::vector<TensorDecl> params() const override {
    std::vector<TensorDecl> p;
    if (affine_) p.push_back({"weight", C_, 1, true, false});
    if (bias_) p.push_back({"bias", C_, 1, true, false});
    return p;
  }
  void reset(T* p, T*, std::uint64_t, std::uint64_t) const override {
    for (idx c = 0; affine_ && c < C_; ++c) p[c] = T(1);
    for (idx c = 0; bias_ && c < C_; ++c) p[C_ + c] = T(0);
  }
  // mean, invstd (B)
  idx scratch_size(idx B, idx) const override { return checked_mul(B, 2); }
  // x, y (B, C)
  void forward(const LayerIO<T>& io) const override {
    rownorm_forward(io.x, affine_ ? io.w : nullptr, bias_ ? io.w + C_ : nullptr, io.y, io.scratch,
                    io.scratch + io.B, io.B, C_, eps_, Center);
  }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    T* dw = affine_ && io.g ? io.g : nullptr;
    T* db = bias_ && io.g ? io.g + C_ : nullptr;
    rownorm_backward(dy, io.x, affine_ ? io.w : nullptr, io.scratch, io.scratch + io.B, dx, dw, db, io.B, C_, Center,
                     io.accumulate);
  }

 private:
  static std::string name() { return Center ? "LayerNorm" : "RMSNorm"; }
  idx C_;
  double eps_;
  bool affine_, bias_;
};

template <class T>
using LayerNormLayer = RowNormLayer<T, true>;
template <class T>
using RMSNormLayer = RowNormLayer<T, false>;

}  // namespace

FASTMLP_REGISTER_LAYER("batch_norm", BatchNormLayer);
FASTMLP_REGISTER_LAYER("layer_norm", LayerNormLayer);
FASTMLP_REGISTER_LAYER("rms_norm", RMSNormLayer);

}  // namespace fastmlp
