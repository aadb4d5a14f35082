// Optimizers with PyTorch's update rules and defaults (torch.optim, the
// single-tensor path). Each parameter group keeps its state in one
// contiguous buffer, so a step is one pass over each segment.
#pragma once
#include <cstdint>
#include <vector>

#include "common.h"

namespace fastmlp {

enum class OptimKind { SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, NAdam, RAdam, Adamax, ASGD };

struct OptimConfig {
  OptimKind kind = OptimKind::SGD;
  double lr = 1e-3, weight_decay = 0;
  double momentum = 0, dampening = 0;              // SGD, RMSprop (momentum)
  bool nesterov = false, maximize = false;
  double lr_decay = 0, initial_accumulator_value = 0;  // Adagrad
  double alpha = 0.99;                             // RMSprop; ASGD: the power of eta's decay
  bool centered = false;
  double rho = 0.9;                                // Adadelta
  double beta1 = 0.9, beta2 = 0.999;               // Adam family, Adamax
  bool amsgrad = false;
  bool decoupled_weight_decay = false;             // Adam family: p *= 1 - lr wd (AdamW: true)
  double momentum_decay = 4e-3;                    // NAdam
  double lambd = 1e-4, t0 = 1e6;                   // ASGD: the decay term, the step averaging starts after
  double eps = 1e-8;
  // Adam in scikit-learn's form (its estimators): m = b1 m + (1 - b1) g and
  // p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), eps before the bias correction
  bool sklearn_adam = false;
};

// How many state values each optimizer keeps per parameter element.
int optim_state_slots(OptimKind kind);
// Throws value_error naming the first invalid hyperparameter.
void optim_check_config(const OptimConfig& c);

// A run of parameters with its gradient: p and g are (n); offset is where
// the run starts in the group's state slots.
template <class T>
struct Segment {
  T* p;
  const T* g;
  idx n;
  idx offset;
};

// One step over every segment. state is (slots, n_total); step is the
// 1-based count of this step (Adam's bias correction, Adagrad's lr decay);
// momentum_ready says SGD's momentum buffer holds a value (PyTorch's
// "momentum_buffer is not None"); on the first momentum step buf = d.
// mu_product is NAdam's product of the momentum coefficients mu_1..mu_step.
template <class T>
void optimizer_step(const OptimConfig& c, std::int64_t step, bool momentum_ready, double mu_product,
                    const Segment<T>* segs, idx nseg, T* state, idx n_total);
// optimizer_step over up to `threads` of fastmlp's threads (pool.h), the segments cut into blocks of
// elements, when they are large enough to gain from it. Every update is a function of its element alone
// (and of the step's scalars), and the build contracts no multiply-add (-ffp-contract=off), so the bits
// are optimizer_step's for every split.
// ready, if set, is called for each piece of the gradient (g, n elements) just before the piece's update,
// on the thread that updates it: to finish computing it there (fit's chunk sum), in that core's caches.
template <class T>
using GradReady = void (*)(void* ctx, const T* g, idx n);
template <class T>
void optimizer_step_blocks(const OptimConfig& c, std::int64_t step, bool momentum_ready, double mu_product,
                           const Segment<T>* segs, idx nseg, T* state, idx n_total, int threads,
                           GradReady<T> ready = nullptr, void* ctx = nullptr);
// NAdam's momentum coefficient of step t: beta1 (1 - 0.5 * 0.96^(t momentum_decay)).
double nadam_mu(const OptimConfig& c, std::int64_t t);

// A parameter group: hyperparameters, its segments and its state buffer,
// allocated once at construction.
template <class T>
struct ParamGroup {
  OptimConfig config;
  std::vector<Segment<T>> segments;
  idx n_total = 0;
  std::int64_t step = 0;
  bool momentum_ready = false;  // SGD: the momentum buffer has been set
  double mu_product = 1;        // NAdam: the product of mu over the steps taken (one value for every parameter)
  Buffer<T> state;
  // segments without the frozen parameters (requires_grad False), used by step() when any is frozen
  std::vector<Segment<T>> live;
  bool has_frozen = false;
  void reset_state();  // zeros, Adagrad's sum = initial_accumulator_value, step = 0
  // One step over segs (this group's parameters, possibly with other gradients); threads > 1: on
  // fastmlp's pool by blocks of elements (optimizer_step_blocks).
  void step_with(const std::vector<Segment<T>>& segs, int threads = 1, GradReady<T> ready = nullptr,
                 void* ctx = nullptr) {
    if (config.kind == OptimKind::NAdam) mu_product *= nadam_mu(config, step + 1);
    optimizer_step_blocks(config, step + 1, momentum_ready, mu_product, segs.data(), static_cast<idx>(segs.size()),
                          state.data(), n_total, threads, ready, ctx);
    ++step;
    if (config.kind == OptimKind::SGD && config.momentum != 0) momentum_ready = true;
  }
};

template <class T>
struct Optimizer {
  std::vector<ParamGroup<T>> groups;
  // One step of every group over its parameters that are not frozen; a group whose
  // parameters are all frozen is not stepped (as torch skips parameters without a grad).
  // threads, ready: as step_with's.
  void step(int threads = 1, GradReady<T> ready = nullptr, void* ctx = nullptr) {
    for (auto& g : groups) {
      if (!g.has_frozen) g.step_with(g.segments, threads, ready, ctx);
      else if (!g.live.empty()) g.step_with(g.live, threads, ready, ctx);
    }
  }
  // Whether a step updates all of the n gradients g (a model's: none frozen) and only them.
  bool steps_all_of(const T* g, idx n) const {
    idx total = 0;
    for (const auto& gr : groups)
      for (const auto& s : gr.has_frozen ? gr.live : gr.segments) {
        if (s.g < g || s.g + s.n > g + n) return false;
        total += s.n;
      }
    return total == n;
  }
};

}  // namespace fastmlp
