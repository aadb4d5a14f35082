// Learning-rate schedules stepped per batch inside fit's C++ loop
// (scheduler_interval='batch'). The schedules themselves are torch's, in
// Python (fastmlp/optim/lr_scheduler.py): before an epoch, fit steps the
// schedule once per batch and records what each batch steps with, so the loop
// calls no Python per batch.
#pragma once
#include "common.h"
#include "optimizers.h"

namespace fastmlp {

// Row b holds, for each parameter group, the hyperparameters batch b steps with.
struct BatchSchedule {
  const double* lr = nullptr;        // lr is (batches, groups)
  const double* momentum = nullptr;  // momentum is (batches, groups), or null: momentum (SGD, RMSprop) or beta1
  bool beta1 = false;                // momentum holds Adam's beta1
  idx batches = 0, groups = 0;

  // Set batch b's values into opt's groups (the rows were checked when recorded).
  template <class T>
  void apply(Optimizer<T>& opt, idx b) const {
    if (b >= batches) return;
    for (idx g = 0; g < groups; ++g) {
      OptimConfig& c = opt.groups[static_cast<size_t>(g)].config;
      c.lr = lr[b * groups + g];
      if (momentum) (beta1 ? c.beta1 : c.momentum) = momentum[b * groups + g];
    }
  }
};

}  // namespace fastmlp
