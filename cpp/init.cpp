#include "init.h"

#include <cmath>

#include "rng.h"

namespace fastmlp {

double calculate_gain(const std::string& nl, double param) {
  if (nl == "linear" || nl == "conv1d" || nl == "conv2d" || nl == "conv3d" || nl == "sigmoid" ||
      nl == "identity")
    return 1.0;
  if (nl == "tanh") return 5.0 / 3.0;
  if (nl == "relu") return std::sqrt(2.0);
  if (nl == "leaky_relu") return std::sqrt(2.0 / (1 + param * param));
  if (nl == "selu") return 3.0 / 4.0;
  throw value_error("Unsupported nonlinearity " + nl);
}

InitSpec parse_init(const Options& o, const std::string& prefix) {
  static const std::pair<const char*, InitKind> names[] = {
      {"default", InitKind::LinearDefault}, {"zeros", InitKind::Zeros}, {"ones", InitKind::Constant},
      {"constant", InitKind::Constant}, {"uniform", InitKind::Uniform}, {"normal", InitKind::Normal},
      {"xavier_uniform", InitKind::XavierUniform}, {"xavier_normal", InitKind::XavierNormal},
      {"kaiming_uniform", InitKind::KaimingUniform}, {"kaiming_normal", InitKind::KaimingNormal}};
  InitSpec s;
  const std::string k = o.string(prefix + "name", "default");
  bool found = false;
  for (const auto& [name, kind] : names)
    if (k == name) { s.kind = kind; found = true; }
  if (!found) throw value_error("unknown initializer '" + k + "'");
  if (k == "ones") s.a = 1;
  s.a = o.number(prefix + "a", s.a);
  s.b = o.number(prefix + "b", s.b);
  s.gain = o.number(prefix + "gain", s.gain);
  s.kaiming_a = o.number(prefix + "kaiming_a", s.kaiming_a);
  s.fan_out = o.string(prefix + "mode", "fan_in") == "fan_out";
  s.nonlinearity = o.string(prefix + "nonlinearity", s.nonlinearity);
  if (s.kind == InitKind::KaimingUniform || s.kind == InitKind::KaimingNormal) calculate_gain(s.nonlinearity, s.kaiming_a);
  return s;
}

namespace {
template <class T>
void fill_uniform(T* w, idx n, double lo, double hi, std::uint64_t seed) {
  Rng rng(seed);
  for (idx i = 0; i < n; ++i) w[i] = T(lo + (hi - lo) * rng.uniform());
}
template <class T>
void fill_normal(T* w, idx n, double mean, double std, std::uint64_t seed) {
  Rng rng(seed);
  for (idx i = 0; i < n; ++i) w[i] = T(mean + std * rng.normal());
}
}  // namespace

template <class T>
void init_fill(const InitSpec& s, T* w, idx n, idx fan_in, idx fan_out, std::uint64_t seed) {
  auto need_fans = [&] {
    if (fan_in <= 0 && fan_out <= 0 && n > 0)
      throw value_error("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions");
  };
  switch (s.kind) {
    case InitKind::Zeros: for (idx i = 0; i < n; ++i) w[i] = T(0); return;
    case InitKind::Constant: for (idx i = 0; i < n; ++i) w[i] = T(s.a); return;
    case InitKind::Uniform: fill_uniform(w, n, s.a, s.b, seed); return;
    case InitKind::Normal: fill_normal(w, n, s.a, s.b, seed); return;
    case InitKind::XavierUniform: {
      need_fans();
      double a = s.gain * std::sqrt(6.0 / double(fan_in + fan_out));
      fill_uniform(w, n, -a, a, seed);
      return;
    }
    case InitKind::XavierNormal: {
      need_fans();
      fill_normal(w, n, 0.0, s.gain * std::sqrt(2.0 / double(fan_in + fan_out)), seed);
      return;
    }
    case InitKind::KaimingUniform:
    case InitKind::KaimingNormal: {
      need_fans();
      idx fan = s.fan_out ? fan_out : fan_in;
      if (fan <= 0) return;  // zero-element tensor: nothing to fill (PyTorch warns and returns)
      double std = calculate_gain(s.nonlinearity, s.kaiming_a) / std::sqrt(double(fan));
      if (s.kind == InitKind::KaimingUniform) fill_uniform(w, n, -std::sqrt(3.0) * std, std::sqrt(3.0) * std, seed);
      else fill_normal(w, n, 0.0, std, seed);
      return;
    }
    case InitKind::LinearDefault: {
      double bound = fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
      fill_uniform(w, n, -bound, bound, seed);
      return;
    }
  }
}

template void init_fill<float>(const InitSpec&, float*, idx, idx, idx, std::uint64_t);
template void init_fill<double>(const InitSpec&, double*, idx, idx, idx, std::uint64_t);

}  // namespace fastmlp
