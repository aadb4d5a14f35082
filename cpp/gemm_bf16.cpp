#include "gemm_bf16.h"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include "pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTMLP_BF16_X86 1
#define AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define AVX512F __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#define AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastmlp {

namespace {

constexpr idx NR = kBf16NR;

inline bf16x2 pair(bf16 lo, bf16 hi) { return bf16x2(lo) | (bf16x2(hi) << 16); }

// ---------------------------------------------------------------- conversions, plain twins
// dst (rows, pairs(cols)): word (r, p) = (src[r][2p], src[r][2p + 1]), +0 past cols
void rows_plain(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols);
  for (idx r = 0; r < rows; ++r) {
    const float* s = src + r * cols;
    for (idx p = 0; p < P; ++p) dst[r * P + p] = pair(to_bf16(s[2 * p]), 2 * p + 1 < cols ? to_bf16(s[2 * p + 1]) : 0);
  }
}
// panel q of `width` columns, (pairs(rows), width) words: word (p, jj) = (src[2p][j], src[2p + 1][j]), j = q width + jj
// Columns [c0, c1) only (c0 a multiple of width; c1 a multiple or cols); dst at the panel of c0.
void pairs_plain(const float* src, idx rows, idx cols, idx width, bf16x2* dst, idx c0 = 0, idx c1 = -1) {
  if (c1 < 0) c1 = cols;
  const idx P = bf16_pairs(rows), nq = width ? (c1 - c0 + width - 1) / width : 0;
  src += c0;
  cols -= c0;
  const idx ld = cols + c0;
  for (idx q = 0; q < nq; ++q)
    for (idx p = 0; p < P; ++p)
      for (idx jj = 0; jj < width; ++jj) {
        const idx j = q * width + jj;
        const bf16 lo = j < cols ? to_bf16(src[2 * p * ld + j]) : 0;
        const bf16 hi = j < cols && 2 * p + 1 < rows ? to_bf16(src[(2 * p + 1) * ld + j]) : 0;
        dst[(q * P + p) * width + jj] = pair(lo, hi);
      }
}
// panels of src^T: panel q, word (p, jj) = (src[j][2p], src[j][2p + 1]), j = q NR + jj
void panels_of_rows_plain(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols), nq = bf16_panels(rows);
  for (idx q = 0; q < nq; ++q)
    for (idx jj = 0; jj < NR; ++jj) {
      const idx j = q * NR + jj;
      const float* s = src + j * cols;
      for (idx p = 0; p < P; ++p)
        dst[(q * P + p) * NR + jj] =
            j < rows ? pair(to_bf16(s[2 * p]), 2 * p + 1 < cols ? to_bf16(s[2 * p + 1]) : 0) : 0;
    }
}

// ---------------------------------------------------------------- emulation twin of the kernel
// VDPBF16PS's arithmetic on one lane: denormal inputs read as zero, a denormal result
// flushed to a zero of its sign
inline float daz(float v) { return std::fabs(v) < FLT_MIN ? std::copysign(0.0f, v) : v; }
inline float dp_step(bf16 a, bf16 b, float s) { return daz(std::fma(daz(from_bf16(a)), daz(from_bf16(b)), daz(s))); }

// The tile's epilogue: c = s + bias, c = s, or c += s.
inline float finish(float s, const float* c, const float* bias, idx j, bool accumulate) {
  return accumulate ? *c + s : bias ? s + bias[j] : s;
}

struct Emulation {
  static constexpr int MR = 12;
  // c (m, nc) at ldc (+)= a (m rows, word (i, p) at a[i rs + p cs]) times panel bp (P, NR)
  static void tile(int m, const bf16x2* a, idx rs, idx cs, const bf16x2* bp, idx P, float* c, idx ldc, idx nc,
                   const float* bias, bool accumulate) {
    for (int i = 0; i < m; ++i)
      for (idx j = 0; j < nc; ++j) {
        float s = 0.0f;  // the canonical order (gemm_bf16.h)
        for (idx p = 0; p < P; ++p) {
          const bf16x2 u = a[i * rs + p * cs], v = bp[p * NR + j];
          s = dp_step(bf16(u >> 16), bf16(v >> 16), s);
          s = dp_step(bf16(u), bf16(v), s);
        }
        c[i * ldc + j] = finish(s, c + i * ldc + j, bias, j, accumulate);
      }
  }
};

#ifdef FASTMLP_BF16_X86
// A kernel of up to MR rows from its tiles of 1, 2, ..., MR rows (Tiles[m - 1]: m rows; run_range's K)
using TileFn = void (*)(const bf16x2*, idx, idx, const bf16x2*, idx, float*, idx, idx, const float*, bool);
template <TileFn... Tiles>
struct RowTiles {
  static constexpr int MR = int(sizeof...(Tiles));
  static void tile(int m, const bf16x2* a, idx rs, idx cs, const bf16x2* bp, idx P, float* c, idx ldc, idx nc,
                   const float* bias, bool accumulate) {
    static constexpr TileFn fns[] = {Tiles...};
    fns[m - 1](a, rs, cs, bp, P, c, ldc, nc, bias, accumulate);
  }
};

// ---------------------------------------------------------------- the AVX-512 kernels' epilogue
// finish() on an MR x 32 tile of sums s0 (columns 0-15), s1 (16-31): c = s + bias, c = s, or c += s,
// for the first nc columns of c (MR rows ldc apart)
AVX512F inline __mmask16 first16(idx n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }
template <int MR>
AVX512F inline void store_tile(__m512* s0, __m512* s1, float* c, idx ldc, idx nc, const float* bias, bool accumulate) {
  const __mmask16 k0 = first16(nc), k1 = first16(std::max<idx>(0, nc - 16));
  for (int i = 0; i < MR; ++i) {
    float* cr = c + i * ldc;
    if (accumulate) {
      s0[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(k0, cr), s0[i]);
      s1[i] = _mm512_add_ps(_mm512_maskz_loadu_ps(k1, cr + 16), s1[i]);
    } else if (bias) {
      s0[i] = _mm512_add_ps(s0[i], _mm512_maskz_loadu_ps(k0, bias));
      s1[i] = _mm512_add_ps(s1[i], _mm512_maskz_loadu_ps(k1, bias + 16));
    }
    _mm512_mask_storeu_ps(cr, k0, s0[i]);
    _mm512_mask_storeu_ps(cr + 16, k1, s1[i]);
  }
}

