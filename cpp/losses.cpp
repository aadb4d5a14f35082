#include "losses.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "vmath.h"

namespace fastmlp {

namespace {

double nan() { return std::numeric_limits<double>::quiet_NaN(); }

// An element-wise loss: f(x, t, column) gives (value, d value / d x). Sample
// weights, per-column weights, reductions and scale are applied here, once for
// every such loss. MultiLabelSoftMarginLoss: a row's loss is the mean of its C
// elements ('sum' and 'none' sum those row means); KLDivLoss 'batchmean':
// 'mean' divides by the rows' weight, not times C.
template <class T, class F>
double elementwise_loss(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C, F f) {
  double wsum = 0;
  for (idx r = 0; r < B; ++r) wsum += sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
  const bool mean = sp.reduction == Reduction::Mean, per_row = sp.kind == LossKind::MultiLabelSoftMargin;
  if (mean && (B == 0 || C == 0)) {
    if (dout) std::fill(dout, dout + B * C, T(0));
    return nan();
  }
  const double k = (mean ? 1.0 / (wsum * (sp.batchmean ? 1.0 : double(C))) : per_row ? 1.0 / double(C) : 1.0) *
                   sp.scale;
  double s = 0;
  for (idx r = 0; r < B; ++r) {
    const double w = sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
    double row = 0;
    for (idx j = 0; j < C; ++j) {
      const idx i = r * C + j;
      const double cw = sp.weight ? double(sp.weight[j]) : 1.0;
      auto [v, g] = f(double(x[i]), double(t[i]), j);
      row += cw * v;
      if (dout) dout[i] = T(k * w * cw * g);
      if (sp.values && !per_row) sp.values[i] = T(k * w * cw * v);
    }
    if (sp.values && per_row) sp.values[r] = T(k * w * row);
    s += w * row;
  }
  return s * k;
}

// MSELoss: (x - t)^2
template <class T>
double mse_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  return elementwise_loss(sp, x, t, dout, B, C, [](double xi, double ti, idx) {
    const double d = xi - ti;
    return std::pair<double, double>(d * d, 2 * d);
  });
}

// L1Loss: |x - t|, gradient sign(x - t) (0 at 0)
template <class T>
double l1_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  return elementwise_loss(sp, x, t, dout, B, C, [](double xi, double ti, idx) {
    const double d = xi - ti;
    return std::pair<double, double>(std::fabs(d), double((d > 0) - (d < 0)));
  });
}

// HuberLoss: 0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta)
template <class T>
double huber_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  const double delta = sp.delta;
  return elementwise_loss(sp, x, t, dout, B, C, [delta](double xi, double ti, idx) {
    const double d = xi - ti, a = std::fabs(d);
    if (a < delta) return std::pair<double, double>(0.5 * d * d, d);
    return std::pair<double, double>(delta * (a - 0.5 * delta), d > 0 ? delta : -delta);
  });
}

// BCEWithLogitsLoss: (1 - t) x + L log(1 + e^-x), L = 1 + (pos_weight - 1) t,
// with log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|) so nothing overflows.
template <class T>
double bce_with_logits_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  const T* pw = sp.pos_weight;
  const double clip = sp.log_clip, lo = clip > 0 ? -std::log1p(-clip) : 0, hi = clip > 0 ? -std::log(clip) : 0;
  return elementwise_loss(sp, x, t, dout, B, C, [pw, clip, lo, hi](double xi, double ti, idx j) {
    const double L = pw ? 1.0 + (double(pw[j]) - 1.0) * ti : 1.0;
    const double e = std::exp(-std::fabs(xi));
    const double sig_neg = xi >= 0 ? e / (1 + e) : 1 / (1 + e);  // sigma(-x)
    const double sp_neg = std::max(-xi, 0.0) + std::log1p(e);  // log(1 + e^-x) = -log sigma(x)
    if (clip > 0) {  // -t log p - (1 - t) log(1 - p) with p clipped; -log(1 - p) = x - log sigma(x)
      const double a = std::min(std::max(sp_neg, lo), hi), b = std::min(std::max(xi + sp_neg, lo), hi);
      return std::pair<double, double>((pw ? double(pw[j]) : 1.0) * ti * a + (1 - ti) * b, (1 - ti) - L * sig_neg);
    }
    return std::pair<double, double>((1 - ti) * xi + L * sp_neg, (1 - ti) - L * sig_neg);
  });
}

