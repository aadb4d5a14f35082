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
bool Model<T>::fused(idx i) const {
  return layers_[i].kind == LayerKind::Linear && i + 1 < static_cast<idx>(layers_.size()) &&
         layers_[i + 1].kind == LayerKind::Activation;
}

template <class T>
bool Model<T>::in_place(idx i) const {
  if (!fused(i)) return false;
  const Act a = layers_[i + 1].act;
  return a != Act::LeakyReLU && a != Act::GELU;  // these need their input in backward
}

template <class T>
void Model<T>::ensure_workspace(Workspace<T>& ws, idx B, idx in) const {
  const idx L = static_cast<idx>(layers_.size());
  if (B <= ws.cap_rows && in == ws.cap_in) return;
  const idx rows = std::max(B, ws.cap_rows);
  ws.width.assign(L + 1, in);
  idx wmax = in;
  for (idx i = 0; i < L; ++i) {
    ws.width[i + 1] = layers_[i].kind == LayerKind::Linear ? layers_[i].out : ws.width[i];
    wmax = std::max(wmax, ws.width[i + 1]);
  }
  ws.act.resize(L);
  ws.mask.resize(L);
  for (idx i = 0; i < L; ++i) {
    const bool needs_buffer = !(i > 0 && in_place(i - 1));
    if (needs_buffer) ws.act[i].reserve(checked_mul(rows, ws.width[i + 1]));
    if (layers_[i].kind == LayerKind::Dropout) ws.mask[i].reserve(checked_mul(rows, ws.width[i + 1]));
  }
  const idx big = checked_mul(rows, wmax);
  ws.grad_a.reserve(big);
  ws.grad_b.reserve(big);
  ws.dout.reserve(checked_mul(rows, ws.width[L]));
  ws.out.assign(L + 1, nullptr);
  ws.dropout_on.assign(L, false);
  ws.cap_rows = rows;
  ws.cap_in = in;
  ws.rows = -1;
}

template <class T>
const T* Model<T>::forward(Workspace<T>& ws, const T* x, idx B, idx in, bool train, bool copy_input) {
  const idx want = in_features();
  if (want >= 0 && in != want)
    throw value_error("input has " + std::to_string(in) + " features, but the model expects " + std::to_string(want));
  ensure_workspace(ws, B, in);
  if (copy_input) {
    ws.input_copy.reserve(checked_mul(ws.cap_rows, in));
    std::copy(x, x + B * in, ws.input_copy.data());
    x = ws.input_copy.data();
  }
  const idx L = static_cast<idx>(layers_.size());
  ws.out[0] = x;
  bool any_dropout = false;
  for (idx i = 0; i < L; ++i) {
    const LayerSpec& l = layers_[i];
    const T* xin = ws.out[i];
    ws.dropout_on[i] = false;
    switch (l.kind) {
      case LayerKind::Linear: {
        T* pre = ws.act[i].data();
        const T* b = l.bias ? params_.data() + bias_offset_[i] : nullptr;
        // eval mode: gemm.h's fixed-order product (a row's bits do not depend on its batch);
        // training: OpenBLAS's, faster at training sizes (bench/gemm_speed.py)
        linear_forward<T>(xin, params_.data() + weight_offset_[i], nullptr, pre, B, l.in, l.out, !train);
        ws.out[i + 1] = pre;
        if (fused(i)) {  // bias + activation in one pass over the GEMM output
          const LayerSpec& a = layers_[i + 1];
          T* y = in_place(i) ? pre : ws.act[i + 1].data();
          bias_activation_forward(a.act, pre, b, y, B, l.out, a.param);
          ws.out[i + 2] = y;
          ++i;
        } else {
          bias_activation_forward(Act::Identity, pre, b, pre, B, l.out, 0.0);
        }
        break;
      }
      case LayerKind::Activation:
        activation_forward(l.act, xin, ws.act[i].data(), B, ws.width[i], l.param);
        ws.out[i + 1] = ws.act[i].data();
        break;
      case LayerKind::Dropout:
        if (train && l.param > 0) {
          T* y = ws.act[i].data();
          dropout_forward(xin, y, ws.mask[i].data(), B * ws.width[i], l.param,
                          derive_seed(derive_seed(seed, 0x5EEDull + static_cast<std::uint64_t>(i)), dropout_calls));
          ws.dropout_on[i] = true;
          any_dropout = true;
          ws.out[i + 1] = y;
        } else {
          ws.out[i + 1] = xin;  // identity: no copy
        }
        break;
    }
  }
  if (any_dropout) ++dropout_calls;
  ws.rows = B;
  return ws.out[L];
}

