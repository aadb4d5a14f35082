// Residual blocks, x + f(x): a block is its layers between a residual_begin and
// a residual_end in the model's flat list (blocks nest). The begin passes its
// input through (and, in backward, adds the skip connection's gradient to the
// block's); the end adds the block's input to the block's output. The model
// pairs them and gives both the skip buffers (LayerIO::skip, skip_grad).
#include "layer.h"

namespace fastmlp {

namespace {

template <class T>
class ResidualBegin final : public Layer<T> {
 public:
  explicit ResidualBegin(const Options&) {}
  idx out_width(idx in) const override { return in; }
  int nesting() const override { return 1; }
  bool identity(bool) const override { return true; }
  void forward(const LayerIO<T>&) const override {}
  // dx (B, C) = dy (the block's gradient) + skip_grad; the model does it in place in skip_grad
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    const idx n = io.B * io.in;
    for (idx k = 0; k < n; ++k) dx[k] = dy[k] + io.skip_grad[k];
  }
};

template <class T>
class ResidualEnd final : public Layer<T> {
 public:
  explicit ResidualEnd(const Options&) {}
  idx out_width(idx in) const override { return in; }
  int nesting() const override { return -1; }
  // y (B, C) = x (the block's output) + skip (the block's input)
  void forward(const LayerIO<T>& io) const override {
    const idx n = io.B * io.in;
    for (idx k = 0; k < n; ++k) io.y[k] = io.x[k] + io.skip[k];
  }
  // the same dy to the block (dx) and to the skip connection (skip_grad)
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    const idx n = io.B * io.in;
    for (idx k = 0; k < n; ++k) io.skip_grad[k] = dy[k];
    if (dx) for (idx k = 0; k < n; ++k) dx[k] = dy[k];
  }
};

}  // namespace

FASTMLP_REGISTER_LAYER("residual_begin", ResidualBegin);
FASTMLP_REGISTER_LAYER("residual_end", ResidualEnd);

}  // namespace fastmlp