// PoissonNLLLoss (full=False): exp(x) - t x with log_input, else x - t log(x + eps)
template <class T>
double poisson_nll_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  const bool log_input = sp.log_input;
  const double eps = sp.eps;
  return elementwise_loss(sp, x, t, dout, B, C, [log_input, eps](double xi, double ti, idx) {
    if (log_input) {
      const double e = std::exp(xi);
      return std::pair<double, double>(e - ti * xi, e - ti);
    }
    return std::pair<double, double>(xi - ti * std::log(xi + eps), 1 - ti / (xi + eps));
  });
}

// BCELoss on probabilities x in [0, 1]: -(t max(log x, -100) + (1 - t) max(log(1 - x), -100)),
// gradient (x - t) / max(x (1 - x), eps), as PyTorch clamps both (its eps is the float 1e-12).
template <class T>
double bce_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  for (idx i = 0; i < B * C; ++i) {
    if (!(x[i] >= T(0) && x[i] <= T(1)))
      throw value_error("BCELoss: all elements of input should be between 0 and 1 (got " + std::to_string(x[i]) +
                        "); for logits use BCEWithLogitsLoss");
    if (!(t[i] >= T(0) && t[i] <= T(1)))
      throw value_error("BCELoss: all elements of target should be between 0 and 1 (got " +
                        std::to_string(t[i]) + ")");
  }
  return elementwise_loss(sp, x, t, dout, B, C, [](double xi, double ti, idx) {
    const double v = -(ti * std::max(std::log(xi), -100.0) + (1 - ti) * std::max(std::log1p(-xi), -100.0));
    return std::pair<double, double>(v, (xi - ti) / std::max((1 - xi) * xi, double(1e-12f)));
  });
}

// SmoothL1Loss: 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta (beta 0: L1Loss)
template <class T>
double smooth_l1_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  const double beta = sp.beta;
  return elementwise_loss(sp, x, t, dout, B, C, [beta](double xi, double ti, idx) {
    const double d = xi - ti, a = std::fabs(d), sign = double((d > 0) - (d < 0));
    if (a < beta) return std::pair<double, double>(0.5 * d * d / beta, d / beta);
    return std::pair<double, double>(a - 0.5 * beta, sign);
  });
}

// KLDivLoss on log-probabilities x: t (log t - x) (0 where t = 0), gradient -t;
// with log_target, e^t (t - x), gradient -e^t.
template <class T>
double kl_div_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  const bool log_target = sp.log_target;
  return elementwise_loss(sp, x, t, dout, B, C, [log_target](double xi, double ti, idx) {
    if (log_target) {
      const double e = std::exp(ti);
      return std::pair<double, double>(e * (ti - xi), -e);
    }
    return std::pair<double, double>((ti == 0 ? 0.0 : ti * std::log(ti)) - ti * xi, -ti);
  });
}

