#pragma once
// Elementary functions written so that the compiler vectorizes loops that call
// them (libm's exp is an opaque scalar call, so a loop over std::exp never
// vectorizes without fast-math). Branch-free, IEEE arithmetic only, no
// contraction: the same result in every SIMD clone and in the scalar fallback.
// tests/test_vmath.py checks them against the C library over the whole range.

#include <cstdint>
#include <cstring>

namespace fastmlp {

inline double bits_to_double(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}
inline std::uint64_t double_to_bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}

// e^r - 1 for |r| <= ln2 / 2 by its Taylor series to r^13 (truncation < 1e-17
// relative), written r + r^2 q(r) so that the leading term is exact.
inline double expm1_taylor(double r) {
  double q = 1.0 / 6227020800.0;  // 1/13!
  q = q * r + 1.0 / 479001600.0;
  q = q * r + 1.0 / 39916800.0;
  q = q * r + 1.0 / 3628800.0;
  q = q * r + 1.0 / 362880.0;
  q = q * r + 1.0 / 40320.0;
  q = q * r + 1.0 / 5040.0;
  q = q * r + 1.0 / 720.0;
  q = q * r + 1.0 / 120.0;
  q = q * r + 1.0 / 24.0;
  q = q * r + 1.0 / 6.0;
  q = q * r + 0.5;
  return r + (q * r) * r;
}

// e^x for double x, within 2 ulp of the correctly rounded value for
// x in [-708.39, 709.78]; 0 below (including -inf), +inf above, NaN for NaN.
// x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite: ln2_hi has 11 trailing zero
// bits, so n * ln2_hi is exact); e^r = 1 + expm1_taylor(r); 2^n built in the
// exponent bits.
inline double vexp(double x) {
  constexpr double lo = -708.3964185322641, hi = 709.782712893384;
  constexpr double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01,
                   ln2_lo = 1.90821492927058770002e-10;
  constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer in the low bits
  const double xc = x < lo ? lo : (x > hi ? hi : x);
  const double t = xc * log2e + shifter;
  const double n = t - shifter;
  const std::int64_t k = static_cast<std::int64_t>(double_to_bits(t) - double_to_bits(shifter));
  const double r = (xc - n * ln2_hi) - n * ln2_lo;
  const double p = 1.0 + expm1_taylor(r);
  // n is in [-1022, 1024]: 2^n as 2^k1 * 2^k2, k1 = floor(n / 2), so that 2^1024 does not overflow the
  // exponent field (a logical shift of a positive value: AVX2 has no 64-bit arithmetic shift)
  const std::int64_t k1 = static_cast<std::int64_t>(static_cast<std::uint64_t>(k + 2044) >> 1) - 1022, k2 = k - k1;
  const double s1 = bits_to_double(static_cast<std::uint64_t>(k1 + 1023) << 52);
  const double s2 = bits_to_double(static_cast<std::uint64_t>(k2 + 1023) << 52);
  double y = p * s1 * s2;
  y = x < lo ? 0.0 : y;
  y = x > hi ? __builtin_inf() : y;
  return x != x ? x : y;
}

// e^x - 1, accurate near 0: expm1_taylor for |x| <= ln2 / 2, vexp(x) - 1 beyond
// (where at most ~1.7 bits cancel).
inline double vexpm1(double x) {
  const double small = expm1_taylor(x), big = vexp(x) - 1.0;
  return (x <= 0.34657359027997264 && x >= -0.34657359027997264) ? small : big;
}

// tanh(x) = sign(x) (-u) / (u + 2), u = e^(-2|x|) - 1 in (-1, 0]: accurate near 0
// through vexpm1, +-1 for large |x| (no overflow: the exponent is never positive),
// NaN for NaN. Within 4 ulp.
inline double vtanh(double x) {
  const double u = vexpm1(-2.0 * __builtin_fabs(x));
  return __builtin_copysign(-u / (u + 2.0), x);
}

// ---- float versions (8 bytes fewer per element: twice the lanes, and shorter
// series): within 2 ulp (exp) and 4 ulp (tanh) of the correctly rounded float.
inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// e^r - 1 for |r| <= ln2 / 2, Taylor to r^7 (truncation < 6e-9 relative)
inline float expm1_taylor(float r) {
  float q = 1.0f / 5040.0f;
  q = q * r + 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  return r + (q * r) * r;
}

// e^x for float x: 0 below -87.3365 (results under FLT_MIN), +inf above 88.7228
inline float vexp(float x) {
  constexpr float lo = -87.33654475f, hi = 88.72283906f;
  constexpr float log2e = 1.44269504f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  const float xc = x < lo ? lo : (x > hi ? hi : x);
  const float t = xc * log2e + shifter;
  const float n = t - shifter;
  const std::int32_t k = static_cast<std::int32_t>(float_to_bits(t) - float_to_bits(shifter));
  const float r = (xc - n * ln2_hi) - n * ln2_lo;
  const float p = 1.0f + expm1_taylor(r);
  // n is in [-126, 128]: 2^n as 2^k1 * 2^k2, k1 = floor(n / 2)
  const std::int32_t k1 = static_cast<std::int32_t>(static_cast<std::uint32_t>(k + 252) >> 1) - 126, k2 = k - k1;
  const float s1 = bits_to_float(static_cast<std::uint32_t>(k1 + 127) << 23);
  const float s2 = bits_to_float(static_cast<std::uint32_t>(k2 + 127) << 23);
  float y = p * s1 * s2;
  y = x < lo ? 0.0f : y;
  y = x > hi ? __builtin_inff() : y;
  return x != x ? x : y;
}

inline float vexpm1(float x) {
  const float small = expm1_taylor(x), big = vexp(x) - 1.0f;
  return (x <= 0.34657359f && x >= -0.34657359f) ? small : big;
}

inline float vtanh(float x) {
  const float u = vexpm1(-2.0f * __builtin_fabsf(x));
  return __builtin_copysignf(-u / (u + 2.0f), x);
}

}  // namespace fastmlp