// ---------------------------------------------------------------- AVX512_BF16
// Conversions: VCVTNE2PS2BF16 rounds as to_bf16 (nearest even, denormals to a signed
// zero, NaN quieted, overflow to inf; tests/test_bf16.py checks it against NumPy).
// GCC 12's masked-load and conversion intrinsics start from undefined values, which it then
// reports as maybe used uninitialised (a false positive, as in gemm.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// 16 pairs of s (32 floats, n <= 32 of them valid, +0 past) as 16 words
AVX512BF16 inline __m512i pairs16(const float* s, idx n) {
  const __m512 lo = _mm512_maskz_loadu_ps(first16(n), s);
  const __m512 hi = _mm512_maskz_loadu_ps(first16(std::max<idx>(0, n - 16)), s + 16);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

AVX512BF16 void rows_avx(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols);
  for (idx r = 0; r < rows; ++r)
    for (idx p = 0; p < P; p += 16)
      _mm512_mask_storeu_epi32(dst + r * P + p, first16(P - p), pairs16(src + r * cols + 2 * p, cols - 2 * p));
}

// 16 words (lo[j], hi[j]) from 16 columns of two float rows (n valid; hi null: +0): both rows in one
// conversion (lo in the 16 low halves), then its halves interleaved
alignas(64) constexpr std::uint16_t kInterleave[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
AVX512BF16 inline __m512i interleave16(const float* lo, const float* hi, idx n) {
  const __mmask16 k = first16(n);
  const __m512 l = _mm512_maskz_loadu_ps(k, lo), h = hi ? _mm512_maskz_loadu_ps(k, hi) : _mm512_setzero_ps();
  return _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), (__m512i)_mm512_cvtne2ps_pbh(h, l));
}

AVX512BF16 void pairs_avx(const float* src, idx rows, idx cols, idx width, bf16x2* dst, idx c0 = 0, idx c1 = -1) {
  if (c1 < 0) c1 = cols;
  const idx P = bf16_pairs(rows), nq = width ? (c1 - c0 + width - 1) / width : 0;
  const idx ld = cols;
  src += c0;
  cols -= c0;
  for (idx p = 0; p < P; ++p) {  // the two rows of src in order, each panel's words of pair p in turn
    const float* lo = src + 2 * p * ld;
    const float* hi = 2 * p + 1 < rows ? lo + ld : nullptr;
    for (idx q = 0; q < nq; ++q)
      for (idx jj = 0; jj < width; jj += 16) {
        const idx j = q * width + jj, n = std::max<idx>(0, std::min<idx>(16, cols - j));
        _mm512_mask_storeu_epi32(dst + (q * P + p) * width + jj, first16(width - jj),
                                 n ? interleave16(lo + j, hi ? hi + j : nullptr, n) : _mm512_setzero_si512());
      }
  }
}

// r[16] rows of 16 words -> its transpose
AVX512BF16 inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // s[4i + m], 128-bit lane L: column 4L + m of rows 4i .. 4i + 3
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512i u = _mm512_shuffle_i32x4(r[m], r[4 + m], 0x88), v = _mm512_shuffle_i32x4(r[m], r[4 + m], 0xDD);
    const __m512i u2 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0x88), v2 = _mm512_shuffle_i32x4(r[8 + m], r[12 + m], 0xDD);
    t[m] = _mm512_shuffle_i32x4(u, u2, 0x88);
    t[4 + m] = _mm512_shuffle_i32x4(v, v2, 0x88);
    t[8 + m] = _mm512_shuffle_i32x4(u, u2, 0xDD);
    t[12 + m] = _mm512_shuffle_i32x4(v, v2, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

AVX512BF16 void panels_of_rows_avx(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols), nq = bf16_panels(rows);
  for (idx q = 0; q < nq; ++q)
    for (idx j0 = q * NR; j0 < (q + 1) * NR; j0 += 16)
      for (idx p0 = 0; p0 < P; p0 += 16) {
        __m512i r[16];
        for (int jj = 0; jj < 16; ++jj)
          r[jj] = j0 + jj < rows ? pairs16(src + (j0 + jj) * cols + 2 * p0, cols - 2 * p0) : _mm512_setzero_si512();
        transpose16(r);
        const int np = static_cast<int>(std::min<idx>(16, P - p0));
        for (int pp = 0; pp < np; ++pp) _mm512_storeu_si512(dst + (q * P + p0 + pp) * NR + (j0 - q * NR), r[pp]);
      }
}

// The micro-kernel: MR x 32 outputs in 2 MR zmm accumulators; per k pair, the
// panel's 32 words (two zmm) and MR broadcast words of a, 2 MR VDPBF16PS.
template <int MR>
AVX512BF16 void tile_avx(const bf16x2* a, idx rs, idx cs, const bf16x2* bp, idx P, float* c, idx ldc, idx nc,
                         const float* bias, bool accumulate) {
  __m512 s0[MR], s1[MR];
  for (int i = 0; i < MR; ++i) s0[i] = s1[i] = _mm512_setzero_ps();
  const bf16x2* ar[MR];
  for (int i = 0; i < MR; ++i) ar[i] = a + i * rs;
  for (idx p = 0; p < P; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + p * NR), b1 = (__m512bh)_mm512_loadu_si512(bp + p * NR + 16);
    const idx o = p * cs;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh w = (__m512bh)_mm512_set1_epi32(static_cast<int>(ar[i][o]));
      s0[i] = _mm512_dpbf16_ps(s0[i], w, b0);
      s1[i] = _mm512_dpbf16_ps(s1[i], w, b1);
    }
  }
  store_tile<MR>(s0, s1, c, ldc, nc, bias, accumulate);
}

