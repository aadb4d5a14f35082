#pragma once
// Elementary functions written so that the compiler vectorizes loops that call
// them (libm's exp is an opaque scalar call, so a loop over std::exp never
// vectorizes without fast-math). Branch-free, IEEE arithmetic only, no
// contraction: the same result in every SIMD clone and in the scalar fallback.
// One template per function, for double and for float (twice the lanes and a
// shorter series). tests/test_vmath.py checks them against the C library.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace fastmlp {

// The constants of each precision.
template <class T> struct FloatFormat;
template <> struct FloatFormat<double> {
  using Bits = std::uint64_t;
  using Int = std::int64_t;
  static constexpr int mantissa = 52, bias = 1023;
  static constexpr double lo = -708.3964185322641, hi = 709.782712893384;  // e^x normal and finite between
  static constexpr double ln2_hi = 6.93147180369123816490e-01;  // 11 trailing zero bits: n * ln2_hi is exact
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer in the low bits
};
template <> struct FloatFormat<float> {
  using Bits = std::uint32_t;
  using Int = std::int32_t;
  static constexpr int mantissa = 23, bias = 127;
  static constexpr float lo = -87.33654475f, hi = 88.72283906f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
};

template <class To, class From>
inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of one size");
  To t;
  std::memcpy(&t, &v, sizeof t);
  return t;
}

// e^r - 1 for |r| <= ln2 / 2 by its Taylor series, written r + r^2 q(r) so that
// the leading term is exact: to r^13 in double (truncation < 1e-17 relative),
// to r^7 in float (< 6e-9).
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
inline float expm1_taylor(float r) {
  float q = 1.0f / 5040.0f;
  q = q * r + 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  return r + (q * r) * r;
}

// e^x within 2 ulp (double) / 1 ulp (float) of the correctly rounded value for
// x in [lo, hi]; 0 below (including -inf: results under the smallest normal are
// flushed), +inf above, NaN for NaN. x = n ln2 + r with |r| <= ln2 / 2
// (Cody-Waite), e^r = 1 + expm1_taylor(r), 2^n built in the exponent bits.
template <class T>
inline T vexp(T x) {
  using F = FloatFormat<T>;
  using Bits = typename F::Bits;
  using Int = typename F::Int;
  constexpr T log2e = T(1.4426950408889634);
  const T xc = x < F::lo ? F::lo : (x > F::hi ? F::hi : x);
  const T t = xc * log2e + F::shifter;
  const T n = t - F::shifter;
  const Int k = static_cast<Int>(bit_cast<Bits>(t) - bit_cast<Bits>(F::shifter));
  const T r = (xc - n * F::ln2_hi) - n * F::ln2_lo;
  const T p = T(1) + expm1_taylor(r);
  // n is in [1 - bias, bias + 1]: 2^n as 2^k1 * 2^k2, k1 = floor(n / 2), so that 2^(bias + 1) does not
  // overflow the exponent field (a logical shift of a positive value: AVX2 has no 64-bit arithmetic shift)
  constexpr Int b = F::bias - 1;
  const Int k1 = static_cast<Int>(static_cast<Bits>(k + 2 * b) >> 1) - b, k2 = k - k1;
  const T s1 = bit_cast<T>(static_cast<Bits>(k1 + F::bias) << F::mantissa);
  const T s2 = bit_cast<T>(static_cast<Bits>(k2 + F::bias) << F::mantissa);
  T y = p * s1 * s2;
  y = x < F::lo ? T(0) : y;
  y = x > F::hi ? std::numeric_limits<T>::infinity() : y;
  return x != x ? x : y;
}

// e^x - 1, accurate near 0: expm1_taylor for |x| <= ln2 / 2, vexp(x) - 1 beyond
// (where at most ~1.7 bits cancel).
template <class T>
inline T vexpm1(T x) {
  constexpr T half_ln2 = T(0.34657359027997264);
  const T small = expm1_taylor(x), big = vexp(x) - T(1);
  return (x <= half_ln2 && x >= -half_ln2) ? small : big;
}

// tanh(x) = sign(x) (-u) / (u + 2), u = e^(-2|x|) - 1 in (-1, 0]: accurate near 0
// through vexpm1, +-1 for large |x| (no overflow: the exponent is never positive),
// NaN for NaN. Within 4 ulp (double) / 2.5 ulp (float).
template <class T>
inline T vtanh(T x) {
  const T u = vexpm1(T(-2) * std::fabs(x));
  return std::copysign(-u / (u + T(2)), x);
}

}  // namespace fastmlp
