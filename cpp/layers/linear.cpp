#include "linear.h"

#include <algorithm>
#include <type_traits>

#include "activations.h"
#include "blas.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "init.h"
#include "layer.h"
#include "pool.h"

namespace fastmlp {

namespace {
// db (out) (+)= sum over the B rows of dy (B, out)
template <class T>
FASTMLP_SIMD void column_sums(const T* dy, T* db, idx B, idx out, bool accumulate) {
  if (!accumulate)
    for (idx j = 0; j < out; ++j) db[j] = T(0);
  for (idx r = 0; r < B; ++r) {
    const T* dyr = dy + r * out;
    for (idx j = 0; j < out; ++j) db[j] += dyr[j];
  }
}

// ---- bfloat16 products (gemm_bf16.h): float32 in and out, the operands converted to bfloat16 in h (as
// bf16x2 words, P = bf16_pairs). Forward: xr (B, P(in)) rows, wt the panels of w^T (bf16_panel_words(in, out)).
// Backward, dw first, then dx in the same words: dyp (P(B), out) pairs and xp x's pair panels
// (bf16_panel_words(B, in)); dyr (B, P(out)) rows and wp w's pair panels (bf16_panel_words(out, in)).
// wbf, when set: w's forms converted once (weights_bf16), wt then wp.
template <class T>
void weights_bf16(const T* w, idx in, idx out, bf16x2* dst, bool dx, int threads) {
  if constexpr (std::is_same_v<T, float>) {
    bf16_panels_of_rows(w, out, in, dst, Bf16Isa::Auto, threads);
    if (dx) bf16_pairs(w, out, in, kBf16NR, dst + bf16_panel_words(in, out), Bf16Isa::Auto, threads);
  }
}
template <class T>
void forward_bf16(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, bf16* h, const bf16x2* wbf) {
  if constexpr (!std::is_same_v<T, float>) {
    throw value_error("bfloat16 products need a float32 model");
  } else {
    bf16x2 *xr = reinterpret_cast<bf16x2*>(h), *wt = xr + B * bf16_pairs(in);
    bf16_rows(x, B, in, xr, Bf16Isa::Auto, pool_threads());
    if (wbf) wt = const_cast<bf16x2*>(wbf);
    else bf16_panels_of_rows(w, out, in, wt, Bf16Isa::Auto, pool_threads());
    // y (B, out) = xr wt (+ b)
    gemm_bf16(xr, bf16_pairs(in), 1, wt, b, y, B, out, in, false, pool_threads());
  }
}
template <class T>
void backward_bf16(const T* dy, const T* x, const T* w, T* dx, T* dw, idx B, idx in, idx out, bool accumulate,
                   bf16* h, const bf16x2* wbf) {
  if constexpr (!std::is_same_v<T, float>) {
    throw value_error("bfloat16 products need a float32 model");
  } else {
    if (dw) {  // dw (out, in) (+)= dy^T x, summed over the batch: a = dyp (rs 1, cs out), b = xp
      bf16x2 *dyp = reinterpret_cast<bf16x2*>(h), *xp = dyp + bf16_pairs(B) * out;
      bf16_pairs(dy, B, out, out, dyp, Bf16Isa::Auto, pool_threads());
      bf16_pairs(x, B, in, kBf16NR, xp, Bf16Isa::Auto, pool_threads());
      gemm_bf16(dyp, 1, out, xp, nullptr, dw, out, in, B, accumulate, pool_threads());
    }
    if (!dx) return;
    // dx (B, in) = dy w, summed over the outputs: a = dyr (rs P(out), cs 1), b = wp
    bf16x2 *dyr = reinterpret_cast<bf16x2*>(h), *wp = dyr + B * bf16_pairs(out);
    bf16_rows(dy, B, out, dyr, Bf16Isa::Auto, pool_threads());
    if (wbf) wp = const_cast<bf16x2*>(wbf + bf16_panel_words(in, out));
    else bf16_pairs(w, out, in, kBf16NR, wp, Bf16Isa::Auto, pool_threads());
    gemm_bf16(dyr, bf16_pairs(out), 1, wp, nullptr, dx, B, in, out, false, pool_threads());
  }
}
}  // namespace

idx linear_bf16_weight_words(idx in, idx out) { return checked_add(bf16_panel_words(in, out), bf16_panel_words(out, in)); }

// words of dw's operands (dy's pairs, x's pair panels) for B rows
idx linear_dw_words(idx B, idx in, idx out) {
  return checked_add(checked_mul(bf16_pairs(B), out), bf16_panel_words(B, in));
}

// bfloat16 elements (two per bf16x2 word) of h for a batch of B rows
idx linear_bf16_scratch(idx B, idx in, idx out) {
  const idx fwd = checked_add(checked_mul(B, bf16_pairs(in)), bf16_panel_words(in, out));
  const idx dw = linear_dw_words(B, in, out);
  const idx dx = checked_add(checked_mul(B, bf16_pairs(out)), bf16_panel_words(out, in));
  return checked_mul(std::max({fwd, dw, dx}), 2);
}

namespace {
// dw (out, in) = dy^T (out, B) x (B, in), the B rows in K chunks: dy's rows r0[c] to r0[c + 1] and chunk c's
// x[c] ((r0[c + 1] - r0[c]), in), accumulated in chunk order; in slices of dw's longer side, a number of
// them fixed by the shape alone (each slice the same single-threaded products on any thread: the same
// bits for any thread count), taken by up to `threads` of the pool's threads
template <class T>
void dw_sliced(const T* dy, const T* const* x, const idx* r0, idx K, T* dw, idx in, idx out, int threads) {
  struct Slices {
    const T* dy;
    const T* const* x;
    const idx* r0;
    T* dw;
    idx K, in, out, n;
    static void run(void* p, idx s) {
      const auto* a = static_cast<const Slices*>(p);
      const bool rows = a->out >= a->in;  // slices of dw's rows, else of its columns
      const idx len = rows ? a->out : a->in, lo = len * s / a->n / 16 * 16,
                hi = s + 1 == a->n ? len : len * (s + 1) / a->n / 16 * 16;
      for (idx c = 0; c < a->K; ++c) {
        const idx B = a->r0[c + 1] - a->r0[c];
        const T* dyc = a->dy + a->r0[c] * a->out;
        const T beta = c == 0 ? T(0) : T(1);
        if (rows) gemm<T>(true, false, hi - lo, a->in, B, T(1), dyc + lo, a->out, a->x[c], a->in, beta,
                          a->dw + lo * a->in, a->in);
        else gemm<T>(true, false, a->out, hi - lo, B, T(1), dyc, a->out, a->x[c] + lo, a->in, beta, a->dw + lo, a->in);
      }
    }
  } sl{dy, x, r0, dw, K, in, out, 1};
  while (std::max(in, out) / (2 * sl.n) >= 192) sl.n *= 2;  // slices of 192 to 384 along the longer side
  parallel_take(threads, sl.n, &Slices::run, &sl);
}
}  // namespace

template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, bool fixed_order,
                    std::uint16_t* half, const std::uint32_t* forms, FiniteProbe* probe) {
  if (half) return forward_bf16(x, w, b, y, B, in, out, half, forms);
  if (fixed_order)
    return dense_forward<T>(x, w, b, y, B, in, out, pool_threads(), GemmIsa::Auto, probe,
                            reinterpret_cast<const T*>(forms));
  // y = x w^T, then + b on every row
  gemm<T>(false, true, B, out, in, T(1), x, in, w, in, T(0), y, out);
  if (b) bias_identity_forward(y, b, B, out);
}

