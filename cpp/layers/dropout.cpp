#include "dropout.h"

#include "layer.h"
#include "rng.h"

namespace fastmlp {

template <class T>
void dropout_forward(const T* x, T* y, std::uint8_t* mask, idx n, double p, std::uint64_t seed) {
  // element i is dropped when its 32-bit uniform falls below p * 2^32
  const std::uint64_t threshold = static_cast<std::uint64_t>(p * 4294967296.0);
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  for (idx i = 0; i < n; i += 2) {
    std::uint64_t h = splitmix64(seed ^ (static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ull));
    for (idx k = 0; k < 2 && i + k < n; ++k) {
      std::uint64_t u = k == 0 ? (h & 0xFFFFFFFFull) : (h >> 32);
      std::uint8_t keep = u >= threshold;
      mask[i + k] = keep;
      y[i + k] = keep ? x[i + k] * scale : T(0);
    }
  }
}

template <class T>
FASTMLP_SIMD void dropout_backward(const T* dy, const std::uint8_t* mask, T* dx, idx n, double p) {
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  for (idx i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] * scale : T(0);
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
    dropout_forward(io.x, io.y, io.bytes, io.B * io.in, p_, io.seed);
  }
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    dropout_backward(dy, io.bytes, dx, io.B * io.in, p_);
  }

 private:
  double p_;
};
FASTMLP_REGISTER_LAYER("dropout", DropoutLayer);

template void dropout_forward<float>(const float*, float*, std::uint8_t*, idx, double, std::uint64_t);
template void dropout_forward<double>(const double*, double*, std::uint8_t*, idx, double, std::uint64_t);
template void dropout_backward<float>(const float*, const std::uint8_t*, float*, idx, double);
template void dropout_backward<double>(const double*, const std::uint8_t*, double*, idx, double);

}  // namespace fastmlp
