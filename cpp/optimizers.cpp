#include "optimizers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "pool.h"

namespace fastmlp {

int optim_state_slots(OptimKind k) {
  switch (k) {
    case OptimKind::SGD: return 1;       // momentum_buffer
    case OptimKind::Adagrad: return 1;   // sum
    case OptimKind::RMSprop: return 3;   // square_avg, momentum_buffer, grad_avg
    case OptimKind::Adadelta: return 2;  // square_avg, acc_delta
    case OptimKind::Adam:
    case OptimKind::AdamW: return 3;     // exp_avg, exp_avg_sq, max_exp_avg_sq
    case OptimKind::NAdam:
    case OptimKind::RAdam: return 2;     // exp_avg, exp_avg_sq
    case OptimKind::Adamax: return 2;    // exp_avg, exp_inf
    // ax, eta, mu: torch keeps eta and mu as one scalar per parameter; here they are kept per element
    // (one value repeated over each parameter), so that they live in the one state buffer that
    // snapshots, model files and add_param_group carry
    case OptimKind::ASGD: return 3;
  }
  return 0;
}

void optim_check_config(const OptimConfig& c) {
  auto need = [](bool ok, const char* name, double v, const char* rule) {
    if (!ok) throw value_error(std::string("Invalid ") + name + " value: " + std::to_string(v) + " (" + rule + ")");
  };
  need(std::isfinite(c.lr) && c.lr >= 0, "learning rate", c.lr, "must be a finite number >= 0");
  need(std::isfinite(c.weight_decay) && c.weight_decay >= 0, "weight_decay", c.weight_decay, "must be >= 0");
  need(std::isfinite(c.eps) && c.eps >= 0, "eps", c.eps, "must be >= 0");
  need(std::isfinite(c.momentum) && c.momentum >= 0, "momentum", c.momentum, "must be >= 0");
  need(std::isfinite(c.dampening), "dampening", c.dampening, "must be finite");
  switch (c.kind) {
    case OptimKind::SGD:
      if (c.nesterov && (c.momentum <= 0 || c.dampening != 0))
        throw value_error("Nesterov momentum requires a momentum and zero dampening");
      break;
    case OptimKind::Adagrad:
      need(std::isfinite(c.lr_decay) && c.lr_decay >= 0, "lr_decay", c.lr_decay, "must be >= 0");
      need(std::isfinite(c.initial_accumulator_value) && c.initial_accumulator_value >= 0,
           "initial_accumulator_value", c.initial_accumulator_value, "must be >= 0");
      break;
    case OptimKind::RMSprop:
      need(c.alpha >= 0 && c.alpha <= 1, "alpha", c.alpha, "must be in [0, 1]");
      break;
    case OptimKind::Adadelta:
      need(c.rho >= 0 && c.rho <= 1, "rho", c.rho, "must be in [0, 1]");
      break;
    case OptimKind::NAdam:
      need(std::isfinite(c.momentum_decay) && c.momentum_decay >= 0, "momentum_decay", c.momentum_decay,
           "must be >= 0");
      [[fallthrough]];
    case OptimKind::Adam:
    case OptimKind::AdamW:
    case OptimKind::RAdam:
    case OptimKind::Adamax:
      need(c.beta1 >= 0 && c.beta1 < 1, "beta parameter at index 0", c.beta1, "must be in [0, 1)");
      need(c.beta2 >= 0 && c.beta2 < 1, "beta parameter at index 1", c.beta2, "must be in [0, 1)");
      break;
    case OptimKind::ASGD:
      need(std::isfinite(c.lambd) && c.lambd >= 0, "lambd", c.lambd, "must be >= 0");
      need(std::isfinite(c.alpha), "alpha", c.alpha, "must be finite");
      need(std::isfinite(c.t0), "t0", c.t0, "must be finite");
      break;
  }
}

namespace {

// Each step takes its settings by value: a copy the parameters cannot alias, so that the loops vectorize
// (through a reference the compiler reloads them after every store).

// ---- SGD: d = g + wd p; buf = d (first step) or mu buf + (1 - dampening) d;
// d = d + mu buf (Nesterov) or buf; p -= lr d
template <class T>
FASTMLP_SIMD void sgd_step(OptimConfig c, bool momentum_ready, T* p, const T* g, idx n, T* buf) {
  const T lr = T(c.lr), wd = T(c.weight_decay), mu = T(c.momentum), damp = T(1 - c.dampening);
  const T sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i] + wd * p[i];
    if (c.momentum != 0) {
      buf[i] = momentum_ready ? mu * buf[i] + damp * d : d;
      d = c.nesterov ? d + mu * buf[i] : buf[i];
    }
    p[i] -= lr * d;
  }
}