template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, idx B, idx in,
                     idx out, bool accumulate, std::uint16_t* half, const std::uint32_t* forms) {
  if (half) {
    backward_bf16(dy, x, w, dx, dw, B, in, out, accumulate, half, forms);
    if (db) column_sums(dy, db, B, out, accumulate);
    return;
  }
  const T beta = accumulate ? T(1) : T(0);
  // dw (out, in) (+)= dy^T (out, B) x (B, in)
  if (dw) gemm<T>(true, false, out, in, B, T(1), dy, out, x, in, beta, dw, in);
  if (db) column_sums(dy, db, B, out, accumulate);
  // dx (B, in) = dy (B, out) w (out, in)
  if (dx) gemm<T>(false, false, B, in, out, T(1), dy, out, w, in, T(0), dx, in);
}

// ---- the layer: nn.Linear(in_features, out_features, bias=True), weight (out, in), bias (out)
template <class T>
class LinearLayer final : public Layer<T> {
 public:
  explicit LinearLayer(const Options& o)
      : in_(o.integer("in_features")), out_(o.integer("out_features")), bias_(o.flag("bias", true)),
        init_(parse_init(o, "init.")) {
    if (in_ < 0 || out_ < 0) throw value_error("Linear sizes must be >= 0");
    checked_add(checked_mul(in_, out_), out_);
  }
  idx in_width() const override { return in_; }
  idx out_width(idx in) const override {
    if (in >= 0 && in != in_)
      throw value_error("Linear expects " + std::to_string(in_) + " input features but the previous layers give " +
                        std::to_string(in));
    return out_;
  }
  std::vector<TensorDecl> params() const override {
    std::vector<TensorDecl> p{{"weight", out_, in_, false, true}};
    if (bias_) p.push_back({"bias", out_, 1, true, false});
    return p;
  }
  // nn.Linear.reset_parameters: weight by its init (default: uniform in +-1/sqrt(in));
  // the bias uniform in +-1/sqrt(in) with the default init, else zeros
  void reset(T* p, T*, std::uint64_t seed0, std::uint64_t seed1) const override {
    init_fill(init_, p, out_ * in_, in_, out_, seed0);
    if (!bias_) return;
    InitSpec b;
    b.kind = init_.kind == InitKind::LinearDefault ? InitKind::LinearDefault : InitKind::Zeros;
    init_fill(b, p + out_ * in_, out_, in_, out_, seed1);
  }
  bool hosts_epilogue() const override { return true; }
  // eval mode in float: gemm.h's product reads x through its finiteness probe
  bool probes_input(bool train, bool bf16) const override { return !train && !bf16; }
  const T* bias_of(const T* w) const override { return bias_ && w ? w + out_ * in_ : nullptr; }
  T* bias_of(T* g) const override { return bias_ && g ? g + out_ * in_ : nullptr; }