template <int... M>
RowTiles<&tile_avx<M + 1>...> avx_tiles(std::integer_sequence<int, M...>);
using Avx512Bf16 = decltype(avx_tiles(std::make_integer_sequence<int, 12>{}));
#pragma GCC diagnostic pop
#endif

#ifdef FASTMLP_BF16_X86
// ---------------------------------------------------------------- the emulation on AVX-512F
// The twin's arithmetic (dp_step) on 16 lanes, for CPUs with AVX-512F but no AVX512_BF16: each lane
// one output element, the same fmas in the same order, the flushing done by compare and mask where a
// sum can be denormal (flush_free, below; else left out, as on AVX2). The same bits as Emulation
// (tests/test_bf16.py), tens of times faster.
AVX512F inline __m512 daz16(__m512 v) {  // daz() on every lane
  const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(v), _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ);
  return _mm512_castsi512_ps(
      _mm512_mask_and_epi32(_mm512_castps_si512(v), tiny, _mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN)));
}
AVX512F inline __m512 hi16(__m512i w) { return daz16(_mm512_castsi512_ps(_mm512_and_epi32(w, _mm512_set1_epi32(-65536)))); }
AVX512F inline __m512 lo16(__m512i w) { return daz16(_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))); }

// Flush = false: the fmas alone, for products where no sum can be denormal (flush_free, as on AVX2).
template <bool Flush>
AVX512F inline __m512 fma16(__m512 a, __m512 b, __m512 s) {
  return Flush ? daz16(_mm512_fmadd_ps(a, b, s)) : _mm512_fmadd_ps(a, b, s);
}

// MR x 32 outputs: per k pair, the panel's 32 words as high and low halves, and per row of a its
// word's two halves broadcast; s = daz(fma(a_hi, b_hi, s)), then the same with the low halves.
template <int MR, bool Flush>
AVX512F void tile_emu(const bf16x2* a, idx rs, idx cs, const bf16x2* bp, idx P, float* c, idx ldc, idx nc,
                      const float* bias, bool accumulate) {
  __m512 s0[MR], s1[MR];
  for (int i = 0; i < MR; ++i) s0[i] = s1[i] = _mm512_setzero_ps();
  for (idx p = 0; p < P; ++p) {
    const __m512i w0 = _mm512_loadu_si512(bp + p * NR), w1 = _mm512_loadu_si512(bp + p * NR + 16);
    const __m512 h0 = hi16(w0), l0 = lo16(w0), h1 = hi16(w1), l1 = lo16(w1);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const bf16x2 u = a[i * rs + p * cs];
      const __m512 ah = _mm512_set1_ps(daz(from_bf16(bf16(u >> 16)))), al = _mm512_set1_ps(daz(from_bf16(bf16(u))));
      s0[i] = fma16<Flush>(al, l0, fma16<Flush>(ah, h0, s0[i]));
      s1[i] = fma16<Flush>(al, l1, fma16<Flush>(ah, h1, s1[i]));
    }
  }
  store_tile<MR>(s0, s1, c, ldc, nc, bias, accumulate);
}

template <bool Flush, int... M>
RowTiles<&tile_emu<M + 1, Flush>...> emu_tiles(std::integer_sequence<int, M...>);
// 8 rows: 16 accumulators, 4 panel halves, 2 broadcasts and the constants in 32 zmm
template <bool Flush>
using Avx512F = decltype(emu_tiles<Flush>(std::make_integer_sequence<int, 8>{}));
#endif

#ifdef FASTMLP_BF16_X86
// ---------------------------------------------------------------- the emulation on AVX2 + FMA
// The twin's arithmetic on 8 lanes, for CPUs without AVX-512: each lane one output element, the
// same fmas in the same order. Operands come from the conversions above, which never make a
// bfloat16 denormal, so dp_step's flushing of inputs never fires; its flushing of a result fires
// only when a sum falls below FLT_MIN. Flush = false leaves that out, for products where no sum can
// (flush_free below), and then runs at the speed of a float32 kernel; Flush = true does it by
// compare and mask after every fma.
AVX2 inline __m256 daz8(__m256 v) {  // daz() on every lane
  const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 tiny = _mm256_cmp_ps(_mm256_and_ps(v, mag), _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ);
  return _mm256_andnot_ps(_mm256_and_ps(tiny, mag), v);
}
template <bool Flush>
AVX2 inline __m256 fma8(__m256 a, __m256 b, __m256 s) {
  return Flush ? daz8(_mm256_fmadd_ps(a, b, s)) : _mm256_fmadd_ps(a, b, s);
}
AVX2 inline __m256i first8(idx n) {  // lanes < n all ones
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<idx>(n, 8))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// MR x 32 outputs as two MR x 16 halves: per k pair, the half panel's 16 words as high and low halves,
// and per row of a its word broadcast and split; s = fma(a_hi, b_hi, s), then the low halves.
template <int MR, bool Flush>
AVX2 void tile_avx2(const bf16x2* a, idx rs, idx cs, const bf16x2* bp, idx P, float* c, idx ldc, idx nc,
                    const float* bias, bool accumulate) {
  const __m256i top = _mm256_set1_epi32(-65536);
  for (idx h = 0; h < nc; h += 16) {  // columns [h, h + 16) of the panel
    __m256 s0[MR], s1[MR];
    for (int i = 0; i < MR; ++i) s0[i] = s1[i] = _mm256_setzero_ps();
    for (idx p = 0; p < P; ++p) {
      const __m256i w0 = _mm256_loadu_si256((const __m256i*)(bp + p * NR + h));
      const __m256i w1 = _mm256_loadu_si256((const __m256i*)(bp + p * NR + h + 8));
      const __m256 h0 = _mm256_castsi256_ps(_mm256_and_si256(w0, top)), l0 = _mm256_castsi256_ps(_mm256_slli_epi32(w0, 16));
      const __m256 h1 = _mm256_castsi256_ps(_mm256_and_si256(w1, top)), l1 = _mm256_castsi256_ps(_mm256_slli_epi32(w1, 16));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256i u = _mm256_set1_epi32(static_cast<int>(a[i * rs + p * cs]));
        const __m256 ah = _mm256_castsi256_ps(_mm256_and_si256(u, top)), al = _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
        s0[i] = fma8<Flush>(al, l0, fma8<Flush>(ah, h0, s0[i]));
        s1[i] = fma8<Flush>(al, l1, fma8<Flush>(ah, h1, s1[i]));
      }
    }
    // finish(): c = s + bias, c = s, or c += s on the first nc - h (<= 16) columns
    const __m256i k0 = first8(nc - h), k1 = first8(std::max<idx>(0, nc - h - 8));
    for (int i = 0; i < MR; ++i) {
      float* cr = c + i * ldc + h;
      if (accumulate) {
        s0[i] = _mm256_add_ps(_mm256_maskload_ps(cr, k0), s0[i]);
        s1[i] = _mm256_add_ps(_mm256_maskload_ps(cr + 8, k1), s1[i]);
      } else if (bias) {
        s0[i] = _mm256_add_ps(s0[i], _mm256_maskload_ps(bias + h, k0));
        s1[i] = _mm256_add_ps(s1[i], _mm256_maskload_ps(bias + h + 8, k1));
      }
      _mm256_maskstore_ps(cr, k0, s0[i]);
      _mm256_maskstore_ps(cr + 8, k1, s1[i]);
    }
  }
}