// GaussianNLLLoss: x is (B, 2D), means x[:, :D] and variances x[:, D:]; t is (B, 2D), its first D
// columns the targets. l = 0.5 (log v + (m - t)^2 / v) (+ 0.5 log 2 pi when full), v = max(var, eps);
// as PyTorch clamps under no_grad, d l / d var is taken at the clamped v.
template <class T>
double gaussian_nll_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B, idx C) {
  if (C % 2) throw value_error("GaussianNLLLoss: the input needs an even number of columns, the means then the "
                               "variances, got " + std::to_string(C));
  const idx D = C / 2;
  for (idx r = 0; r < B; ++r)
    for (idx j = 0; j < D; ++j)
      if (x[r * C + D + j] < T(0)) throw value_error("GaussianNLLLoss: var has negative entry/entries");
  double wsum = 0;
  for (idx r = 0; r < B; ++r) wsum += sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
  const bool mean = sp.reduction == Reduction::Mean;
  if (mean && (B == 0 || D == 0)) {
    if (dout) std::fill(dout, dout + B * C, T(0));
    return nan();
  }
  const double k = (mean ? 1.0 / (wsum * double(D)) : 1.0) * sp.scale;
  const double c = sp.full ? 0.5 * std::log(2 * 3.14159265358979323846) : 0.0;
  double s = 0;
  for (idx r = 0; r < B; ++r) {
    const double w = sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
    const T* xr = x + r * C;  // (2D) means then variances
    for (idx j = 0; j < D; ++j) {
      const double v = std::max(double(xr[D + j]), sp.eps), d = double(xr[j]) - double(t[r * C + j]);
      const double l = 0.5 * (std::log(v) + d * d / v) + c;
      s += w * l;
      if (sp.values) sp.values[r * D + j] = T(k * w * l);
      if (dout) {
        dout[r * C + j] = T(k * w * d / v);
        dout[r * C + D + j] = T(k * w * 0.5 * (1 / v - d * d / (v * v)));
      }
    }
  }
  return s * k;
}

// NLLLoss on log-probabilities: -w_y x_y per row, 'mean' divided by the rows' sum of w_y
// (ignored rows left out), as PyTorch.
template <class T>
double nll_loss_forward(const LossSpec<T>& sp, const T* x, const std::int64_t* y, T* dout, idx B, idx C) {
  const double denom = loss_mean_denominator(sp, B, C, y);
  const bool mean = sp.reduction == Reduction::Mean;
  const double k = (mean ? (denom > 0 ? 1.0 / denom : 0.0) : 1.0) * sp.scale;
  if (dout) std::fill(dout, dout + B * C, T(0));
  double total = 0;
  for (idx r = 0; r < B; ++r) {
    double l = 0;
    if (y[r] != sp.ignore_index) {
      const double w = (sp.sample_weight ? double(sp.sample_weight[r]) : 1.0) *
                       (sp.weight ? double(sp.weight[y[r]]) : 1.0);
      l = -w * double(x[r * C + y[r]]);
      if (dout) dout[r * C + y[r]] = T(-k * w);
    }
    total += l;
    if (sp.values) sp.values[r] = T(k * l);
  }
  if (mean) return denom > 0 ? total * k : nan();
  return total * k;
}

// log-sum-exp of a row, shifted by its maximum
template <class T>
double row_logsumexp(const T* x, idx C) {
  double m = -std::numeric_limits<double>::infinity();
  for (idx j = 0; j < C; ++j) m = std::max(m, double(x[j]));
  if (std::isinf(m)) return m;
  double s = 0;
  for (idx j = 0; j < C; ++j) s += std::exp(double(x[j]) - m);
  return m + std::log(s);
}

// ---- CrossEntropyLoss with class-index targets (log-softmax + NLL, label smoothing,
// class weights and ignore_index as in PyTorch). One exp per logit, by the
// vectorized vexp: rows are taken kTile logits at a time, their shifted logits
// x - max(row) turned into exponentials in one flat pass, and the gradient is
// made from those. Rows longer than kTile go in chunks, computing their
// exponentials twice.
constexpr idx kTile = 2048;