template <class T>
bool Model<T>::has_dropout() const {
  for (const auto& l : layers_)
    if (l.kind == LayerKind::Dropout && l.param > 0) return true;
  return false;
}

template <class T>
void Model<T>::backward(Workspace<T>& ws, const T* dy, T* dx, bool accumulate, T* grads) {
  if (ws.rows < 0) throw value_error("backward() needs a forward() on this model first");
  T* const gbuf = grads ? grads : grads_.data();
  const idx B = ws.rows;
  const idx L = static_cast<idx>(layers_.size());
  // below the first layer with parameters, gradients are needed only for dx
  idx stop = 0;
  if (!dx) {
    stop = L;
    for (idx i = 0; i < L; ++i)
      if (layers_[i].kind == LayerKind::Linear) { stop = i; break; }
  }
  const T* g = dy;
  T* bufs[2] = {ws.grad_a.data(), ws.grad_b.data()};
  int which = 0;
  auto next_buf = [&](idx i) -> T* {
    if (i == 0) return dx;
    T* p = bufs[which];
    which ^= 1;
    return p;
  };
  for (idx i = L - 1; i >= stop; --i) {
    const LayerSpec& l = layers_[i];
    const bool need_gout = i > stop || (i == 0 && dx);
    if (l.kind == LayerKind::Activation && i > 0 && fused(i - 1)) {
      // activation derivative and bias gradient in one pass, then the Linear's GEMMs
      const LayerSpec& lin = layers_[i - 1];
      T* dpre = bufs[which];
      which ^= 1;
      T* db = lin.bias ? gbuf + bias_offset_[i - 1] : nullptr;
      activation_bias_backward(l.act, g, ws.out[i], ws.out[i + 1], dpre, db, B, lin.out, l.param, accumulate);
      --i;
      const bool need = i > stop || (i == 0 && dx);
      T* gout = need ? next_buf(i) : nullptr;
      linear_backward<T>(dpre, ws.out[i], params_.data() + weight_offset_[i], gout, gbuf + weight_offset_[i],
                         nullptr, B, lin.in, lin.out, accumulate);
      if (!need) break;
      g = gout;
      continue;
    }
    if (!need_gout && l.kind != LayerKind::Linear) break;
    T* gout = need_gout ? next_buf(i) : nullptr;
    switch (l.kind) {
      case LayerKind::Linear:
        linear_backward(g, ws.out[i], params_.data() + weight_offset_[i], gout, gbuf + weight_offset_[i],
                        l.bias ? gbuf + bias_offset_[i] : nullptr, B, l.in, l.out, accumulate);
        break;
      case LayerKind::Activation:
        activation_backward(l.act, g, ws.out[i], ws.out[i + 1], gout, B, ws.width[i], l.param);
        break;
      case LayerKind::Dropout:
        if (ws.dropout_on[i]) dropout_backward(g, ws.mask[i].data(), gout, B * ws.width[i], l.param);
        else std::copy(g, g + B * ws.width[i], gout);
        break;
    }
    if (!need_gout) break;
    g = gout;
  }
  if (dx && L == 0) std::copy(dy, dy + B * ws.cap_in, dx);
}

template <class T>
double Model<T>::loss_and_grad(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                               const T* target, bool train) {
  const T* out = forward(ws_, x, B, in, train, false);
  const idx C = ws_.width[layers_.size()];
  const double value = loss_forward(loss, out, B, C, labels, target, ws_.dout.data());
  // every gradient is rewritten, the same as zero_grad followed by accumulation
  backward(ws_, ws_.dout.data(), nullptr, false);
  return value;
}



template class Model<float>;
template class Model<double>;

}  // namespace fastmlp
