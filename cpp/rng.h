// Seeded, reproducible random numbers. Everything is derived from a 64-bit
// seed with the splitmix64 mixer, so results are identical on every platform
// and compiler (no std:: distributions, whose output is implementation-defined).
#pragma once
#include <cmath>
#include <cstdint>

namespace fastmlp {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A stream seeded from (seed, stream): independent sub-streams for each
// layer, each step and each initializer call.
inline std::uint64_t derive_seed(std::uint64_t seed, std::uint64_t stream) {
  return splitmix64(splitmix64(seed) ^ (stream * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() { state_ += 0x9E3779B97F4A7C15ull; return splitmix64(state_); }
  // uniform in [0, 1) with 53 random bits
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // standard normal by Box-Muller (the spare value is kept for the next call)
  double normal() {
    if (has_spare_) { has_spare_ = false; return spare_; }
    double u1 = 1.0 - uniform();  // (0, 1]
    double u2 = uniform();
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(6.283185307179586 * u2);
    has_spare_ = true;
    return r * std::cos(6.283185307179586 * u2);
  }

 private:
  std::uint64_t state_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace fastmlp