  // x is (B, in), w is (out, in), y is (B, out). Eval mode: gemm.h's fixed-order product (a row's
  // bits do not depend on its batch); training too for float32 inputs of 256+ features, where it is the
  // faster (bench/gemm_speed.py), else OpenBLAS's
  bool fixed_order(bool train) const { return !train || (std::is_same_v<T, float> && in_ >= 256); }
  void forward(const LayerIO<T>& io) const override {
    linear_forward(io.x, io.w, bias_of(io.w), io.y, io.B, in_, out_, fixed_order(io.train), io.half, io.forms,
                   io.probe);
  }
  void forward_product(const LayerIO<T>& io) const override {
    linear_forward<T>(io.x, io.w, nullptr, io.y, io.B, in_, out_, fixed_order(io.train), io.half, io.forms, io.probe);
  }
  // dy is (B, out), dx is (B, in) or null; dw (out, in) and db (out) in io.g (dw deferred: the rows kept)
  void backward(const LayerIO<T>& io, const T* dy, T* dx) const override {
    linear_backward(dy, io.x, io.w, dx, keep(io, dy), bias_of(io.g), io.B, in_, out_, io.accumulate, io.half, io.forms);
  }
  void backward_product(const LayerIO<T>& io, const T* dy, T* dx) const override {
    linear_backward<T>(dy, io.x, io.w, dx, keep(io, dy), nullptr, io.B, in_, out_, io.accumulate, io.half, io.forms);
  }
  // dw deferred (big weights): one product over the whole batch, not one per chunk summed after. Kept:
  // dy (rows, out); in bfloat16 dy's pairs (pairs(rows), out) then x's pair panels, as backward_bf16's
  idx deferred_grad_size() const override { return in_ * out_; }
  idx deferred_kept_size(idx rows, bool bf16) const override {
    return bf16 ? linear_dw_words(rows, in_, out_) : checked_mul(rows, out_);
  }
  // dw is (out, in) = dy^T x over the batch's rows
  void deferred_grad(const KeptRows<T>& k, const T* const* x, const idx* row0, idx chunks, T* dw,
                     int threads) const override {
    if (!k.bf) return dw_sliced(k.dy, x, row0, chunks, dw, in_, out_, threads);
    if constexpr (std::is_same_v<T, float>) {
      const bf16x2 *dyp = k.bf, *xp = dyp + bf16_pairs(k.rows) * out_;
      gemm_bf16(dyp, 1, out_, xp, nullptr, dw, out_, in_, k.rows, false, threads);
    }
  }
  idx bf16_scratch(idx B, idx) const override { return linear_bf16_scratch(B, in_, out_); }
  // a deferred dw: this pass's rows kept (deferred_kept_size; in bfloat16 converted at pair row0 / 2, an
  // even row), and no dw here (null); else io.g's dw
  T* keep(const LayerIO<T>& io, const T* dy) const {
    if (!io.keep) return io.g;
    const KeptRows<T>& k = *io.keep;
    if constexpr (std::is_same_v<T, float>) {
      if (k.bf) {
        const idx p0 = io.row0 / 2, P = bf16_pairs(k.rows);
        bf16_pairs(dy, io.B, out_, out_, k.bf + p0 * out_, Bf16Isa::Auto, 1);
        bf16_pairs(io.x, io.B, in_, kBf16NR, k.bf + P * out_ + p0 * kBf16NR, Bf16Isa::Auto, 1, P * kBf16NR);
        return nullptr;
      }
    }
    T* to = k.dy + io.row0 * out_;
    if (to != dy) std::copy(dy, dy + io.B * out_, to);
    return nullptr;
  }
  // bfloat16: w's forms for the products (linear_bf16_weight_words); else, where the forward runs the
  // fixed-order product, w's packed panels (gemm.h's dense_pack: elements of T in 32-bit words)
  idx form_words(const FormsFor& f) const override {
    if (f.bf16) return linear_bf16_weight_words(in_, out_);
    return fixed_order(f.train) ? checked_mul(dense_pack_size<T>(f.rows, in_, out_), idx(sizeof(T) / 4)) : 0;
  }
  void weight_forms(const T* w, std::uint32_t* dst, const FormsFor& f, int threads) const override {
    if (f.bf16) return weights_bf16(w, in_, out_, dst, f.dx, threads);
    dense_pack<T>(w, in_, out_, reinterpret_cast<T*>(dst), threads);
  }

 private:
  idx in_, out_;
  bool bias_;
  InitSpec init_;
};
FASTMLP_REGISTER_LAYER("linear", LinearLayer);

template void linear_forward<float>(const float*, const float*, const float*, float*, idx, idx, idx, bool,
                                    std::uint16_t*, const std::uint32_t*, FiniteProbe*);
template void linear_forward<double>(const double*, const double*, const double*, double*, idx, idx, idx, bool,
                                     std::uint16_t*, const std::uint32_t*, FiniteProbe*);
template void linear_backward<float>(const float*, const float*, const float*, float*, float*, float*,
                                     idx, idx, idx, bool, std::uint16_t*, const std::uint32_t*);
template void linear_backward<double>(const double*, const double*, const double*, double*, double*,
                                      double*, idx, idx, idx, bool, std::uint16_t*, const std::uint32_t*);

}  // namespace fastmlp
