// Parameter initializers with torch.nn.init's definitions.
#pragma once
#include <cstdint>
#include <string>

#include "common.h"
#include "layer.h"

namespace fastmlp {

enum class InitKind {
  Zeros, Constant, Uniform, Normal,
  XavierUniform, XavierNormal, KaimingUniform, KaimingNormal,
  LinearDefault,  // nn.Linear's reset_parameters: uniform in +-1/sqrt(fan_in)
};

struct InitSpec {
  InitKind kind = InitKind::LinearDefault;
  double a = 0, b = 1;   // uniform(a, b); normal(mean=a, std=b); constant(val=a)
  double gain = 1;       // xavier_*
  double kaiming_a = 0;  // negative slope for kaiming_* with leaky_relu
  bool fan_out = false;  // kaiming mode='fan_out'
  std::string nonlinearity = "leaky_relu";
};

// The initializer described by o's keys under prefix ("init." in a Linear's
// spec, "" for fm.init's calls): name, a, b, gain, kaiming_a, mode, nonlinearity.
InitSpec parse_init(const Options& o, const std::string& prefix);

// torch.nn.init.calculate_gain
double calculate_gain(const std::string& nonlinearity, double param);

// Fill w, (n) values of a tensor with the given fans, from seed.
template <class T>
void init_fill(const InitSpec& spec, T* w, idx n, idx fan_in, idx fan_out, std::uint64_t seed);

}  // namespace fastmlp