// ---- Adagrad: clr = lr / (1 + (t - 1) lr_decay); sum += g^2; p -= clr g / (sqrt(sum) + eps)
template <class T>
FASTMLP_SIMD void adagrad_step(OptimConfig c, std::int64_t step, T* p, const T* g, idx n, T* sum) {
  const T clr = T(c.lr / (1 + double(step - 1) * c.lr_decay));
  const T wd = T(c.weight_decay), eps = T(c.eps), sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i] + wd * p[i];
    sum[i] += d * d;
    p[i] -= clr * d / (std::sqrt(sum[i]) + eps);
  }
}

// ---- RMSprop: v = alpha v + (1 - alpha) g^2; centered: m = alpha m + (1 - alpha) g,
// avg = sqrt(v - m^2) + eps; momentum: buf = mu buf + g / avg, p -= lr buf. One loop for each of the
// four forms: a store under a condition, to a buffer that may be absent, keeps a loop from vectorizing.
template <bool Centered, bool Momentum, class T>
__attribute__((always_inline)) inline void rmsprop_loop(const OptimConfig& c, T* p, const T* g, idx n, T* sq, T* buf,
                                                        T* gavg) {
  const T lr = T(c.lr), wd = T(c.weight_decay), a = T(c.alpha), a1 = T(1 - c.alpha), eps = T(c.eps);
  const T mu = T(c.momentum), sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i] + wd * p[i];
    sq[i] = a * sq[i] + a1 * d * d;
    T avg;
    if constexpr (Centered) {
      gavg[i] = gavg[i] + a1 * (d - gavg[i]);
      avg = std::sqrt(sq[i] - gavg[i] * gavg[i]) + eps;
    } else {
      avg = std::sqrt(sq[i]) + eps;
    }
    if constexpr (Momentum) {
      buf[i] = mu * buf[i] + d / avg;
      p[i] -= lr * buf[i];
    } else {
      p[i] -= lr * d / avg;
    }
  }
}
template <class T>
FASTMLP_SIMD void rmsprop_step(OptimConfig c, T* p, const T* g, idx n, T* sq, T* buf, T* gavg) {
  if (c.centered && c.momentum > 0) return rmsprop_loop<true, true>(c, p, g, n, sq, buf, gavg);
  if (c.centered) return rmsprop_loop<true, false>(c, p, g, n, sq, buf, gavg);
  if (c.momentum > 0) return rmsprop_loop<false, true>(c, p, g, n, sq, buf, gavg);
  rmsprop_loop<false, false>(c, p, g, n, sq, buf, gavg);
}

// ---- Adadelta: v = rho v + (1 - rho) g^2; delta = sqrt(u + eps) / sqrt(v + eps) g;
// u = rho u + (1 - rho) delta^2; p -= lr delta
template <class T>
FASTMLP_SIMD void adadelta_step(OptimConfig c, T* p, const T* g, idx n, T* sq, T* acc) {
  const T lr = T(c.lr), wd = T(c.weight_decay), rho = T(c.rho), rho1 = T(1 - c.rho), eps = T(c.eps);
  const T sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i] + wd * p[i];
    sq[i] = rho * sq[i] + rho1 * d * d;
    T delta = std::sqrt(acc[i] + eps) / std::sqrt(sq[i] + eps) * d;
    acc[i] = rho * acc[i] + rho1 * delta * delta;
    p[i] -= lr * delta;
  }
}