template <bool Flush, int... M>
RowTiles<&tile_avx2<M + 1, Flush>...> avx2_tiles(std::integer_sequence<int, M...>);
// 4 rows: 8 accumulators, 4 panel halves, 2 of a and the mask in 16 ymm (3, 5 and 6 rows, or the high
// halves of all rows before the low halves, measured 10-35% slower on a Zen 3 core)
template <bool Flush>
using Avx2 = decltype(avx2_tiles<Flush>(std::make_integer_sequence<int, 4>{}));

// Conversions: to_bf16 on 8 lanes by its integer arithmetic (the 8 floats' bits in, their bfloat16 in the
// low halves of the 32-bit lanes out).
AVX2 inline __m256i bf16_8(__m256 v) {
  const __m256i u = _mm256_castps_si256(v), top = _mm256_srli_epi32(u, 16);
  __m256i r = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), _mm256_and_si256(top, _mm256_set1_epi32(1))), 16);
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
  r = _mm256_blendv_epi8(r, _mm256_or_si256(top, _mm256_set1_epi32(0x40)), nan);
  const __m256i small = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7F800000)), _mm256_setzero_si256());
  return _mm256_blendv_epi8(r, _mm256_and_si256(top, _mm256_set1_epi32(0x8000)), small);
}
// the words of 16 floats of a row (n <= 16 valid, +0 past): 8 words (s[2p], s[2p + 1])
AVX2 inline __m256i row_words8(const float* s, idx n) {
  const __m256i lo = bf16_8(_mm256_maskload_ps(s, first8(n))), hi = bf16_8(_mm256_maskload_ps(s + 8, first8(std::max<idx>(0, n - 8))));
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);  // packus works per 128-bit lane
}
// 8 words (lo[j], hi[j]) from 8 columns of two float rows (n valid; hi null: +0)
AVX2 inline __m256i interleave8(const float* lo, const float* hi, idx n) {
  const __m256i k = first8(n), l = bf16_8(_mm256_maskload_ps(lo, k));
  return hi ? _mm256_or_si256(l, _mm256_slli_epi32(bf16_8(_mm256_maskload_ps(hi, k)), 16)) : l;
}

AVX2 void rows_avx2(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols);
  for (idx r = 0; r < rows; ++r)
    for (idx p = 0; p < P; p += 8)
      _mm256_maskstore_epi32((int*)(dst + r * P + p), first8(P - p), row_words8(src + r * cols + 2 * p, cols - 2 * p));
}

AVX2 void pairs_avx2(const float* src, idx rows, idx cols, idx width, bf16x2* dst, idx c0 = 0, idx c1 = -1) {
  if (c1 < 0) c1 = cols;
  const idx P = bf16_pairs(rows), nq = width ? (c1 - c0 + width - 1) / width : 0;
  const idx ld = cols;
  src += c0;
  cols -= c0;
  for (idx p = 0; p < P; ++p) {  // as pairs_avx
    const float* lo = src + 2 * p * ld;
    const float* hi = 2 * p + 1 < rows ? lo + ld : nullptr;
    for (idx q = 0; q < nq; ++q)
      for (idx jj = 0; jj < width; jj += 8) {
        const idx j = q * width + jj, n = std::max<idx>(0, std::min<idx>(8, cols - j));
        _mm256_maskstore_epi32((int*)(dst + (q * P + p) * width + jj), first8(width - jj),
                               n ? interleave8(lo + j, hi ? hi + j : nullptr, n) : _mm256_setzero_si256());
      }
  }
}

