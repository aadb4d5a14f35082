#include "model.h"

#include <algorithm>
#include <string>

#include "rng.h"

namespace fastmlp {

namespace {
std::string block_width_error(idx begin, idx in, idx out) {
  return "the residual block opened at layer " + std::to_string(begin) + " takes " + std::to_string(in) +
         " features but gives " + std::to_string(out) + ": x + f(x) needs f to keep the width";
}
}  // namespace

template <class T>
Model<T>::Model(std::vector<Options> specs, std::uint64_t seed_, bool allocate) : seed(seed_), specs_(std::move(specs)) {
  const idx L = static_cast<idx>(specs_.size());
  std::vector<std::pair<idx, idx>> open;  // residual_begin layers not closed yet, with their input width
  idx width = -1, off = 0, boff = 0;
  param_offset_.assign(L, -1);
  buffer_offset_.assign(L, -1);
  partner_.assign(L, -1);
  for (idx i = 0; i < L; ++i) {
    const std::string where = "layer " + std::to_string(i) + " (" + specs_[i].kind + "): ";
    try {
      layers_.push_back(make_layer<T>(specs_[i]));
      const Layer<T>& l = *layers_.back();
      if (width < 0 && l.in_width() >= 0 && open.empty() && in_features_ < 0) in_features_ = l.in_width();
      if (l.nesting() > 0) open.push_back({i, width});
      if (l.nesting() < 0) {
        if (open.empty()) throw value_error("residual_end without a residual_begin");
        const auto [b, bw] = open.back();
        open.pop_back();
        if (bw >= 0 && width >= 0 && bw != width) throw value_error(block_width_error(b, bw, width));
        partner_[i] = b;
        partner_[b] = i;
      }
      width = l.out_width(width);
    } catch (const value_error& e) {
      throw value_error(where + e.what());
    }
    for (const TensorDecl& t : layers_.back()->params()) {
      if (param_offset_[i] < 0) param_offset_[i] = off;
      slots_.push_back({i, t.name, off, t.rows, t.cols, t.vector, t.decay, t.scalar});
      off = checked_add(off, checked_mul(t.rows, t.cols));
    }
    for (const TensorDecl& t : layers_.back()->buffers()) {
      if (buffer_offset_[i] < 0) buffer_offset_[i] = boff;
      bslots_.push_back({i, t.name, boff, t.rows, t.cols, t.vector, false, t.scalar});
      boff = checked_add(boff, checked_mul(t.rows, t.cols));
    }
  }
  if (!open.empty()) throw value_error("layer " + std::to_string(open.back().first) + ": residual_begin is never closed");
  fused_.assign(L, false);
  for (idx i = 0; i + 1 < L; ++i) fused_[i] = layers_[i]->hosts_epilogue() && layers_[i + 1]->epilogue() != nullptr;
  if (!allocate) return;
  params_.resize(off);
  grads_.resize(off);
  buffers_.resize(boff);
  reset_parameters(seed_);
}

template <class T>
void Model<T>::reset_parameters(std::uint64_t s) {
  seed = s;
  dropout_calls = 0;
  for (idx i = 0; i < n_layers(); ++i) {
    T* p = param_offset_[i] >= 0 ? params_.data() + param_offset_[i] : nullptr;
    T* b = buffer_offset_[i] >= 0 ? buffers_.data() + buffer_offset_[i] : nullptr;
    layers_[i]->reset(p, b, derive_seed(s, 2 * static_cast<std::uint64_t>(i)),
                      derive_seed(s, 2 * static_cast<std::uint64_t>(i) + 1));
  }
}

template <class T>
void Model<T>::check_input(idx in) const {
  if (in_features_ >= 0 && in != in_features_)
    throw value_error("input has " + std::to_string(in) + " features, but the model expects " +
                      std::to_string(in_features_));
}

template <class T>
idx Model<T>::out_features(idx in) const {
  check_input(in);
  idx w = in;
  for (const auto& l : layers_) w = l->out_width(w);
  return w;
}

template <class T>
bool Model<T>::has_dropout() const {
  for (const auto& l : layers_)
    if (l->random(true)) return true;
  return false;
}

template <class T>
bool Model<T>::rows_independent(bool train) const {
  for (const auto& l : layers_)
    if (!l->rows_independent(train)) return false;
  return true;
}

template <class T>
typename Model<T>::Needs Model<T>::needs(idx i, idx B, const std::vector<idx>& width, bool bf16,
                                         bool forward_only) const {
  const Layer<T>& l = *layers_[i];
  Needs n;
  const bool own = !(i > 0 && in_place(i - 1)) && !l.identity(true);
  if (own) n.act = checked_mul(B, width[i + 1]);
  n.scratch = l.scratch_size(B, width[i]);
  n.bytes = l.byte_scratch(B, width[i]);
  if (bf16) n.half = l.bf16_scratch(B, width[i]);
  if (l.nesting() < 0 && !forward_only) n.skip = checked_mul(B, width[i + 1]);
  return n;
}

template <class T>
std::vector<idx> Model<T>::widths(idx in) const {
  const idx L = n_layers();
  std::vector<idx> width(L + 1, in);
  for (idx i = 0; i < L; ++i) {
    width[i + 1] = layers_[i]->out_width(width[i]);
    if (partner_[i] >= 0 && partner_[i] < i && width[i] != width[partner_[i]])
      throw value_error(block_width_error(partner_[i], width[partner_[i]], width[i]));
  }
  return width;
}

template <class T>
idx Model<T>::forward_bytes(idx B, idx in, bool bf16) const {
  const std::vector<idx> width = widths(in);
  idx bytes = 0;
  for (idx i = 0; i < n_layers(); ++i) {
    const Needs n = needs(i, B, width, bf16, true);
    bytes = checked_add(bytes, checked_add(checked_mul(checked_add(n.act, n.scratch), idx(sizeof(T))),
                                           checked_add(n.bytes, checked_mul(n.half, 2))));
  }
  return bytes;
}

template <class T>
bool Model<T>::fits(const Workspace<T>& ws, idx B, idx in) const {
  if (in != ws.in || ws.width.size() != static_cast<size_t>(n_layers() + 1)) return false;
  if (!ws.forward_only) {
    if (ws.dout.size() < checked_mul(B, ws.width.back())) return false;
    idx wmax = 0;
    for (idx w : ws.width) wmax = std::max(wmax, w);
    if (ws.grad_a.size() < checked_mul(B, wmax) || ws.grad_b.size() < B * wmax) return false;
  }
  for (idx i = 0; i < n_layers(); ++i) {
    const Needs n = needs(i, B, ws.width, ws.bf16, ws.forward_only);
    if (ws.act[i].size() < n.act || ws.scratch[i].size() < n.scratch || ws.bytes[i].size() < n.bytes ||
        ws.skip_grad[i].size() < n.skip || ws.half[i].size() < n.half)
      return false;
  }
  return true;
}

// Buffers are sized by what this batch needs (rows x each layer's width), each
// grown on its own; new ones are allocated first and committed only when every
// allocation has succeeded, so a MemoryError leaves the workspace as it was.
template <class T>
void Model<T>::ensure_workspace(Workspace<T>& ws, idx B, idx in) const {
  const idx L = n_layers();
  std::vector<idx> width = widths(in);
  idx wmax = in;
  for (idx w : width) wmax = std::max(wmax, w);
  std::vector<idx> need_act(L, 0), need_scratch(L, 0), need_bytes(L, 0), need_skip(L, 0), need_half(L, 0);
  for (idx i = 0; i < L; ++i) {
    const Needs n = needs(i, B, width, ws.bf16, ws.forward_only);
    need_half[i] = n.half;
    need_act[i] = n.act;
    need_scratch[i] = n.scratch;
    need_bytes[i] = n.bytes;
    need_skip[i] = n.skip;
  }
  // a forward-only workspace: no backward buffers
  const idx big = ws.forward_only ? 0 : checked_mul(B, wmax), nout = ws.forward_only ? 0 : checked_mul(B, width[L]);
  // grow into fresh buffers first
  auto grow = [](std::vector<Buffer<T>>& have, const std::vector<idx>& need, idx L_) {
    std::vector<Buffer<T>> fresh(L_);
    for (idx i = 0; i < L_; ++i)
      if (i >= static_cast<idx>(have.size()) || have[i].size() < need[i]) fresh[i].resize(need[i]);
    return fresh;
  };
  std::vector<Buffer<T>> act = grow(ws.act, need_act, L), scr = grow(ws.scratch, need_scratch, L),
                         skip = grow(ws.skip_grad, need_skip, L);
  std::vector<Buffer<std::uint8_t>> bytes(L);
  for (idx i = 0; i < L; ++i)
    if (i >= static_cast<idx>(ws.bytes.size()) || ws.bytes[i].size() < need_bytes[i]) bytes[i].resize(need_bytes[i]);
  std::vector<Buffer<std::uint16_t>> half(L);
  for (idx i = 0; i < L; ++i)
    if (i >= static_cast<idx>(ws.half.size()) || ws.half[i].size() < need_half[i]) half[i].resize(need_half[i]);
  Buffer<T> ga, gb, dout;
  if (ws.grad_a.size() < big) ga.resize(big);
  if (ws.grad_b.size() < big) gb.resize(big);
  if (ws.dout.size() < nout) dout.resize(nout);
  std::vector<const T*> out(L + 1, nullptr);
  std::vector<std::uint64_t> seeds(L, 0);
  // commit (nothing below allocates or throws)
  auto commit = [](auto& have, auto& fresh, idx L_) {
    if (static_cast<idx>(have.size()) != L_) have.resize(L_);
    for (idx i = 0; i < L_; ++i)
      if (fresh[i].size() > have[i].size()) have[i] = std::move(fresh[i]);
  };
  ws.act.reserve(L);
  ws.scratch.reserve(L);
  ws.skip_grad.reserve(L);
  ws.bytes.reserve(L);
  ws.half.reserve(L);
  commit(ws.act, act, L);
  commit(ws.scratch, scr, L);
  commit(ws.skip_grad, skip, L);
  commit(ws.bytes, bytes, L);
  commit(ws.half, half, L);
  if (ga.size()) ws.grad_a = std::move(ga);
  if (gb.size()) ws.grad_b = std::move(gb);
  if (dout.size()) ws.dout = std::move(dout);
  ws.width.swap(width);
  ws.out.swap(out);
  ws.seeds.swap(seeds);
  ws.in = in;
}

template <class T>
const std::uint32_t* const* Model<T>::weight_forms(Workspace<T>& ws, const FormsFor& f, int threads) const {
  const idx L = n_layers();
  idx first = L;  // the first layer with parameters: no dx
  for (idx i = L - 1; i >= 0; --i)
    if (param_offset_[i] >= 0) first = i;
  auto of = [&](idx i) {  // what layer i's forms serve
    FormsFor fi = f;
    fi.dx = f.dx && i > first;
    return fi;
  };
  auto words = [&](idx i) {  // layer i's forms, rounded up to 64 bytes (0: none)
    return param_offset_[i] >= 0 ? checked_add(layers_[i]->form_words(of(i)), 15) / 16 * 16 : 0;
  };
  idx total = 0;
  for (idx i = 0; i < L; ++i) total = checked_add(total, words(i));
  if (total == 0) return nullptr;
  ws.forms_store.reserve_uninitialized(total);  // every word written below before any pass reads it
  ws.forms_ptrs.assign(static_cast<size_t>(L), nullptr);  // (its capacity kept: no allocation after the first)
  for (idx i = 0, at = 0; i < L; at += words(i), ++i) {
    if (words(i) == 0) continue;
    layers_[i]->weight_forms(params_.data() + param_offset_[i], ws.forms_store.data() + at, of(i), threads);
    ws.forms_ptrs[i] = ws.forms_store.data() + at;
  }
  return ws.forms_ptrs.data();
}

template <class T>
LayerIO<T> Model<T>::io(const Workspace<T>& ws, idx i, idx B, T* gbuf) const {
  LayerIO<T> r;
  r.B = B;
  r.in = ws.width[i];
  r.out = ws.width[i + 1];
  r.x = ws.out[i];
  r.y = const_cast<T*>(ws.out[i + 1]);
  if (param_offset_[i] >= 0) {
    r.w = params_.data() + param_offset_[i];
    if (gbuf) r.g = gbuf + param_offset_[i];
  }
  if (buffer_offset_[i] >= 0) r.buf = const_cast<T*>(buffers_.data()) + buffer_offset_[i];
  r.scratch = const_cast<T*>(ws.scratch[i].data());
  r.bytes = const_cast<std::uint8_t*>(ws.bytes[i].data());
  if (ws.bf16) r.half = const_cast<std::uint16_t*>(ws.half[i].data());
  if (ws.forms) r.forms = ws.forms[i];
  if (partner_[i] >= 0) {
    const idx end = std::max(i, partner_[i]);
    r.skip = ws.out[std::min(i, partner_[i])];
    r.skip_grad = const_cast<T*>(ws.skip_grad[end].data());
  }
  if (ws.keep && (ws.keep[i].dy || ws.keep[i].bf)) r.keep = &ws.keep[i];
  r.train = ws.train;
  r.seed = ws.seeds[i];
  r.row0 = ws.row0;
  if (i == 0) r.probe = ws.probe;
  return r;
}

template <class T>
const T* Model<T>::forward(Workspace<T>& ws, const T* x, idx B, idx in, bool train, bool copy_input) {
  check_input(in);
  ws.rows = -2;  // from here on the buffers change: until this forward succeeds there is none to go back through
  if (!fits(ws, B, in)) ensure_workspace(ws, B, in);  // a step on a batch seen before allocates nothing
  if (copy_input) {
    Buffer<T>& c = ws.input_copy;
    if (c.size() < checked_mul(B, in)) c.resize(B * in);
    std::copy(x, x + B * in, c.data());
    x = c.data();
  }
  const idx L = n_layers();
  ws.train = train;
  ws.out[0] = x;
  bool any_random = false;
  const std::uint64_t call = ws.stream >= 0 ? static_cast<std::uint64_t>(ws.stream) : dropout_calls;
  for (idx i = 0; i < L; ++i) {
    const Layer<T>& l = *layers_[i];
    if (l.random(train)) {
      ws.seeds[i] = derive_seed(derive_seed(seed, 0x5EEDull + static_cast<std::uint64_t>(i)), call);
      any_random = true;
    }
    if (l.identity(train)) {
      ws.out[i + 1] = ws.out[i];
      continue;
    }
    ws.out[i + 1] = (i > 0 && in_place(i - 1)) ? ws.out[i] : ws.act[i].data();
    if (fused(i)) {  // the product, then bias + activation in one pass over it
      LayerIO<T> a = io(ws, i, B, nullptr);
      l.forward_product(a);
      const Layer<T>& next = *layers_[i + 1];
      ws.out[i + 2] = in_place(i) ? ws.out[i + 1] : ws.act[i + 1].data();
      next.epilogue()->bias_forward(const_cast<T*>(ws.out[i + 1]), l.bias_of(a.w), const_cast<T*>(ws.out[i + 2]), B,
                                    ws.width[i + 1]);
      ++i;
      continue;
    }
    l.forward(io(ws, i, B, nullptr));
  }
  if (any_random && ws.stream < 0) ++dropout_calls;
  ws.rows = B;
  return ws.out[L];
}

template <class T>
void Model<T>::check_backward(const Workspace<T>& ws) {
  if (ws.rows == -1 || ws.forward_only) throw value_error("backward() needs a forward() on this model first");
  if (ws.rows < 0)
    throw std::runtime_error("backward(): the last forward() failed, so there is no valid forward to "
                             "back-propagate; call forward() again first");
}

template <class T>
void Model<T>::backward(Workspace<T>& ws, const T* dy, T* dx, bool accumulate, T* grads) {
  check_backward(ws);
  T* const gbuf = grads ? grads : grads_.data();
  const idx B = ws.rows;
  const idx L = n_layers();
  // below the first layer with parameters, gradients are needed only for dx
  idx stop = 0;
  if (!dx) {
    stop = L;
    for (idx i = 0; i < L; ++i)
      if (param_offset_[i] >= 0) { stop = i; break; }
  }
  const T* g = dy;
  T* bufs[2] = {ws.grad_a.data(), ws.grad_b.data()};
  int which = 0;
  auto next_buf = [&](idx i) -> T* {
    if (i == 0 && dx) return dx;
    T* p = bufs[which];
    which ^= 1;
    return p;
  };
  for (idx i = L - 1; i >= stop; --i) {
    const Layer<T>& l = *layers_[i];
    if (i > 0 && fused(i - 1)) {
      // the epilogue's derivative and the bias gradient in one pass, then the product's
      const Layer<T>& host = *layers_[i - 1];
      LayerIO<T> h = io(ws, i - 1, B, gbuf);
      h.accumulate = accumulate;
      // (a deferred weight gradient in T: straight into the whole batch's kept rows)
      T* dpre = h.keep && h.keep->dy ? h.keep->dy + ws.row0 * ws.width[i] : bufs[which];
      if (dpre == bufs[which]) which ^= 1;
      l.epilogue()->bias_backward(g, ws.out[i], ws.out[i + 1], dpre, host.bias_of(h.g), B, ws.width[i], accumulate);
      --i;
      T* gout = (i > stop || (i == 0 && dx)) ? next_buf(i) : nullptr;
      host.backward_product(h, dpre, gout);
      if (!gout) break;
      g = gout;
      continue;
    }
    const bool need_gout = i > stop || (i == 0 && dx);
    if (l.nesting() < 0) {  // residual_end: keeps dy for the skip connection; the block gets dy as it is
      l.backward(io(ws, i, B, gbuf), g, nullptr);
      continue;
    }
    if (l.nesting() > 0) {  // residual_begin: the block's gradient plus the skip's
      if (!need_gout) break;
      T* gout = next_buf(i);
      l.backward(io(ws, i, B, gbuf), g, gout);
      g = gout;
      continue;
    }
    if (l.identity(ws.train)) continue;  // the gradient passes through unchanged
    if (!need_gout && param_offset_[i] < 0) break;
    T* gout = need_gout ? next_buf(i) : nullptr;
    LayerIO<T> a = io(ws, i, B, gbuf);
    a.accumulate = accumulate;
    l.backward(a, g, gout);
    if (!need_gout) break;
    g = gout;
  }
  if (dx && g != dx) std::copy(g, g + B * ws.width[0], dx);
}

template <class T>
double Model<T>::loss_and_grad(const T* x, idx B, idx in, const LossSpec<T>& loss, const std::int64_t* labels,
                               const T* target, bool train) {
  const T* out = forward(ws_, x, B, in, train, false);
  const idx C = ws_.width.back();
  const double value = loss_forward(loss, out, B, C, labels, target, ws_.dout.data());
  // every gradient is rewritten, the same as zero_grad followed by accumulation
  backward(ws_, ws_.dout.data(), nullptr, false);
  return value;
}

template class Model<float>;
template class Model<double>;

}  // namespace fastmlp