// ---- Adam / AdamW: m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps); AdamW first p *= 1 - lr wd
template <class T>
FASTMLP_SIMD void adam_step(OptimConfig c, std::int64_t step, T* p, const T* g, idx n, T* m, T* v, T* vmax) {
  const bool decoupled = c.decoupled_weight_decay;
  const double bc1 = 1 - std::pow(c.beta1, double(step)), bc2 = 1 - std::pow(c.beta2, double(step));
  const T step_size = T(c.lr / bc1), bc2_sqrt = T(std::sqrt(bc2));
  const T b1c = T(1 - c.beta1), b2 = T(c.beta2), b2c = T(1 - c.beta2), eps = T(c.eps);
  const T wd = T(c.weight_decay), decay = T(1 - c.lr * c.weight_decay), sign = c.maximize ? T(-1) : T(1);
  if (c.sklearn_adam) {
    const T lr_t = T(c.lr * std::sqrt(bc2) / bc1), b1 = T(c.beta1);
    for (idx i = 0; i < n; ++i) {
      T d = sign * g[i];
      if (decoupled) p[i] *= decay;
      else d += wd * p[i];
      m[i] = b1 * m[i] + b1c * d;
      v[i] = b2 * v[i] + b2c * d * d;
      T vhat = v[i];
      if (c.amsgrad) { vmax[i] = std::max(vmax[i], v[i]); vhat = vmax[i]; }
      p[i] -= lr_t * (m[i] / (std::sqrt(vhat) + eps));
    }
    return;
  }
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i];
    if (decoupled) p[i] *= decay;
    else d += wd * p[i];
    m[i] = m[i] + b1c * (d - m[i]);
    v[i] = b2 * v[i] + b2c * d * d;
    T vhat = v[i];
    if (c.amsgrad) { vmax[i] = std::max(vmax[i], v[i]); vhat = vmax[i]; }
    p[i] -= step_size * (m[i] / (std::sqrt(vhat) / bc2_sqrt + eps));
  }
}


// ---- NAdam: mu_t = b1 (1 - 0.5 0.96^(t psi)); m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// denom = sqrt(v / (1 - b2^t)) + eps;
// p += -lr (1 - mu_t) / (1 - prod mu_1..t) g / denom - lr mu_t+1 / (1 - prod mu_1..t+1) m / denom
template <class T>
FASTMLP_SIMD void nadam_step(OptimConfig c, std::int64_t step, double mu_product, T* p, const T* g, idx n,
                             T* m, T* v) {
  const double mu = nadam_mu(c, step), mu_next = nadam_mu(c, step + 1);
  const T bc2 = T(1 - std::pow(c.beta2, double(step)));
  const T kg = T(-c.lr * (1 - mu) / (1 - mu_product)), km = T(-c.lr * mu_next / (1 - mu_product * mu_next));
  const T b1c = T(1 - c.beta1), b2 = T(c.beta2), b2c = T(1 - c.beta2), eps = T(c.eps);
  const T wd = T(c.weight_decay), decay = T(1 - c.lr * c.weight_decay), sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i];
    if (c.decoupled_weight_decay) p[i] *= decay;
    else d += wd * p[i];
    m[i] = m[i] + b1c * (d - m[i]);
    v[i] = b2 * v[i] + b2c * d * d;
    const T denom = std::sqrt(v[i] / bc2) + eps;
    p[i] += kg * d / denom;
    p[i] += km * m[i] / denom;
  }
}

// ---- RAdam: m, v as Adam; rho_t = rho_inf - 2 t b2^t / (1 - b2^t), rho_inf = 2 / (1 - b2) - 1;
// rho_t > 5: p -= m / (1 - b1^t) lr sqrt(1 - b2^t) / (sqrt(v) + eps) r_t (the rectification);
// else p -= m / (1 - b1^t) lr
template <class T>
FASTMLP_SIMD void radam_step(OptimConfig c, std::int64_t step, T* p, const T* g, idx n, T* m, T* v) {
  const double t = double(step), b2t = std::pow(c.beta2, t);
  const double bc1 = 1 - std::pow(c.beta1, t), bc2 = 1 - b2t;
  const double rho_inf = 2 / (1 - c.beta2) - 1, rho_t = rho_inf - 2 * t * b2t / bc2;
  const bool rectify = rho_t > 5.0;
  const T rect = rectify ? T(std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)))
                         : T(0);
  const T tbc1 = T(bc1), lr = T(c.lr), bc2_sqrt = T(std::sqrt(bc2));
  const T b1c = T(1 - c.beta1), b2 = T(c.beta2), b2c = T(1 - c.beta2), eps = T(c.eps);
  const T wd = T(c.weight_decay), decay = T(1 - c.lr * c.weight_decay), sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    T d = sign * g[i];
    if (c.decoupled_weight_decay) p[i] *= decay;
    else d += wd * p[i];
    m[i] = m[i] + b1c * (d - m[i]);
    v[i] = b2 * v[i] + b2c * d * d;
    const T mhat = m[i] / tbc1;
    if (rectify) p[i] -= mhat * lr * (bc2_sqrt / (std::sqrt(v[i]) + eps)) * rect;
    else p[i] -= mhat * lr;
  }
}