// r[8] rows of 8 words -> its transpose
AVX2 inline void transpose8(__m256i r[8]) {
  __m256i t[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // per 128-bit lane L: column 4L + m of rows 4i .. 4i + 3 in r[4i + m]
    r[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    t[m] = _mm256_permute2x128_si256(r[m], r[4 + m], 0x20);
    t[4 + m] = _mm256_permute2x128_si256(r[m], r[4 + m], 0x31);
  }
  for (int i = 0; i < 8; ++i) r[i] = t[i];
}

AVX2 void panels_of_rows_avx2(const float* src, idx rows, idx cols, bf16x2* dst) {
  const idx P = bf16_pairs(cols), nq = bf16_panels(rows);
  for (idx q = 0; q < nq; ++q)
    for (idx j0 = q * NR; j0 < (q + 1) * NR; j0 += 8)
      for (idx p0 = 0; p0 < P; p0 += 8) {
        __m256i r[8];
        for (int jj = 0; jj < 8; ++jj)
          r[jj] = j0 + jj < rows ? row_words8(src + (j0 + jj) * cols + 2 * p0, cols - 2 * p0) : _mm256_setzero_si256();
        transpose8(r);
        const int np = static_cast<int>(std::min<idx>(8, P - p0));
        for (int pp = 0; pp < np; ++pp) _mm256_storeu_si256((__m256i*)(dst + (q * P + p0 + pp) * NR + (j0 - q * NR)), r[pp]);
      }
}

// The smallest biased exponent of the nonzero finite bfloat16 halves of n words (less one; 255: none),
// 16 halves a step: (e - 1) mod 256 puts zeros (e = 0) at 255 and inf/NaN (e = 255) at 254.
AVX2 int min_exponent(const bf16x2* w, idx n) {
  const __m256i low8 = _mm256_set1_epi16(0xFF), one = _mm256_set1_epi16(1);
  __m256i m = _mm256_set1_epi16(0xFF);
  idx i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i e = _mm256_and_si256(_mm256_srli_epi16(_mm256_loadu_si256((const __m256i*)(w + i)), 7), low8);
    m = _mm256_min_epu16(m, _mm256_and_si256(_mm256_sub_epi16(e, one), low8));
  }
  alignas(32) std::uint16_t lanes[16];
  _mm256_store_si256((__m256i*)lanes, m);
  int best = 255;
  for (int l = 0; l < 16; ++l) best = std::min<int>(best, lanes[l]);
  for (; i < n; ++i)
    for (int half = 0; half < 2; ++half) best = std::min<int>(best, ((w[i] >> (16 * half + 7)) - 1) & 0xFF);
  return best;
}
#endif

// ---------------------------------------------------------------- the blocked loop
struct Job {
  const bf16x2 *a, *b;
  idx rs, cs;
  const float* bias;
  float* c;
  idx M, N, P;
  bool accumulate, by_panels;  // units of panels (all rows each), or of row blocks (all panels each)
  idx units, per_unit;         // units of per_unit panels or row blocks
  std::atomic<idx> next{0};    // the next unit to take: a thread that runs late finds the work done
  std::uint64_t call = 0;      // this call's number (the AMX kernel's per-thread scratch: what it holds)
};

// Panels [q0, q1) times rows [r0, r1): for each block of panels that stays in L2, every
// block of MR rows of a (in L1) meets each panel of the block in turn.
template <class K>
void run_range(const Job& j, idx q0, idx q1, idx r0, idx r1) {
  constexpr idx kBlockBytes = 512 * 1024;
  const idx per = std::max<idx>(1, kBlockBytes / std::max<idx>(1, j.P * NR * 4));
  for (idx qb = q0; qb < q1; qb += per)
    for (idx r = r0; r < r1; r += K::MR) {
      const int m = static_cast<int>(std::min<idx>(K::MR, r1 - r));
      for (idx q = qb; q < std::min(q1, qb + per); ++q)
        K::tile(m, j.a + r * j.rs, j.rs, j.cs, j.b + q * j.P * NR, j.P, j.c + r * j.N + q * NR, j.N,
                std::min<idx>(NR, j.N - q * NR), j.bias ? j.bias + q * NR : nullptr, j.accumulate);
    }
}

// One thread's share: units taken in turn until none is left (every output element's bits are the same
// whichever thread computes it).
template <class K>
struct Blocked : K {
  static void range(const Job& j, idx q0, idx q1, idx r0, idx r1) { run_range<K>(j, q0, q1, r0, r1); }
};

template <class K>
void run_chunk(void* p, idx) {
  Job& j = *static_cast<Job*>(p);
  const idx nq = bf16_panels(j.N);
  for (idx u; (u = j.next.fetch_add(1, std::memory_order_relaxed)) < j.units;) {
    const idx lo = u * j.per_unit, hi = (u + 1) * j.per_unit;
    if (j.by_panels) K::range(j, lo, std::min(nq, hi), 0, j.M);
    else K::range(j, 0, nq, std::min(j.M, lo * K::MR), std::min(j.M, hi * K::MR));
  }
}

#ifdef FASTMLP_BF16_X86
// ---------------------------------------------------------------- AMX
// TDPBF16PS on tiles: a 32 x 32 block of c in four 16 x 16 float32 tiles (0-3), each step 16 k pairs
// of 32 rows of a (tiles 4, 5: 16 rows of 16 words) and of one panel (tiles 6, 7: 16 pair rows of its
// columns 0-15 and 16-31). The tiles start from the bias (or from c, accumulating; else zero) and
// every step adds to them: c = bias + a b, not the other paths' (a b) + bias. The unit sums each step's products in its own way, not in the canonical
// order: measured, one pair alone gives round(a0 b0 + a1 b1) then adds it, as a step of VDPBF16PS
// would not, and longer steps match neither sequential fmas nor one rounding of the exact sum nor
// aligned truncated sums; the bits differ from VDPBF16PS's in most outputs of a long k, with about
// half its error against the exact sum. So this path has its own bits (denormals flushed, as on the
// others). They are still a function of (row of a, column of b, k) alone: the steps start at pair 0
// and take 16 pairs each, the last one padded with zero words, whatever the block, the batch or the
// thread.
struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