template <class T>
FASTMLP_SIMD double cross_entropy_rows(const LossSpec<T>& sp, const T* x, const std::int64_t* y, T* dout, idx B,
                                       idx C, double k, double wall) {
  const double eps = sp.label_smoothing, c = eps / double(C);
  // the reported -log p_y with p_y clipped to [log_clip, 1 - log_clip]
  const bool clip = sp.log_clip > 0;
  const double clip_lo = clip ? -std::log1p(-sp.log_clip) : 0, clip_hi = clip ? -std::log(sp.log_clip) : 0;
  double e[kTile], mrow[kTile];
  const idx R = C > 0 && C <= kTile ? kTile / C : 1;  // rows per tile
  double total = 0;
  for (idx r0 = 0; r0 < B; r0 += R) {
    const idx r1 = std::min(B, r0 + R);
    const bool whole = C <= kTile;  // the tile holds whole rows
    if (whole) {
      for (idx r = r0; r < r1; ++r) {
        const T* xr = x + r * C;
        double m = -std::numeric_limits<double>::infinity();
        for (idx j = 0; j < C; ++j) m = std::max(m, double(xr[j]));
        mrow[r - r0] = m;
        double* er = e + (r - r0) * C;
        for (idx j = 0; j < C; ++j) er[j] = double(xr[j]) - m;
      }
      const idx n = (r1 - r0) * C;
      for (idx i = 0; i < n; ++i) e[i] = vexp(e[i]);
    }
    for (idx r = r0; r < r1; ++r) {
      T* dr = dout ? dout + r * C : nullptr;
      if (y[r] == sp.ignore_index) {
        if (dr) std::fill(dr, dr + C, T(0));
        if (sp.values) sp.values[r] = T(0);
        continue;
      }
      const T* xr = x + r * C;
      double* er = whole ? e + (r - r0) * C : e;
      double m = mrow[r - r0], s = 0;
      if (!whole) {  // one long row: its maximum, then the sum of its exponentials chunk by chunk
        m = -std::numeric_limits<double>::infinity();
        for (idx j = 0; j < C; ++j) m = std::max(m, double(xr[j]));
        for (idx c0 = 0; c0 < C && std::isfinite(m); c0 += kTile) {
          const idx n = std::min(kTile, C - c0);
          for (idx j = 0; j < n; ++j) e[j] = vexp(double(xr[c0 + j]) - m);
          for (idx j = 0; j < n; ++j) s += e[j];
        }
      } else {
        for (idx j = 0; j < C; ++j) s += er[j];
      }
      const bool finite = std::isfinite(m);
      const double lse = finite ? m + std::log(s) : m;
      const idx yr = y[r];
      const double wy = sp.weight ? double(sp.weight[yr]) : 1.0;
      const double w = sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
      double nll = lse - double(xr[yr]);  // -log p_y
      if (clip) nll = std::min(std::max(nll, clip_lo), clip_hi);
      double loss = (1 - eps) * wy * nll;
      if (eps > 0) {
        double smooth = 0;
        for (idx j = 0; j < C; ++j) smooth += (sp.weight ? double(sp.weight[j]) : 1.0) * (lse - double(xr[j]));
        loss += c * smooth;
      }
      total += w * loss;
      if (sp.values) sp.values[r] = T(k * w * loss);
      if (!dr) continue;
      // d/dx_j = k w ((1 - eps) w_y (p_j - [j == y]) + eps / C (wall p_j - w_j)), p = softmax(x)
      const double kw = k * w, a = (1 - eps) * wy;
      if (!finite) s = 1;  // an infinite or NaN logit: p_j = e^(x_j - lse), NaN or exact 0/1 as in PyTorch
      for (idx c0 = 0; c0 < C; c0 += kTile) {
        const idx n = std::min(kTile, C - c0);
        if (!finite)
          for (idx j = 0; j < n; ++j) er[j] = vexp(double(xr[c0 + j]) - lse);
        else if (!whole)
          for (idx j = 0; j < n; ++j) er[j] = vexp(double(xr[c0 + j]) - m);
        for (idx j = 0; j < n; ++j) {
          const double p = er[j] / s, hit = c0 + j == yr ? 1.0 : 0.0;
          const double wj = sp.weight ? double(sp.weight[c0 + j]) : 1.0;
          dr[c0 + j] = T(kw * (a * (p - hit) + c * (wall * p - wj)));
        }
      }
    }
  }
  return total;
}

