#include "model.h"

#include <algorithm>
#include <string>

#include "dropout.h"
#include "linear.h"
#include "rng.h"

namespace fastmlp {

void check_layers(const std::vector<LayerSpec>& layers) {
  idx width = -1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = layers[i];
    const std::string where = "layer " + std::to_string(i) + ": ";
    if (l.kind == LayerKind::Linear) {
      if (l.in < 0 || l.out < 0) throw value_error(where + "Linear sizes must be >= 0");
      checked_mul(l.in, l.out);
      if (width >= 0 && width != l.in)
        throw value_error(where + "Linear expects " + std::to_string(l.in) + " input features but the previous layers give " +
                          std::to_string(width));
      width = l.out;
    } else if (l.kind == LayerKind::Dropout) {
      if (!(l.param >= 0 && l.param < 1))
        throw value_error(where + "dropout probability has to be in [0, 1), but got " + std::to_string(l.param));
    }
  }
}

template <class T>
Model<T>::Model(std::vector<LayerSpec> layers, std::uint64_t seed_) : seed(seed_), layers_(std::move(layers)) {
  check_layers(layers_);
  idx off = 0;
  const idx L = static_cast<idx>(layers_.size());
  weight_offset_.assign(L, -1);
  bias_offset_.assign(L, -1);
  for (idx i = 0; i < L; ++i) {
    const LayerSpec& l = layers_[i];
    if (l.kind != LayerKind::Linear) continue;
    weight_offset_[i] = off;
    slots_.push_back({i, false, off, l.out, l.in});
    off = checked_add(off, checked_mul(l.out, l.in));
    if (l.bias) {
      bias_offset_[i] = off;
      slots_.push_back({i, true, off, l.out, 1});
      off = checked_add(off, l.out);
    }
  }
  params_.resize(off);
  grads_.resize(off);
  out_ptr_.assign(L + 1, nullptr);
  last_dropout_on_.assign(L, false);
  act_.resize(L);
  mask_.resize(L);
  reset_parameters(seed_);
}

template <class T>
void Model<T>::reset_parameters(std::uint64_t s) {
  seed = s;
  dropout_calls = 0;
  for (idx i = 0; i < static_cast<idx>(layers_.size()); ++i) {
    const LayerSpec& l = layers_[i];
    if (l.kind != LayerKind::Linear) continue;
    init_fill(l.init, params_.data() + weight_offset_[i], l.out * l.in, l.in, l.out,
              derive_seed(s, 2 * static_cast<std::uint64_t>(i)));
    if (l.bias) {
      InitSpec b;
      b.kind = l.init.kind == InitKind::LinearDefault ? InitKind::LinearDefault : InitKind::Zeros;
      init_fill(b, params_.data() + bias_offset_[i], l.out, l.in, l.out,
                derive_seed(s, 2 * static_cast<std::uint64_t>(i) + 1));
    }
  }
}

template <class T>
idx Model<T>::in_features() const {
  for (const auto& l : layers_)
    if (l.kind == LayerKind::Linear) return l.in;
  return -1;
}

template <class T>
idx Model<T>::out_features(idx in) const {
  idx w = in;
  for (const auto& l : layers_)
    if (l.kind == LayerKind::Linear) w = l.out;
  return w;
}

template <class T>
void Model<T>::ensure_workspace(idx B, idx in) {
  const idx L = static_cast<idx>(layers_.size());
  if (B <= cap_rows_ && in == cap_in_) return;
  const idx rows = std::max(B, cap_rows_);
  width_.assign(L + 1, in);
  idx wmax = in;
  for (idx i = 0; i < L; ++i) {
    width_[i + 1] = layers_[i].kind == LayerKind::Linear ? layers_[i].out : width_[i];
    wmax = std::max(wmax, width_[i + 1]);
  }
  for (idx i = 0; i < L; ++i) {
    act_[i].reserve(checked_mul(rows, width_[i + 1]));
    if (layers_[i].kind == LayerKind::Dropout) mask_[i].reserve(checked_mul(rows, width_[i + 1]));
  }
  const idx big = checked_mul(rows, wmax);
  grad_a_.reserve(big);
  grad_b_.reserve(big);
  dout_.reserve(checked_mul(rows, width_[L]));
  cap_rows_ = rows;
  cap_in_ = in;
  last_B_ = -1;
}

