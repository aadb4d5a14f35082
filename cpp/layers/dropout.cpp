#include "dropout.h"

#include <cmath>

#include "layer.h"
#include "rng.h"

namespace fastmlp {

namespace {
// mask (n) = 1 where element i is kept: its 32-bit uniform, a pure function of seed and its flat index
// g = first + i in the batch (one splitmix64 per pair g, g + 1 with g even: low half, high half), is at
// least p * 2^32. A counter-based stream: any block of rows (first = its first row * width) draws the same
// numbers as the whole batch does there, so the chunks of a split batch get the whole batch's mask.
void keep_mask(std::uint8_t* mask, idx n, double p, std::uint64_t seed, idx first) {
  const std::uint64_t threshold = static_cast<std::uint64_t>(p * 4294967296.0);
  auto pair = [&](idx g) { return splitmix64(seed ^ (static_cast<std::uint64_t>(g) * 0x9E3779B97F4A7C15ull)); };
  idx i = 0;
  if (n > 0 && (first & 1)) {  // an odd start: the high half of its pair
    mask[0] = (pair(first - 1) >> 32) >= threshold;
    i = 1;
  }
  for (; i < n; i += 2) {
    const std::uint64_t h = pair(first + i);
    mask[i] = (h & 0xFFFFFFFFull) >= threshold;
    if (i + 1 < n) mask[i + 1] = (h >> 32) >= threshold;
  }
}
// y (n) = mask ? x * a + b : c
template <class T>
FASTMLP_SIMD void masked_affine(const T* x, const std::uint8_t* mask, T* y, idx n, T a, T b, T c) {
  for (idx i = 0; i < n; ++i) y[i] = mask[i] ? x[i] * a + b : c;
}
}  // namespace

template <class T>
FASTMLP_SIMD void dropout_backward(const T* dy, const std::uint8_t* mask, T* dx, idx n, double p) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  for (idx i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] * scale : T(0);
}

// the forward is the backward's product with the new mask
template <class T>
void dropout_forward(const T* x, T* y, std::uint8_t* mask, idx n, double p, std::uint64_t seed, idx first) {
  keep_mask(mask, n, p, seed, first);
  dropout_backward(x, mask, y, n, p);
}

// ---- the layer: nn.Dropout(p), identity in eval mode (and when p is 0)
template <class T>
class DropoutLayer final : public Layer<T> {
 public:
  explicit DropoutLayer(const Options& o) : p_(o.number("p", 0.5)) {
    if (!(p_ >= 0 && p_ < 1)) throw value_error("dropout probability has to be in [0, 1), but got " + std::to_string(p_));
  }
  idx out_width(idx in) const override { return in; }
  bool random(bool train) const override { return train && p_ > 0; }
  bool identity(bool train) const override { return !random(train); }
  bool backward_needs_input() const override { return false; }
  idx byte_scratch(idx B, idx in) const override { return p_ > 0 ? checked_mul(B, in) : 0; }
  // x, y are (B, C); the mask (B, C) stays in io.bytes for backward
  void forward(const LayerIO<T>& io) const override {
    dropout_forward(io.x, io.y, io.bytes, io.B * io.in, p_, io.seed, io.row0 * io.in);
  }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    dropout_backward(dy, io.bytes, dx, io.B * io.in, p_);
  }

 private:
  double p_;
};
FASTMLP_REGISTER_LAYER("dropout", DropoutLayer);

// ---- nn.AlphaDropout(p), for SELU networks (PyTorch's formula): keep with probability 1 - p;
// y = a x + b where kept, a alpha' + b where dropped, with alpha' = -1.7580993408473766,
// a = 1 / sqrt((alpha'^2 p + 1) (1 - p)), b = -a alpha' p; dx = a dy where kept, 0 where dropped.
// p = 1 drops everything to 0 (as PyTorch). Identity in eval mode and when p is 0.
template <class T>
class AlphaDropoutLayer final : public Layer<T> {
 public:
  explicit AlphaDropoutLayer(const Options& o) : p_(o.number("p", 0.5)) {
    if (!(p_ >= 0 && p_ <= 1))
      throw value_error("alpha dropout probability has to be in [0, 1], but got " + std::to_string(p_));
    constexpr double alpha = 1.7580993408473766;
    a_ = p_ < 1 ? 1.0 / std::sqrt((alpha * alpha * p_ + 1) * (1 - p_)) : 0.0;
    b_ = a_ * alpha * p_;
    dropped_ = p_ < 1 ? b_ - a_ * alpha : 0.0;
  }
  idx out_width(idx in) const override { return in; }
  bool random(bool train) const override { return train && p_ > 0; }
  bool identity(bool train) const override { return !random(train); }
  bool backward_needs_input() const override { return false; }
  idx byte_scratch(idx B, idx in) const override { return p_ > 0 ? checked_mul(B, in) : 0; }
  // x, y are (B, C); the mask (B, C) stays in io.bytes for backward
  void forward(const LayerIO<T>& io) const override {
    const idx n = io.B * io.in;
    keep_mask(io.bytes, n, p_, io.seed, io.row0 * io.in);
    masked_affine(io.x, io.bytes, io.y, n, T(a_), T(b_), T(dropped_));
  }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    masked_affine(dy, io.bytes, dx, io.B * io.in, T(a_), T(0), T(0));
  }

 private:
  double p_, a_, b_, dropped_;
};
FASTMLP_REGISTER_LAYER("alpha_dropout", AlphaDropoutLayer);

template void dropout_forward<float>(const float*, float*, std::uint8_t*, idx, double, std::uint64_t, idx);
template void dropout_forward<double>(const double*, double*, std::uint8_t*, idx, double, std::uint64_t, idx);
template void dropout_backward<float>(const float*, const std::uint8_t*, float*, idx, double);
template void dropout_backward<double>(const double*, const std::uint8_t*, double*, idx, double);

}  // namespace fastmlp