// ---- Adamax: m = lerp(m, g, 1 - b1); u = max(b2 u, |g| + eps); p -= lr / (1 - b1^t) m / u
template <class T>
FASTMLP_SIMD void adamax_step(OptimConfig c, std::int64_t step, T* p, const T* g, idx n, T* m, T* u) {
  const T nclr = T(-(c.lr / (1 - std::pow(c.beta1, double(step)))));
  const T b1c = T(1 - c.beta1), b2 = T(c.beta2), eps = T(c.eps);
  const T wd = T(c.weight_decay), sign = c.maximize ? T(-1) : T(1);
  for (idx i = 0; i < n; ++i) {
    const T d = sign * g[i] + wd * p[i];
    m[i] = m[i] + b1c * (d - m[i]);
    u[i] = std::max(b2 * u[i], std::abs(d) + eps);
    p[i] += nclr * m[i] / u[i];
  }
}

// ---- ASGD (eta, mu: the values the previous step left; a fresh element, mu = 0, starts with
// eta = lr, mu = 1 as torch's state initialization): d = g + wd p; p *= 1 - lambd eta; p -= eta d;
// ax = p while mu is 1, then ax += mu (p - ax); then eta = lr / (1 + lambd lr t)^alpha,
// mu = 1 / max(1, t - t0). eta and mu are kept in T, as torch keeps them in its default dtype.
template <class T>
FASTMLP_SIMD void asgd_step(OptimConfig c, std::int64_t step, T* p, const T* g, idx n, T* ax, T* eta,
                            T* mu) {
  const double t = double(step);
  const T next_eta = T(c.lr / std::pow(1 + c.lambd * c.lr * t, c.alpha));
  // (never 0, the mark of a fresh element, even where 1 / (t - t0) underflows T: t0 near -1e45 in float32)
  const T next_mu = std::max(T(1 / std::max(1.0, t - c.t0)), std::numeric_limits<T>::denorm_min());
  const T lr = T(c.lr), wd = T(c.weight_decay), sign = c.maximize ? T(-1) : T(1);
  const double lambd = c.lambd;
  for (idx i = 0; i < n; ++i) {
    const bool fresh = mu[i] == T(0);
    const T e = fresh ? lr : eta[i], m = fresh ? T(1) : mu[i];
    const T d = sign * g[i] + wd * p[i];
    p[i] *= T(1 - lambd * double(e));
    p[i] += -e * d;
    ax[i] = m != T(1) ? ax[i] + (p[i] - ax[i]) * m : p[i];
    eta[i] = next_eta;
    mu[i] = next_mu;
  }
}

}  // namespace

double nadam_mu(const OptimConfig& c, std::int64_t t) {
  return c.beta1 * (1.0 - 0.5 * std::pow(0.96, double(t) * c.momentum_decay));
}

