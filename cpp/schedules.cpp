#include "schedules.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace fastmlp {

void schedule_check_config(const ScheduleConfig& c) {
  auto need = [](bool ok, const std::string& msg) { if (!ok) throw value_error(msg); };
  switch (c.kind) {
    case ScheduleKind::StepLR:
      need(c.step_size > 0, "StepLR: step_size must be a positive integer");
      need(std::isfinite(c.gamma) && c.gamma > 0, "StepLR: gamma must be a positive number");
      break;
    case ScheduleKind::ExponentialLR:
      need(std::isfinite(c.gamma) && c.gamma > 0, "ExponentialLR: gamma must be a positive number");
      break;
    case ScheduleKind::CosineAnnealingLR:
      need(c.T_max > 0, "CosineAnnealingLR: T_max must be a positive integer");
      need(std::isfinite(c.eta_min), "CosineAnnealingLR: eta_min must be finite");
      break;
    case ScheduleKind::ReduceLROnPlateau:
      need(c.factor >= 0 && c.factor < 1, "ReduceLROnPlateau: factor should be < 1.0 and >= 0");
      need(c.patience >= 0, "ReduceLROnPlateau: patience must be >= 0");
      need(c.cooldown >= 0, "ReduceLROnPlateau: cooldown must be >= 0");
      need(std::isfinite(c.threshold) && c.threshold >= 0, "ReduceLROnPlateau: threshold must be >= 0");
      need(std::isfinite(c.min_lr) && c.min_lr >= 0, "ReduceLROnPlateau: min_lr must be >= 0");
      break;
  }
}

ScheduleState schedule_initial_state(const ScheduleConfig& c) {
  ScheduleState s;
  s.best = c.mode_max ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  return s;
}

namespace {
bool plateau_is_better(const ScheduleConfig& c, double a, double best) {
  if (!c.mode_max) return c.threshold_abs ? a < best - c.threshold : a < best * (1 - c.threshold);
  return c.threshold_abs ? a > best + c.threshold : a > best * (c.threshold + 1);
}
}  // namespace

void schedule_step(const ScheduleConfig& c, ScheduleState& s, double* lrs, const double* base_lrs,
                   idx ngroups, double metric) {
  const idx e = ++s.last_epoch;
  const double pi = 3.14159265358979323846;
  switch (c.kind) {
    case ScheduleKind::StepLR:
      if (e % c.step_size == 0)
        for (idx i = 0; i < ngroups; ++i) lrs[i] *= c.gamma;
      break;
    case ScheduleKind::ExponentialLR:
      for (idx i = 0; i < ngroups; ++i) lrs[i] *= c.gamma;
      break;
    case ScheduleKind::CosineAnnealingLR: {
      const idx T = c.T_max;
      const idx m = 2 * T, r = ((e - 1 - T) % m + m) % m;
      for (idx i = 0; i < ngroups; ++i) {
        if (r == 0)
          lrs[i] += (base_lrs[i] - c.eta_min) * (1 - std::cos(pi / double(T))) / 2;
        else
          lrs[i] = (1 + std::cos(pi * double(e) / double(T))) / (1 + std::cos(pi * double(e - 1) / double(T))) *
                       (lrs[i] - c.eta_min) + c.eta_min;
      }
      break;
    }
    case ScheduleKind::ReduceLROnPlateau: {
      if (plateau_is_better(c, metric, s.best)) {
        s.best = metric;
        s.num_bad_epochs = 0;
      } else {
        ++s.num_bad_epochs;
      }
      if (s.cooldown_counter > 0) {
        --s.cooldown_counter;
        s.num_bad_epochs = 0;
      }
      if (s.num_bad_epochs > c.patience) {
        for (idx i = 0; i < ngroups; ++i) {
          double nl = std::max(lrs[i] * c.factor, c.min_lr);
          if (lrs[i] - nl > c.eps) lrs[i] = nl;
        }
        s.cooldown_counter = c.cooldown;
        s.num_bad_epochs = 0;
      }
      break;
    }
  }
}

}  // namespace fastmlp