template <class T>
double cross_entropy_loss_forward(const LossSpec<T>& sp, const T* x, const std::int64_t* y, T* dout,
                                  idx B, idx C) {
  auto cw = [&](idx j) { return sp.weight ? double(sp.weight[j]) : 1.0; };
  double wall = 0;  // sum of all class weights
  for (idx j = 0; j < C; ++j) wall += cw(j);
  double wsum = 0;  // the 'mean' denominator: sum of the rows' weights
  for (idx r = 0; r < B; ++r)
    if (y[r] != sp.ignore_index) wsum += (sp.sample_weight ? double(sp.sample_weight[r]) : 1.0) * cw(y[r]);
  const bool mean = sp.reduction == Reduction::Mean;
  const double k = (mean ? (wsum > 0 ? 1.0 / wsum : 0.0) : 1.0) * sp.scale;
  const double total = cross_entropy_rows(sp, x, y, dout, B, C, k, wall);
  if (mean) return wsum > 0 ? total / wsum * sp.scale : nan();
  return total * sp.scale;
}

// ---- CrossEntropyLoss with class-probability targets (smoothed towards uniform)
template <class T>
double cross_entropy_prob_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B,
                                       idx C) {
  const double eps = sp.label_smoothing;
  auto target = [&](idx r, idx j) { return double(t[r * C + j]) * (1 - eps) + eps / double(C); };
  double total = 0, swsum = 0;
  for (idx r = 0; r < B; ++r) swsum += sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
  const double k = (sp.reduction == Reduction::Mean ? 1.0 / swsum : 1.0) * sp.scale;
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    const double lse = row_logsumexp(xr, C);
    const double sw = sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
    double wt = 0, row = 0;  // sum_j w_j t_j, the row's loss
    for (idx j = 0; j < C; ++j) {
      double wj = sp.weight ? double(sp.weight[j]) : 1.0;
      double tj = target(r, j);
      if (tj != 0) row += wj * tj * (lse - double(xr[j]));
      wt += wj * tj;
    }
    total += sw * row;
    if (sp.values) sp.values[r] = T(k * sw * row);
    if (dout)
      for (idx j = 0; j < C; ++j) {
        double wj = sp.weight ? double(sp.weight[j]) : 1.0;
        double p = std::exp(double(xr[j]) - lse);
        dout[r * C + j] = T(k * sw * (wt * p - wj * target(r, j)));
      }
  }
  return B == 0 && sp.reduction == Reduction::Mean ? nan() : total * k;
}

}  // namespace

