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

// Forced inline: a loop vectorizes only when the whole function is inlined into it, and GCC's
// heuristics leave these out of line in the activation loops (a loop of calls, one element each).
#if defined(__GNUC__)
#define FASTMLP_VINLINE inline __attribute__((always_inline))
#else
#define FASTMLP_VINLINE inline
#endif

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
  static constexpr Bits one = 0x3ff0000000000000ull, sqrt_half = 0x3fe6a09e667f3bcdull;  // 1, sqrt(2)/2
};
template <> struct FloatFormat<float> {
  using Bits = std::uint32_t;
  using Int = std::int32_t;
  static constexpr int mantissa = 23, bias = 127;
  static constexpr float lo = -87.33654475f, hi = 88.72283906f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr Bits one = 0x3f800000u, sqrt_half = 0x3f3504f3u;
};

template <class To, class From>
FASTMLP_VINLINE To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of one size");
  To t;
  std::memcpy(&t, &v, sizeof t);
  return t;
}

// e^r - 1 for |r| <= ln2 / 2 by its Taylor series, written r + r^2 q(r) so that
// the leading term is exact: to r^13 in double (truncation < 1e-17 relative),
// to r^7 in float (< 6e-9).
FASTMLP_VINLINE double expm1_taylor(double r) {
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
FASTMLP_VINLINE float expm1_taylor(float r) {
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
FASTMLP_VINLINE T vexp(T x) {
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
FASTMLP_VINLINE T vexpm1(T x) {
  constexpr T half_ln2 = T(0.34657359027997264);
  const T small = expm1_taylor(x), big = vexp(x) - T(1);
  return (x <= half_ln2 && x >= -half_ln2) ? small : big;
}

// tanh(x) = sign(x) (-u) / (u + 2), u = e^(-2|x|) - 1 in (-1, 0]: accurate near 0
// through vexpm1, +-1 for large |x| (no overflow: the exponent is never positive),
// NaN for NaN. Within 4 ulp (double) / 2.5 ulp (float).
template <class T>
FASTMLP_VINLINE T vtanh(T x) {
  const T u = vexpm1(T(-2) * std::fabs(x));
  return std::copysign(-u / (u + T(2)), x);
}

// log(1 + f) for f in [sqrt(2)/2 - 1, sqrt(2) - 1]. With s = f / (2 + f), log(1 + f) = 2 atanh(s)
// = 2s + s R(s^2), R(z) = 2z/3 + 2z^2/5 + ... (Taylor, |s| <= 0.172: to z^10 in double, truncation
// < 2e-18 relative, to z^4 in float, < 3e-9), and s f = h - s h with h = f^2 / 2 (fdlibm's form), so
// log(1 + f) = f - (h - s (h + R)): the leading term exact, and the error of s (from the division)
// only in the small s (h + R).
FASTMLP_VINLINE double log1p_kernel(double f) {
  const double s = f / (2.0 + f), z = s * s, hfsq = 0.5 * f * f;
  double q = 2.0 / 21;
  for (int k = 19; k >= 3; k -= 2) q = q * z + 2.0 / k;
  return f - (hfsq - s * (hfsq + q * z));
}
FASTMLP_VINLINE float log1p_kernel(float f) {
  const float s = f / (2.0f + f), z = s * s, hfsq = 0.5f * f * f;
  const float q = ((2.0f / 9 * z + 2.0f / 7) * z + 2.0f / 5) * z + 2.0f / 3;
  return f - (hfsq - s * (hfsq + q * z));
}

// log(1 + x) within 1 ulp for x > -1 (x itself for +-0); -inf at -1, NaN below and for NaN, +inf at +inf.
// u = 1 + x = 2^k m with m in [sqrt(2)/2, sqrt(2)) (the exponent bits, shifted so that the cut is
// at sqrt(2)/2); c / u corrects the rounding of 1 + x; log(1 + x) = k ln2 + log1p_kernel(m - 1) + c / u.
template <class T>
FASTMLP_VINLINE T vlog1p(T x) {
  using F = FloatFormat<T>;
  using Bits = typename F::Bits;
  using Int = typename F::Int;
  constexpr T inf = std::numeric_limits<T>::infinity();
  const T u = T(1) + x;
  const T c = u >= T(2) ? T(1) - (u - x) : x - (u - T(1));
  const bool finite = u > T(0) && u < inf;
  const Bits ib = bit_cast<Bits>(finite ? u : T(1)) + (F::one - F::sqrt_half);
  const Int k = static_cast<Int>(ib >> F::mantissa) - F::bias;
  const T m = bit_cast<T>((ib & ((Bits(1) << F::mantissa) - 1)) + F::sqrt_half);
  const T kt = static_cast<T>(k);
  T y = kt * F::ln2_hi + ((kt * F::ln2_lo + (finite ? c / u : T(0))) + log1p_kernel(m - T(1)));
  y = u == T(0) ? -inf : y;
  y = u == inf ? inf : y;
  y = u < T(0) ? std::numeric_limits<T>::quiet_NaN() : y;
  return (x != x || x == T(0)) ? x : y;  // NaN stays NaN, -0 stays -0
}

// erf(x) within ~2 ulp (checked against the C library in tests/test_vmath.py); odd, +-1 beyond
// |x| = 6, NaN for NaN. a = |x|:
//   a < 1:      erf(a) = a p(t), p a degree-11 polynomial in t = 2 a^2 - 1,
//   1 <= a < 6: erf(a) = 1 - e^(-a^2) q(s) / a, q a degree-24 polynomial in s = 2.4 / a - 1.4
//               approximating a e^(a^2) erfc(a) (smooth in 1/a),
// both Chebyshev interpolants computed by scripts/erf_coefficients.py. float goes through double.
FASTMLP_VINLINE double verf(double x) {
  const double a = std::fabs(x);
  const double t = 2.0 * (a < 1.0 ? a * a : 1.0) - 1.0;  // (ternaries: std::fmin does not vectorize)
  double p = -3.80659122412214e-13;
  p = p * t + 9.21125018742823e-12;
  p = p * t - 2.035231956483527e-10;
  p = p * t + 4.115751500265885e-09;
  p = p * t - 7.51156925108609e-08;
  p = p * t + 1.2233827638093572e-06;
  p = p * t - 1.75371694412802e-05;
  p = p * t + 0.00021751715603563488;
  p = p * t - 0.0022854855611440855;
  p = p * t + 0.019852496688984218;
  p = p * t - 0.1405360890227171;
  p = p * t + 0.9654687386698673;
  const double b = a < 1.0 ? 1.0 : (a < 6.0 ? a : 6.0), u = 1.0 / b, s = 2.4 * u - 1.4;
  double q = -6.35511069292512e-10;
  q = q * s + 1.4546030067481999e-09;
  q = q * s + 1.380112958923858e-09;
  q = q * s - 5.764458571239433e-09;
  q = q * s + 3.9346549923858945e-09;
  q = q * s - 4.426677548907314e-09;
  q = q * s + 1.685856492064305e-08;
  q = q * s - 1.8040431253927884e-08;
  q = q * s - 2.7436334821485844e-08;
  q = q * s + 1.5795357244927273e-07;
  q = q * s - 4.448191498355789e-07;
  q = q * s + 9.224650565771039e-07;
  q = q * s - 1.2890691724522377e-06;
  q = q * s + 2.140070396196222e-07;
  q = q * s + 5.899934298094615e-06;
  q = q * s - 2.3855690970734796e-05;
  q = q * s + 5.951632623511637e-05;
  q = q * s - 9.303469236513439e-05;
  q = q * s - 2.4390207608130993e-06;
  q = q * s + 0.0006408677488114277;
  q = q * s - 0.00266934303167284;
  q = q * s + 0.006219717587582877;
  q = q * s - 0.0019368880676843428;
  q = q * s - 0.07128287792547429;
  q = q * s + 0.49666648512593864;
  double y = a < 1.0 ? a * p : 1.0 - vexp(-(b * b)) * q * u;
  y = a < 6.0 ? y : 1.0;
  return x != x ? x : std::copysign(y, x);
}
FASTMLP_VINLINE float verf(float x) { return static_cast<float>(verf(static_cast<double>(x))); }

}  // namespace fastmlp
