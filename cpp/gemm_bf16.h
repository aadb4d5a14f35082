// bfloat16 products with float32 accumulation: torch.autocast's CPU matmuls.
// Inputs are rounded to bfloat16 (to nearest even), each product of two
// bfloat16 values is exact in float32, and the sums are float32, in a fixed
// order modelled on AVX512_BF16's VDPBF16PS, so that the hardware kernel, its
// emulation on AVX-512F registers and its plain emulation twin (the fallback on
// other CPUs, and the tests' oracle) give the same bits.
//
// Canonical order of c[i][j] = sum over k of a[i][k] b[k][j], k padded to even
// with +0: one float32 sum s per output element, starting from +0; for each
// pair p = 0, 1, ... < pairs(k) in increasing order (one VDPBF16PS lane step):
//   s = fma(a[i][2p + 1], b[2p + 1][j], s), then s = fma(a[i][2p], b[2p][j], s),
// where each fma treats bfloat16 denormal inputs as zero and flushes a denormal
// result to a zero of its sign (round to nearest even, MXCSR not used); then
// c = s + bias[j], or c += s (accumulate). A result depends only on (row of a,
// column of b, k): never on the batch, the row's position or the threads.
//
// Operands are bfloat16 pairs along k, one 32-bit word each (the even k in the
// low half, as VDPBF16PS reads them):
//   rows    (M, pairs(k)) words, word (i, p) = (m[i][2p], m[i][2p + 1]);
//   pairs   (pairs(k), N) words, word (p, j) = (m[2p][j], m[2p + 1][j]);
//   panels  the pairs layout of b cut into bf16_panels(N) panels of kBf16NR
//           columns, each (pairs(k), kBf16NR) words, zero columns past N.
// The a operand is addressed generally, word (i, p) at a[i * rs + p * cs]:
// rows is rs = pairs(k), cs = 1; pairs is rs = 1, cs = M. So y = x w^T takes
// x's rows and the panels of w^T (bf16_panels_of_rows(w)), dx = dy w takes
// dy's rows and w's pair panels, dw = dy^T x takes dy's pairs and x's pair
// panels: no operand is transposed.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

#include "common.h"

namespace fastmlp {

using bf16 = std::uint16_t;       // a bfloat16's bits
using bf16x2 = std::uint32_t;     // two bfloat16 along k: the even k in the low half

// Amx: TDPBF16PS on the tile registers, with its own bits (gemm_bf16.cpp), the operands converted as on
// Avx512Bf16. Avx512Bf16: VDPBF16PS. Avx512F: the emulation's arithmetic on AVX-512F registers (no AVX512_BF16
// needed), the same bits. Avx2: the same on AVX2 + FMA registers. Emulation: the plain twin, the
// fallback and the tests' oracle. Auto: the first of these the CPU runs.
enum class Bf16Isa { Auto, Amx, Avx512Bf16, Avx512F, Avx2, Emulation };

// Whether the CPU runs that path (Auto and Emulation: always).
bool bf16_isa_available(Bf16Isa isa);
// Auto resolved to the path this CPU runs: the environment's FASTMLP_BF16_ISA when set (read once; a
// path's name, below), else the first of the enum's order the CPU runs. Throws value_error if the CPU
// cannot run isa (or FASTMLP_BF16_ISA's path), or FASTMLP_BF16_ISA names no path.
Bf16Isa bf16_resolve(Bf16Isa isa);
// "auto", "amx", "avx512bf16", "avx512f", "avx2", "emulation" <-> the paths (false: no such name)
bool bf16_isa_named(const std::string& name, Bf16Isa& isa);
const char* bf16_isa_name(Bf16Isa isa);
// "'auto', 'amx', ... or 'emulation'": the names, for error messages
std::string bf16_isa_names();

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

// The micro-kernel's columns: the width of a b panel.
constexpr idx kBf16NR = 32;
// k pairs (k rounded up to even, halved).
inline idx bf16_pairs(idx k) { return (k + 1) / 2; }
// Panels of b for n columns.
inline idx bf16_panels(idx n) { return (n + kBf16NR - 1) / kBf16NR; }
// Words of the panels of a (k, n) b operand.
inline idx bf16_panel_words(idx k, idx n) { return checked_mul(checked_mul(bf16_panels(n), kBf16NR), bf16_pairs(k)); }

// Conversions, split over up to `threads` threads (pool.h).
// src is (rows, cols) float32. Rows layout: dst is (rows, pairs(cols)) words.
void bf16_rows(const float* src, idx rows, idx cols, bf16x2* dst, Bf16Isa isa, int threads = 1);
// Pairs layout of src (pairs along rows): dst is (pairs(rows), cols) words when
// width == cols, or the panels of kBf16NR columns when width == kBf16NR, panel q at
// dst + q * stride (stride 0: pairs(rows) * width, the panels back to back; a larger one writes
// some rows of a taller matrix's panels, on the calling thread).
void bf16_pairs(const float* src, idx rows, idx cols, idx width, bf16x2* dst, Bf16Isa isa, int threads = 1,
                idx stride = 0);
// Panels of src^T (pairs along cols, columns = rows): bf16_panel_words(cols, rows) words.
void bf16_panels_of_rows(const float* src, idx rows, idx cols, bf16x2* dst, Bf16Isa isa, int threads = 1);

// a: word (i, p) at a[i * rs + p * cs] for i < M, p < pairs(k); b: panels of a (k, N)
// matrix; bias is (N) or null; c is (M, N): c = a b (+ bias), or c += a b when
// accumulate (bias then unused). Output tiles are split over up to `threads` of
// fastmlp's threads (pool.h).
void gemm_bf16(const bf16x2* a, idx rs, idx cs, const bf16x2* b, const float* bias, float* c, idx M, idx N, idx k,
               bool accumulate, int threads, Bf16Isa isa = Bf16Isa::Auto);

}  // namespace fastmlp
