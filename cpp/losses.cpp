#include "losses.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fastmlp {

namespace {

double nan() { return std::numeric_limits<double>::quiet_NaN(); }
double mean_scale(Reduction r, double count) { return r == Reduction::Mean ? 1.0 / count : 1.0; }

// ---- MSELoss: (out - target)^2
template <class T>
double mse_loss_forward(const T* out, const T* t, T* dout, idx n, Reduction r) {
  double s = 0;
  for (idx i = 0; i < n; ++i) { double d = double(out[i]) - double(t[i]); s += d * d; }
  const double k = mean_scale(r, double(n));
  if (dout) for (idx i = 0; i < n; ++i) dout[i] = T(2 * k * (double(out[i]) - double(t[i])));
  return n == 0 && r == Reduction::Mean ? nan() : s * k;
}

// ---- L1Loss: |out - target|, gradient sign(out - target) (0 at 0)
template <class T>
double l1_loss_forward(const T* out, const T* t, T* dout, idx n, Reduction r) {
  double s = 0;
  for (idx i = 0; i < n; ++i) s += std::fabs(double(out[i]) - double(t[i]));
  const double k = mean_scale(r, double(n));
  if (dout)
    for (idx i = 0; i < n; ++i) {
      double d = double(out[i]) - double(t[i]);
      dout[i] = T(k * double((d > 0) - (d < 0)));
    }
  return n == 0 && r == Reduction::Mean ? nan() : s * k;
}

// ---- HuberLoss: 0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta)
template <class T>
double huber_loss_forward(const T* out, const T* t, T* dout, idx n, Reduction r, double delta) {
  double s = 0;
  for (idx i = 0; i < n; ++i) {
    double d = double(out[i]) - double(t[i]), a = std::fabs(d);
    s += a < delta ? 0.5 * d * d : delta * (a - 0.5 * delta);
  }
  const double k = mean_scale(r, double(n));
  if (dout)
    for (idx i = 0; i < n; ++i) {
      double d = double(out[i]) - double(t[i]);
      dout[i] = T(k * (std::fabs(d) < delta ? d : (d > 0 ? delta : -delta)));
    }
  return n == 0 && r == Reduction::Mean ? nan() : s * k;
}

// ---- BCEWithLogitsLoss: (1 - t) x + L * log(1 + e^-x), L = 1 + (pos_weight - 1) t,
// with log(1 + e^-x) = max(-x, 0) + log1p(e^-|x|) so nothing overflows.
template <class T>
double bce_with_logits_loss_forward(const T* x, const T* t, T* dout, idx B, idx C, Reduction r,
                                    const T* pos_weight) {
  const idx n = B * C;
  double s = 0;
  for (idx i = 0; i < n; ++i) {
    double xi = x[i], ti = t[i];
    double L = pos_weight ? 1.0 + (double(pos_weight[i % C]) - 1.0) * ti : 1.0;
    s += (1 - ti) * xi + L * (std::max(-xi, 0.0) + std::log1p(std::exp(-std::fabs(xi))));
  }
  const double k = mean_scale(r, double(n));
  if (dout)
    for (idx i = 0; i < n; ++i) {
      double xi = x[i], ti = t[i];
      double L = pos_weight ? 1.0 + (double(pos_weight[i % C]) - 1.0) * ti : 1.0;
      // sigma(-x), stable for both signs
      double e = std::exp(-std::fabs(xi));
      double sig_neg = xi >= 0 ? e / (1 + e) : 1 / (1 + e);
      dout[i] = T(k * ((1 - ti) - L * sig_neg));
    }
  return n == 0 && r == Reduction::Mean ? nan() : s * k;
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
// class weights and ignore_index as in PyTorch)
template <class T>
double cross_entropy_loss_forward(const LossSpec<T>& sp, const T* x, const std::int64_t* y, T* dout,
                                  idx B, idx C) {
  for (idx r = 0; r < B; ++r)
    if (y[r] != sp.ignore_index && (y[r] < 0 || y[r] >= C))
      throw value_error("CrossEntropyLoss: target " + std::to_string(y[r]) + " is out of bounds for " +
                        std::to_string(C) + " classes");
  const double eps = sp.label_smoothing;
  double wall = 0;  // sum of all class weights
  for (idx j = 0; j < C; ++j) wall += sp.weight ? double(sp.weight[j]) : 1.0;
  double total = 0, wsum = 0;
  for (idx r = 0; r < B; ++r) {
    if (y[r] == sp.ignore_index) continue;
    const T* xr = x + r * C;
    const double lse = row_logsumexp(xr, C);
    const double wy = sp.weight ? double(sp.weight[y[r]]) : 1.0;
    double loss = (1 - eps) * wy * (lse - double(xr[y[r]]));
    if (eps > 0) {
      double smooth = 0;
      for (idx j = 0; j < C; ++j) smooth += (sp.weight ? double(sp.weight[j]) : 1.0) * (lse - double(xr[j]));
      loss += eps / double(C) * smooth;
    }
    total += loss;
    wsum += wy;
  }
  const bool mean = sp.reduction == Reduction::Mean;
  if (dout) {
    const double k = mean ? (wsum > 0 ? 1.0 / wsum : 0.0) : 1.0;
    for (idx r = 0; r < B; ++r) {
      T* dr = dout + r * C;
      if (y[r] == sp.ignore_index) { std::fill(dr, dr + C, T(0)); continue; }
      const T* xr = x + r * C;
      const double lse = row_logsumexp(xr, C);
      const double wy = sp.weight ? double(sp.weight[y[r]]) : 1.0;
      for (idx j = 0; j < C; ++j) {
        double p = std::exp(double(xr[j]) - lse);
        double wj = sp.weight ? double(sp.weight[j]) : 1.0;
        double g = (1 - eps) * wy * (p - (j == y[r] ? 1.0 : 0.0)) + eps / double(C) * (wall * p - wj);
        dr[j] = T(k * g);
      }
    }
  }
  if (mean) return wsum > 0 ? total / wsum : nan();
  return total;
}

// ---- CrossEntropyLoss with class-probability targets (smoothed towards uniform)
template <class T>
double cross_entropy_prob_loss_forward(const LossSpec<T>& sp, const T* x, const T* t, T* dout, idx B,
                                       idx C) {
  const double eps = sp.label_smoothing;
  auto target = [&](idx r, idx j) { return double(t[r * C + j]) * (1 - eps) + eps / double(C); };
  double total = 0;
  const double k = sp.reduction == Reduction::Mean ? 1.0 / double(B) : 1.0;
  for (idx r = 0; r < B; ++r) {
    const T* xr = x + r * C;
    const double lse = row_logsumexp(xr, C);
    double wt = 0;  // sum_j w_j t_j
    for (idx j = 0; j < C; ++j) {
      double wj = sp.weight ? double(sp.weight[j]) : 1.0;
      double tj = target(r, j);
      if (tj != 0) total += wj * tj * (lse - double(xr[j]));
      wt += wj * tj;
    }
    if (dout)
      for (idx j = 0; j < C; ++j) {
        double wj = sp.weight ? double(sp.weight[j]) : 1.0;
        double p = std::exp(double(xr[j]) - lse);
        dout[r * C + j] = T(k * (wt * p - wj * target(r, j)));
      }
  }
  return B == 0 && sp.reduction == Reduction::Mean ? nan() : total * k;
}

}  // namespace

template <class T>
double loss_forward(const LossSpec<T>& sp, const T* out, idx B, idx C, const std::int64_t* labels,
                    const T* target, T* dout) {
  const idx n = checked_mul(B, C);
  if (sp.kind == LossKind::CrossEntropy) {
    if (C == 0 && B > 0) throw value_error("CrossEntropyLoss needs at least one class column");
    return labels ? cross_entropy_loss_forward(sp, out, labels, dout, B, C)
                  : cross_entropy_prob_loss_forward(sp, out, target, dout, B, C);
  }
  if (!target) throw value_error("this loss needs a floating-point target of the output's shape");
  switch (sp.kind) {
    case LossKind::MSE: return mse_loss_forward(out, target, dout, n, sp.reduction);
    case LossKind::L1: return l1_loss_forward(out, target, dout, n, sp.reduction);
    case LossKind::Huber: return huber_loss_forward(out, target, dout, n, sp.reduction, sp.delta);
    case LossKind::BCEWithLogits:
      return bce_with_logits_loss_forward(out, target, dout, B, C, sp.reduction, sp.pos_weight);
    default: break;
  }
  throw value_error("unknown loss");
}

template <class T>
idx count_correct(const T* out, idx B, idx C, const std::int64_t* labels, const T* target) {
  auto argmax = [C](const T* row) {
    idx best = 0;
    for (idx j = 1; j < C; ++j) if (row[j] > row[best]) best = j;
    return best;
  };
  idx correct = 0;
  for (idx r = 0; r < B; ++r) {
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
template idx count_correct<float>(const float*, idx, idx, const std::int64_t*, const float*);
template idx count_correct<double>(const double*, idx, idx, const std::int64_t*, const double*);

}  // namespace fastmlp