template <class T>
const T* Model<T>::forward(const T* x, idx B, idx in, bool copy_input) {
  const idx want = in_features();
  if (want >= 0 && in != want)
    throw value_error("input has " + std::to_string(in) + " features, but the model expects " + std::to_string(want));
  ensure_workspace(B, in);
  if (copy_input) {
    input_copy_.reserve(checked_mul(cap_rows_, in));
    std::copy(x, x + B * in, input_copy_.data());
    x = input_copy_.data();
  }
  const idx L = static_cast<idx>(layers_.size());
  out_ptr_[0] = x;
  bool any_dropout = false;
  for (idx i = 0; i < L; ++i) {
    const LayerSpec& l = layers_[i];
    const T* xin = out_ptr_[i];
    T* y = act_[i].data();
    last_dropout_on_[i] = false;
    switch (l.kind) {
      case LayerKind::Linear:
        linear_forward(xin, params_.data() + weight_offset_[i], l.bias ? params_.data() + bias_offset_[i] : nullptr,
                       y, B, l.in, l.out);
        out_ptr_[i + 1] = y;
        break;
      case LayerKind::Activation:
        activation_forward(l.act, xin, y, B, width_[i], l.param);
        out_ptr_[i + 1] = y;
        break;
      case LayerKind::Dropout:
        if (training && l.param > 0) {
          dropout_forward(xin, y, mask_[i].data(), B * width_[i], l.param,
                          derive_seed(derive_seed(seed, 0x5EEDull + static_cast<std::uint64_t>(i)), dropout_calls));
          last_dropout_on_[i] = true;
          any_dropout = true;
          out_ptr_[i + 1] = y;
        } else {
          out_ptr_[i + 1] = xin;  // identity: no copy
        }
        break;
    }
  }
  if (any_dropout) ++dropout_calls;
  last_B_ = B;
  return out_ptr_[L];
}

template <class T>
void Model<T>::backward(const T* dy, T* dx, bool accumulate) {
  if (last_B_ < 0) throw value_error("backward() needs a forward() on this model first");
  const idx B = last_B_;
  const idx L = static_cast<idx>(layers_.size());
  // below the first layer with parameters, gradients are needed only for dx
  idx stop = 0;
  if (!dx) {
    stop = L;
    for (idx i = 0; i < L; ++i)
      if (layers_[i].kind == LayerKind::Linear) { stop = i; break; }
  }
  const T* g = dy;
  T* bufs[2] = {grad_a_.data(), grad_b_.data()};
  int which = 0;
  for (idx i = L - 1; i >= stop; --i) {
    const LayerSpec& l = layers_[i];
    T* gout = (i == 0) ? dx : bufs[which];
    const bool need_gout = i > stop || (i == 0 && dx);
    switch (l.kind) {
      case LayerKind::Linear:
        linear_backward(g, out_ptr_[i], params_.data() + weight_offset_[i], need_gout ? gout : nullptr,
                        grads_.data() + weight_offset_[i], l.bias ? grads_.data() + bias_offset_[i] : nullptr, B,
                        l.in, l.out, accumulate);
        break;
      case LayerKind::Activation:
        if (need_gout) activation_backward(l.act, g, out_ptr_[i], out_ptr_[i + 1], gout, B, width_[i], l.param);
        break;
      case LayerKind::Dropout:
        if (!need_gout) break;
        if (last_dropout_on_[i]) dropout_backward(g, mask_[i].data(), gout, B * width_[i], l.param);
        else std::copy(g, g + B * width_[i], gout);
        break;
    }
    if (!need_gout) break;
    g = gout;
    which ^= 1;
  }
  if (dx && L == 0) std::copy(dy, dy + B * (cap_in_ < 0 ? 0 : cap_in_), dx);
}

template <class T>
double Model<T>::train_step(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                            const T* target, Optimizer<T>& opt) {
  const bool was_training = training;
  training = true;
  const T* out = forward(x, B, in, false);
  training = was_training;
  const idx C = width_[layers_.size()];
  const double value = loss_forward(loss, out, B, C, labels, target, dout_.data());
  // every gradient is rewritten, the same as zero_grad followed by accumulation
  backward(dout_.data(), nullptr, false);
  opt.step();
  return value;
}

template class Model<float>;
template class Model<double>;

}  // namespace fastmlp