struct Amx {
  static constexpr int MR = 32;
  static constexpr idx KP = 16;  // k pairs a step
  struct Scratch {
    std::vector<bf16x2> a;      // a block's rows, (steps, 32, 16) words, zero past M and P
    std::vector<bf16x2> tails;  // each panel's last step: (16, NR) words, zero rows past P
    std::uint64_t call = 0;     // the call whose tails [lo, hi) it holds
    idx lo = 0, hi = 0;
  };
  static Scratch& scratch() {
    thread_local Scratch s;
    return s;
  }
  // n words of v at a 64-byte boundary (a tile row split over two cache lines halves the loads' speed)
  static bf16x2* aligned(std::vector<bf16x2>& v, idx n) {
    if (v.size() < std::size_t(n + 16)) v.resize(std::size_t(n + 16));
    return v.data() + ((64 - reinterpret_cast<std::uintptr_t>(v.data()) % 64) % 64) / 4;
  }

  // 32 rows of a from row r (m of them real), step by step: step t's (32, 16) words at dst + 512 t
  // (tile rows 64 bytes apart: a row stride of a power of two bytes would put a tile's rows in a
  // few cache sets)
  AMX static void pack_a(const Job& j, idx r, int m, bf16x2* dst, idx steps) {
    const idx P = j.P;
    if (j.rs == 1) {  // the pairs layout: 16 x 16 word blocks transposed
      for (idx t = 0; t < steps; ++t)
        for (int i0 = 0; i0 < 32; i0 += 16) {
          __m512i w[16];
          const __mmask16 k = first16(std::max(0, m - i0));
          for (int pp = 0; pp < 16; ++pp) {
            const idx p = t * KP + pp;
            w[pp] = p < P ? _mm512_maskz_loadu_epi32(k, j.a + (r + i0) + p * j.cs) : _mm512_setzero_si512();
          }
          transpose16(w);
          for (int ii = 0; ii < 16; ++ii) _mm512_storeu_si512(dst + (t * 32 + i0 + ii) * KP, w[ii]);
        }
      return;
    }
    for (int i = 0; i < 32; ++i) {
      const bf16x2* src = j.a + (r + i) * j.rs;
      for (idx t = 0; t < steps; ++t) {
        bf16x2* d = dst + (t * 32 + i) * KP;
        const idx n = i < m ? std::min<idx>(KP, P - t * KP) : 0;
        if (j.cs == 1) {
          _mm512_store_si512(d, _mm512_maskz_loadu_epi32(first16(n), src + t * KP));
          continue;
        }
        for (idx pp = 0; pp < n; ++pp) d[pp] = src[(t * KP + pp) * j.cs];
        std::fill(d + n, d + KP, bf16x2(0));
      }
    }
  }

  AMX static void range(const Job& j, idx q0, idx q1, idx r0, idx r1) {
    const idx P = j.P, full = P / KP, steps = (P + KP - 1) / KP;
    Scratch& s = scratch();
    bf16x2* const a = aligned(s.a, 32 * KP * steps);
    bf16x2* const tails = full < steps ? aligned(s.tails, bf16_panels(j.N) * KP * NR) : nullptr;
    if (full < steps && !(s.call == j.call && s.lo <= q0 && q1 <= s.hi)) {  // the panels' last steps, padded
      for (idx q = q0; q < q1; ++q) {
        bf16x2* t = tails + q * KP * NR;
        const idx rest = (P - full * KP) * NR;
        std::copy(j.b + (q * P + full * KP) * NR, j.b + (q * P + full * KP) * NR + rest, t);
        std::fill(t + rest, t + KP * NR, bf16x2(0));
      }
      s.call = j.call, s.lo = q0, s.hi = q1;
    }
    TileConfig cfg;
    for (int t = 0; t < 8; ++t) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    alignas(64) float part[32 * NR];  // a block past the edges of c: (32, NR), its first (m, nc) c's
    constexpr idx kBlockBytes = 512 * 1024;
    const idx per = std::max<idx>(1, kBlockBytes / std::max<idx>(1, P * NR * 4));
    for (idx qb = q0; qb < q1; qb += per)
      for (idx r = r0; r < r1; r += MR) {
        const int m = static_cast<int>(std::min<idx>(MR, r1 - r));
        pack_a(j, r, m, a, steps);
        for (idx q = qb; q < std::min(q1, qb + per); ++q) {
          const idx nc = std::min<idx>(NR, j.N - q * NR);
          const float* bias = j.bias ? j.bias + q * NR : nullptr;
          float* cb = j.c + r * j.N + q * NR;
          const bool whole = m == MR && nc == NR;
          float* dst = whole ? cb : part;  // where the tiles start from and end at
          const idx ld = whole ? j.N : NR;
          if (!whole)
            for (int i = 0; i < MR; ++i)
              for (idx jj = 0; jj < NR; ++jj)
                part[i * NR + jj] = i >= m || jj >= nc ? 0.0f : j.accumulate ? cb[i * j.N + jj] : bias ? bias[jj] : 0.0f;
          if (j.accumulate || (bias && !whole)) {
            _tile_loadd(0, dst, ld * 4);
            _tile_loadd(1, dst + 16, ld * 4);
            _tile_loadd(2, dst + 16 * ld, ld * 4);
            _tile_loadd(3, dst + 16 * ld + 16, ld * 4);
          } else if (bias) {  // every row the bias: a stride of 0
            _tile_loadd(0, bias, 0);
            _tile_loadd(1, bias + 16, 0);
            _tile_loadd(2, bias, 0);
            _tile_loadd(3, bias + 16, 0);
          } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
          }
          const bf16x2* bp = j.b + q * P * NR;
          for (idx t = 0; t < steps; ++t) {
            const bf16x2* bt = t < full ? bp + t * KP * NR : tails + q * KP * NR;
            _tile_loadd(4, a + t * 32 * KP, KP * 4);
            _tile_loadd(5, a + (t * 32 + 16) * KP, KP * 4);
            _tile_loadd(6, bt, NR * 4);
            _tile_loadd(7, bt + 16, NR * 4);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
          }
          _tile_stored(0, dst, ld * 4);
          _tile_stored(1, dst + 16, ld * 4);
          _tile_stored(2, dst + 16 * ld, ld * 4);
          _tile_stored(3, dst + 16 * ld + 16, ld * 4);
          if (!whole)
            for (int i = 0; i < m; ++i) std::copy(part + i * NR, part + i * NR + nc, cb + i * j.N);
        }
      }
    _tile_release();
  }
};

