// bfloat16 products with float32 accumulation: torch.autocast's CPU matmuls.
// Inputs are rounded to bfloat16 (to nearest even), each product of two
// bfloat16 values is exact in float32, and the sums are float32, in a fixed
// order modelled on AVX512_BF16's VDPBF16PS, so that the hardware kernel and
// its emulation twin (the fallback on other CPUs, and the tests' oracle) give
// the same bits.
//
// Operands are bfloat16 rows padded with +0 to bf16_stride(k) (k rounded up to
// 32) elements. Canonical order of c[i][j] = sum over k of a[i][k] b[j][k]:
//   lane l in [0, 16), starting from +0, for each chunk k0 = 0, 32, 64, ... <
//   bf16_stride(k): s_l = fma(a[k0 + 2l + 1], b[k0 + 2l + 1], s_l), then
//   s_l = fma(a[k0 + 2l], b[k0 + 2l], s_l) (VDPBF16PS: the odd element first),
//   where each fma treats bfloat16 denormal inputs as zero and flushes a
//   denormal result to a zero of its sign (round to nearest even, MXCSR not used);
//   then the pairwise tree s_l = s_l + s_{l+h} for l < h, h = 8, 4, 2, 1 (plain
//   float32 adds); then c = s_0 + bias[j], or c += s_0 (accumulate).
#pragma once
#include <cstdint>
#include <cstring>

#include "common.h"

namespace fastmlp {

using bf16 = std::uint16_t;  // a bfloat16's bits

enum class Bf16Isa { Auto, Avx512Bf16, Emulation };

// Whether the CPU runs that path (Auto and Emulation: always).
bool bf16_isa_available(Bf16Isa isa);

// float32 -> bfloat16 as VCVTNEPS2BF16: round to nearest even; float32 denormals
// become a zero of their sign; NaN stays NaN (made quiet); overflow gives +-inf.
inline bf16 to_bf16(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7F800000u) == 0) return static_cast<bf16>((u >> 16) & 0x8000u);  // zero or denormal
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<bf16>((u >> 16) | 0x0040u);  // NaN
  return static_cast<bf16>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float from_bf16(bf16 h) {
  const std::uint32_t u = std::uint32_t(h) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// k rounded up to 32: the padded row length of a bfloat16 operand.
inline idx bf16_stride(idx k) { return (k + 31) / 32 * 32; }

// src is (rows, cols) float32; dst is (rows, bf16_stride(cols)), zero padded.
void convert_bf16(const float* src, bf16* dst, idx rows, idx cols);
// src is (rows, cols) float32; dst is its transpose (cols, bf16_stride(rows)), zero padded.
void convert_bf16_transposed(const float* src, bf16* dst, idx rows, idx cols);

// a is (M, bf16_stride(k)), b is (N, bf16_stride(k)), bias is (N) or null, c is
// (M, N): c = a b^T (+ bias), or c += a b^T when accumulate (bias then unused).
// Rows are split over up to `threads` of fastmlp's threads (pool.h).
void gemm_bf16(const bf16* a, const bf16* b, const float* bias, float* c, idx M, idx N, idx k, bool accumulate,
               int threads, Bf16Isa isa = Bf16Isa::Auto);

}  // namespace fastmlp