template <class T>
void optimizer_step(const OptimConfig& c, std::int64_t step, bool momentum_ready, double mu_product,
                    const Segment<T>* segs, idx nseg, T* state, idx n_total) {
  for (idx s = 0; s < nseg; ++s) {
    const Segment<T>& sg = segs[s];
    T* s0 = state + sg.offset;
    T* s1 = s0 + n_total;
    T* s2 = s1 + n_total;
    switch (c.kind) {
      case OptimKind::SGD: sgd_step(c, momentum_ready, sg.p, sg.g, sg.n, s0); break;
      case OptimKind::Adagrad: adagrad_step(c, step, sg.p, sg.g, sg.n, s0); break;
      case OptimKind::RMSprop: rmsprop_step(c, sg.p, sg.g, sg.n, s0, s1, s2); break;
      case OptimKind::Adadelta: adadelta_step(c, sg.p, sg.g, sg.n, s0, s1); break;
      case OptimKind::Adam:
      case OptimKind::AdamW: adam_step(c, step, sg.p, sg.g, sg.n, s0, s1, s2); break;
      case OptimKind::NAdam: nadam_step(c, step, mu_product, sg.p, sg.g, sg.n, s0, s1); break;
      case OptimKind::RAdam: radam_step(c, step, sg.p, sg.g, sg.n, s0, s1); break;
      case OptimKind::Adamax: adamax_step(c, step, sg.p, sg.g, sg.n, s0, s1); break;
      case OptimKind::ASGD: asgd_step(c, step, sg.p, sg.g, sg.n, s0, s1, s2); break;
    }
  }
}

template <class T>
void optimizer_step_blocks(const OptimConfig& c, std::int64_t step, bool momentum_ready, double mu_product,
                           const Segment<T>* segs, idx nseg, T* state, idx n_total, int threads,
                           GradReady<T> ready, void* ctx) {
  // elements: 16 KB of each float array, so that a small net's step (a digits-sized net's 17K) splits too
  constexpr idx kBlock = idx(1) << 12;
  struct Blocks {
    const OptimConfig& c;
    std::int64_t step;
    bool momentum_ready;
    double mu_product;
    const Segment<T>* segs;
    idx nseg;
    T* state;
    idx n_total;
    GradReady<T> ready;
    void* ctx;
    // block k: elements [k kBlock, (k + 1) kBlock) of the segments laid end to end
    static void run(void* p, idx k) {
      const auto* b = static_cast<const Blocks*>(p);
      const idx lo = k * kBlock, hi = lo + kBlock;
      idx start = 0;
      for (idx s = 0; s < b->nseg && start < hi; start += b->segs[s].n, ++s) {
        const Segment<T>& sg = b->segs[s];
        const idx a = std::max(lo, start), e = std::min(hi, start + sg.n);
        if (a >= e) continue;
        const Segment<T> part{sg.p + (a - start), sg.g + (a - start), e - a, sg.offset + (a - start)};
        if (b->ready) b->ready(b->ctx, part.g, part.n);
        optimizer_step(b->c, b->step, b->momentum_ready, b->mu_product, &part, 1, b->state, b->n_total);
      }
    }
  };
  idx n = 0;
  for (idx s = 0; s < nseg; ++s) n += segs[s].n;
  const idx blocks = (n + kBlock - 1) / kBlock;
  if (threads <= 1 || blocks < 2) {
    if (ready)
      for (idx s = 0; s < nseg; ++s) ready(ctx, segs[s].g, segs[s].n);
    return optimizer_step(c, step, momentum_ready, mu_product, segs, nseg, state, n_total);
  }
  Blocks job{c, step, momentum_ready, mu_product, segs, nseg, state, n_total, ready, ctx};
  parallel_take(threads, blocks, &Blocks::run, &job);
}

template <class T>
void ParamGroup<T>::reset_state() {
  state.resize(checked_mul(n_total, optim_state_slots(config.kind)));
  state.zero();
  if (config.kind == OptimKind::Adagrad)
    std::fill(state.data(), state.data() + n_total, T(config.initial_accumulator_value));
  step = 0;
  momentum_ready = false;
  mu_product = 1;
}

template void optimizer_step<float>(const OptimConfig&, std::int64_t, bool, double, const Segment<float>*, idx,
                                    float*, idx);
template void optimizer_step<double>(const OptimConfig&, std::int64_t, bool, double, const Segment<double>*, idx,
                                     double*, idx);
template void optimizer_step_blocks<float>(const OptimConfig&, std::int64_t, bool, double, const Segment<float>*,
                                          idx, float*, idx, int, GradReady<float>, void*);
template void optimizer_step_blocks<double>(const OptimConfig&, std::int64_t, bool, double, const Segment<double>*,
                                           idx, double*, idx, int, GradReady<double>, void*);
template struct ParamGroup<float>;
template struct ParamGroup<double>;

}  // namespace fastmlp