// Whether the kernel may use the tile registers: the CPU has them and Linux grants this process their state.
bool amx_permitted() {
  static const bool ok = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                         syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
  return ok;
}
#endif

#ifdef FASTMLP_BF16_X86
// Whether no sum of a product can fall below FLT_MIN, so that the kernels need not flush. Every value
// of a bfloat16 half with biased exponent e is a multiple of 2^(e - 134), so every product of a word
// of a and one of b, and (by induction, rounding to nearest keeps multiples of a power of two above
// the result's ulp) every sum of them, is a multiple of q = 2^(ea + eb - 268) over the smallest
// exponents ea, eb of nonzero finite halves: a nonzero multiple is >= q, and q >= FLT_MIN = 2^-126
// when ea + eb >= 142. Zeros, infinities and NaNs never make a denormal.
AVX2 bool flush_free(const bf16x2* a, idx rs, idx cs, idx M, idx P, const bf16x2* b, idx b_words) {
  int ma = 255;
  if ((cs == 1 && rs == P) || (rs == 1 && cs == M)) ma = min_exponent(a, M * P);  // one block of words
  else
    for (idx i = 0; i < M; ++i)
      for (idx p = 0; p < P; ++p) ma = std::min(ma, min_exponent(a + i * rs + p * cs, 1));
  return ma == 255 || ma + min_exponent(b, b_words) >= 140;  // (ea - 1) + (eb - 1) >= 140
}
#endif

// Multiply-adds below which another thread costs more than it brings (as gemm.cpp).
constexpr idx kWorkPerThread = idx(1) << 20;

}  // namespace