template <class T>
double loss_forward(const LossSpec<T>& sp, const T* out, idx B, idx C, const std::int64_t* labels,
                    const T* target, T* dout) {
  checked_mul(B, C);
  const bool nll = sp.kind == LossKind::NLL;
  if (sp.kind == LossKind::CrossEntropy || nll) {
    const char* name = nll ? "NLLLoss" : "CrossEntropyLoss";
    if (C == 0 && B > 0) throw value_error(std::string(name) + " needs at least one class column");
    if (nll && !labels) throw value_error("NLLLoss needs class-index targets (integers)");
    for (idx r = 0; labels && r < B; ++r)
      if (labels[r] != sp.ignore_index && (labels[r] < 0 || labels[r] >= C))
        throw value_error(std::string(name) + ": target " + std::to_string(labels[r]) + " is out of bounds for " +
                          std::to_string(C) + " classes");
    if (nll) return nll_loss_forward(sp, out, labels, dout, B, C);
    return labels ? cross_entropy_loss_forward(sp, out, labels, dout, B, C)
                  : cross_entropy_prob_loss_forward(sp, out, target, dout, B, C);
  }
  if (!target) throw value_error("this loss needs a floating-point target of the output's shape");
  switch (sp.kind) {
    case LossKind::MSE: return mse_loss_forward(sp, out, target, dout, B, C);
    case LossKind::L1: return l1_loss_forward(sp, out, target, dout, B, C);
    case LossKind::Huber: return huber_loss_forward(sp, out, target, dout, B, C);
    case LossKind::BCEWithLogits: return bce_with_logits_loss_forward(sp, out, target, dout, B, C);
    case LossKind::PoissonNLL: return poisson_nll_loss_forward(sp, out, target, dout, B, C);
    case LossKind::MultiLabelSoftMargin: return bce_with_logits_loss_forward(sp, out, target, dout, B, C);
    case LossKind::BCE: return bce_loss_forward(sp, out, target, dout, B, C);
    case LossKind::SmoothL1: return smooth_l1_loss_forward(sp, out, target, dout, B, C);
    case LossKind::KLDiv: return kl_div_loss_forward(sp, out, target, dout, B, C);
    case LossKind::GaussianNLL: return gaussian_nll_loss_forward(sp, out, target, dout, B, C);
    default: break;
  }
  throw value_error("unknown loss");
}

template <class T>
double loss_mean_denominator(const LossSpec<T>& sp, idx B, idx C, const std::int64_t* labels) {
  if (sp.reduction != Reduction::Mean) return 1.0;
  const bool by_label = (sp.kind == LossKind::CrossEntropy || sp.kind == LossKind::NLL) && labels;
  double d = 0;
  for (idx r = 0; r < B; ++r) {
    const double w = sp.sample_weight ? double(sp.sample_weight[r]) : 1.0;
    if (by_label) {
      const std::int64_t y = labels[r];
      if (y != sp.ignore_index && y >= 0 && y < C) d += w * (sp.weight ? double(sp.weight[y]) : 1.0);
    } else {
      d += w;
    }
  }
  // 'sum' of MultiLabelSoftMarginLoss sums the rows' means over their C elements
  if (sp.kind == LossKind::CrossEntropy || sp.kind == LossKind::NLL || sp.kind == LossKind::MultiLabelSoftMargin ||
      sp.batchmean)
    return d;
  return sp.kind == LossKind::GaussianNLL ? d * double(C / 2) : d * double(C);
}

template <class T>
idx count_correct(const T* out, idx B, idx C, const std::int64_t* labels, const T* target,
                  std::int64_t ignore_index, idx& scored) {
  auto argmax = [C](const T* row) {
    idx best = 0;
    for (idx j = 1; j < C; ++j) if (row[j] > row[best]) best = j;
    return best;
  };
  idx correct = 0;
  for (idx r = 0; r < B; ++r) {
    if (labels && labels[r] == ignore_index) continue;
    ++scored;
    const T* row = out + r * C;
    idx pred = C == 1 ? idx(row[0] > T(0)) : argmax(row);
    idx truth = labels ? labels[r] : (C == 1 ? idx(target[r] > T(0.5)) : argmax(target + r * C));
    correct += pred == truth;
  }
  return correct;
}

template double loss_forward<float>(const LossSpec<float>&, const float*, idx, idx, const std::int64_t*,
                                    const float*, float*);
template double loss_forward<double>(const LossSpec<double>&, const double*, idx, idx,
                                     const std::int64_t*, const double*, double*);
template double loss_mean_denominator<float>(const LossSpec<float>&, idx, idx, const std::int64_t*);
template double loss_mean_denominator<double>(const LossSpec<double>&, idx, idx, const std::int64_t*);
template idx count_correct<float>(const float*, idx, idx, const std::int64_t*, const float*, std::int64_t, idx&);
template idx count_correct<double>(const double*, idx, idx, const std::int64_t*, const double*, std::int64_t, idx&);

}  // namespace fastmlp
