// Learning-rate schedules with PyTorch's (recursive) update rules, stepped
// once per epoch: StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau.
#pragma once
#include <cstdint>

#include "common.h"

namespace fastmlp {

enum class ScheduleKind { StepLR, ExponentialLR, CosineAnnealingLR, ReduceLROnPlateau };

struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::StepLR;
  idx step_size = 1;       // StepLR
  double gamma = 0.1;      // StepLR, ExponentialLR
  idx T_max = 1;           // CosineAnnealingLR
  double eta_min = 0;      // CosineAnnealingLR
  bool mode_max = false;   // ReduceLROnPlateau: mode='max'
  double factor = 0.1, threshold = 1e-4, min_lr = 0, eps = 1e-8;
  bool threshold_abs = false;  // threshold_mode='abs'
  idx patience = 10, cooldown = 0;
};

struct ScheduleState {
  idx last_epoch = 0;
  double best = 0;  // ReduceLROnPlateau
  idx num_bad_epochs = 0, cooldown_counter = 0;
};

void schedule_check_config(const ScheduleConfig& c);
ScheduleState schedule_initial_state(const ScheduleConfig& c);

// Advance one epoch. lrs are the groups' current learning rates (updated in
// place), base_lrs their initial ones; metric is used by ReduceLROnPlateau.
void schedule_step(const ScheduleConfig& c, ScheduleState& s, double* lrs, const double* base_lrs,
                   idx ngroups, double metric);

}  // namespace fastmlp