bool bf16_isa_available(Bf16Isa isa) {
#ifdef FASTMLP_BF16_X86
  if (isa == Bf16Isa::Amx) return bf16_isa_available(Bf16Isa::Avx512Bf16) && amx_permitted();  // (its conversions)
  if (isa == Bf16Isa::Avx512Bf16)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  if (isa == Bf16Isa::Avx512F) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2");  // (flush_free)
  if (isa == Bf16Isa::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (isa != Bf16Isa::Auto && isa != Bf16Isa::Emulation) return false;
#endif
  return true;
}

constexpr const char* kIsaNames[] = {"auto", "amx", "avx512bf16", "avx512f", "avx2", "emulation"};  // enum order
constexpr int kIsas = int(sizeof(kIsaNames) / sizeof(kIsaNames[0]));

bool bf16_isa_named(const std::string& name, Bf16Isa& isa) {
  for (int i = 0; i < kIsas; ++i)
    if (name == kIsaNames[i]) return isa = static_cast<Bf16Isa>(i), true;
  return false;
}
const char* bf16_isa_name(Bf16Isa isa) { return kIsaNames[static_cast<int>(isa)]; }
std::string bf16_isa_names() {
  std::string s;
  for (int i = 0; i < kIsas; ++i) s += (i == 0 ? "'" : i == kIsas - 1 ? " or '" : ", '") + std::string(kIsaNames[i]) + "'";
  return s;
}

Bf16Isa bf16_resolve(Bf16Isa isa) {
  if (isa == Bf16Isa::Auto) {
    // FASTMLP_BF16_ISA: the canonical order's bits on an AMX machine (avx512bf16), or a slower twin
    static const std::string env = [] {
      const char* e = std::getenv("FASTMLP_BF16_ISA");
      return std::string(e ? e : "");
    }();
    Bf16Isa chosen = Bf16Isa::Auto;
    if (!env.empty() && !bf16_isa_named(env, chosen))
      throw value_error("FASTMLP_BF16_ISA must be " + bf16_isa_names() + ", got '" + env + "'");
    if (chosen != Bf16Isa::Auto && !bf16_isa_available(chosen))
      throw value_error("FASTMLP_BF16_ISA='" + env + "', but this CPU cannot run that bfloat16 kernel");
    isa = chosen != Bf16Isa::Auto                    ? chosen
          : bf16_isa_available(Bf16Isa::Amx)        ? Bf16Isa::Amx
          : bf16_isa_available(Bf16Isa::Avx512Bf16) ? Bf16Isa::Avx512Bf16
          : bf16_isa_available(Bf16Isa::Avx512F)    ? Bf16Isa::Avx512F
          : bf16_isa_available(Bf16Isa::Avx2)       ? Bf16Isa::Avx2
                                                    : Bf16Isa::Emulation;
  }
  if (!bf16_isa_available(isa)) throw value_error("this CPU cannot run the requested bfloat16 kernel");
  return isa;
}

// The conversions' path: AMX's operands come from the AVX512_BF16 conversions.
Bf16Isa conversion_path(Bf16Isa isa) {
  isa = bf16_resolve(isa);
  return isa == Bf16Isa::Amx ? Bf16Isa::Avx512Bf16 : isa;
}

// Items [0, n) of f(i0, i1) split over up to `threads` threads, each with at least `grain` floats of
// `per` floats an item.
template <class F>
void split_items(int threads, idx n, idx per, F f) {
  constexpr idx kGrain = 32 * 1024;
  const idx nt = std::max<idx>(1, std::min<idx>({threads, n, n * per / kGrain}));
  struct Ctx { F* f; idx n, nt; } ctx{&f, n, nt};
  parallel_for(static_cast<int>(nt), nt, [](void* p, idx t) {
    const Ctx& c = *static_cast<const Ctx*>(p);
    (*c.f)(c.n * t / c.nt, c.n * (t + 1) / c.nt);
  }, &ctx);
}

void bf16_rows(const float* src, idx rows, idx cols, bf16x2* dst, Bf16Isa isa, int threads) {
  isa = conversion_path(isa);
  const idx P = bf16_pairs(cols);
  split_items(threads, rows, cols, [&](idx r0, idx r1) {
#ifdef FASTMLP_BF16_X86
    if (isa == Bf16Isa::Avx512Bf16) return rows_avx(src + r0 * cols, r1 - r0, cols, dst + r0 * P);
    if (isa == Bf16Isa::Avx2) return rows_avx2(src + r0 * cols, r1 - r0, cols, dst + r0 * P);
#endif
    rows_plain(src + r0 * cols, r1 - r0, cols, dst + r0 * P);
  });
}

void bf16_pairs(const float* src, idx rows, idx cols, idx width, bf16x2* dst, Bf16Isa isa, int threads, idx stride) {
  isa = conversion_path(isa);
  const idx P = bf16_pairs(rows), nq = width ? (cols + width - 1) / width : 0;
  // rows [0, n) of s (row stride cols), its columns [c0, c1) as panels from d on, on this CPU's path
  auto convert = [&](const float* s, idx n, bf16x2* d, idx c0, idx c1) {
#ifdef FASTMLP_BF16_X86
    if (isa == Bf16Isa::Avx512Bf16) return pairs_avx(s, n, cols, width, d, c0, c1);
    if (isa == Bf16Isa::Avx2) return pairs_avx2(s, n, cols, width, d, c0, c1);
#endif
    pairs_plain(s, n, cols, width, d, c0, c1);
  };
  if (stride > 0 && stride != P * width && width < cols) {  // panel by panel, each at its own place
    for (idx q = 0; q < nq; ++q) convert(src, rows, dst + q * stride, q * width, std::min(cols, (q + 1) * width));
    return;
  }
  if (nq == 1 && width == cols) {  // one panel: split its pairs (2 rows of src each)
    split_items(threads, P, 2 * cols, [&](idx p0, idx p1) {
      convert(src + 2 * p0 * cols, std::min(rows, 2 * p1) - 2 * p0, dst + p0 * width, 0, cols);
    });
    return;
  }
  // panels [q0, q1): columns [q0 width, q1 width), the block through a strided view of src
  split_items(threads, nq, rows * width, [&](idx q0, idx q1) {
    convert(src, rows, dst + q0 * P * width, q0 * width, std::min(cols, q1 * width));
  });
}

void bf16_panels_of_rows(const float* src, idx rows, idx cols, bf16x2* dst, Bf16Isa isa, int threads) {
  isa = conversion_path(isa);
  const idx P = bf16_pairs(cols);
  split_items(threads, bf16_panels(rows), NR * cols, [&](idx q0, idx q1) {
    const idx r0 = q0 * NR, r1 = std::min(rows, q1 * NR);
#ifdef FASTMLP_BF16_X86
    if (isa == Bf16Isa::Avx512Bf16) return panels_of_rows_avx(src + r0 * cols, r1 - r0, cols, dst + q0 * P * NR);
    if (isa == Bf16Isa::Avx2) return panels_of_rows_avx2(src + r0 * cols, r1 - r0, cols, dst + q0 * P * NR);
#endif
    panels_of_rows_plain(src + r0 * cols, r1 - r0, cols, dst + q0 * P * NR);
  });
}

void gemm_bf16(const bf16x2* a, idx rs, idx cs, const bf16x2* b, const float* bias, float* c, idx M, idx N, idx k,
               bool accumulate, int threads, Bf16Isa isa) {
  isa = bf16_resolve(isa);
  ChunkFn fn = &run_chunk<Blocked<Emulation>>;
  int mr = Emulation::MR;
#ifdef FASTMLP_BF16_X86
  if (isa == Bf16Isa::Amx) fn = &run_chunk<Amx>, mr = Amx::MR;
  if (isa == Bf16Isa::Avx512Bf16) fn = &run_chunk<Blocked<Avx512Bf16>>, mr = Avx512Bf16::MR;
  if (isa == Bf16Isa::Avx512F || isa == Bf16Isa::Avx2) {  // the flushing only where a sum can be denormal
    const bool exact = flush_free(a, rs, cs, M, bf16_pairs(k), b, bf16_panel_words(k, N));
    if (isa == Bf16Isa::Avx512F) {
      fn = exact ? &run_chunk<Blocked<Avx512F<false>>> : &run_chunk<Blocked<Avx512F<true>>>;
      mr = Avx512F<false>::MR;
    } else {
      fn = exact ? &run_chunk<Blocked<Avx2<false>>> : &run_chunk<Blocked<Avx2<true>>>;
      mr = Avx2<false>::MR;
    }
  }
#endif
  if (M <= 0 || N <= 0) return;
  const double work = double(M) * double(N) * double(std::max<idx>(k, 1));
  const idx nq = bf16_panels(N), nb = (M + mr - 1) / mr;
  // Units of row blocks (every panel) or of panels (every row). AMX: of rows, unless there are too few
  // for the threads (it packs a block of a's rows once per unit it is in: units of panels pack it again
  // in each, measured 1.4-2.8x slower on fit's dw shapes); the others: of panels where there are enough
  const bool by_panels = isa == Bf16Isa::Amx ? threads > 1 && nb < 2 * idx(threads) && nq >= 2
                                             : nq >= std::min<idx>(threads, 2) && nq >= nb / 4;
  const idx most = by_panels ? nq : nb;
  const idx nt = std::max<idx>(1, static_cast<idx>(std::min({work / double(kWorkPerThread), double(threads), double(most)})));
  const idx per_unit = (most + 4 * nt - 1) / (4 * nt);  // about 4 units a thread
  Job job{a, b, rs, cs, bias, c, M, N, bf16_pairs(k), accumulate, by_panels, (most + per_unit - 1) / per_unit, per_unit};
  static std::atomic<std::uint64_t> calls{0};
  job.call = ++calls;
  parallel_for(static_cast<int>(nt), nt, fn, &job);
}

}  // namespace fastmlp
