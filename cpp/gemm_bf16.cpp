#include "gemm_bf16.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTMLP_BF16_X86 1
#define AVX512BF16 __attribute__((target("avx512f,avx512bf16")))
#endif

namespace fastmlp {

namespace {

// ---------------------------------------------------------------- emulation twin
// VDPBF16PS's arithmetic on one lane: denormal inputs read as zero, a denormal result
// flushed to a zero of its sign
inline float daz(float v) { return std::fabs(v) < FLT_MIN ? std::copysign(0.0f, v) : v; }
inline float dp_step(bf16 a, bf16 b, float s) { return daz(std::fma(daz(from_bf16(a)), daz(from_bf16(b)), daz(s))); }

// One output element in the canonical order (gemm_bf16.h); a and b are kp = bf16_stride(k) long.
float dot_emulated(const bf16* a, const bf16* b, idx kp) {
  float s[16] = {};
  for (idx k0 = 0; k0 < kp; k0 += 32)
    for (int l = 0; l < 16; ++l) {
      s[l] = dp_step(a[k0 + 2 * l + 1], b[k0 + 2 * l + 1], s[l]);
      s[l] = dp_step(a[k0 + 2 * l], b[k0 + 2 * l], s[l]);
    }
  for (int h = 8; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) s[l] = s[l] + s[l + h];
  return s[0];
}

struct Emulation {
  static constexpr int MR = 1, NR = 1, NR1 = 1;
  // ar: M row pointers of a, br: N row pointers of b; res is (M, N).
  template <int M, int N>
  static void block(const bf16* const* ar, const bf16* const* br, idx kp, float* res) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) res[i * N + j] = dot_emulated(ar[i], br[j], kp);
  }
};

#ifdef FASTMLP_BF16_X86
// ---------------------------------------------------------------- AVX512_BF16
// One zmm accumulator per (row, out) pair; each VDPBF16PS adds 32 products.
// The lane tree (h = 8, 4, 2, 1), per accumulator. GCC 12's cast and extract
// intrinsics start from undefined values, which it then reports as used
// uninitialised (a false positive, as in gemm.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
AVX512BF16 inline float tree16(__m512 a) {
  const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(a),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));  // + 8
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));                    // + 4
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));                                                            // + 2
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));                                           // + 1
}
#pragma GCC diagnostic pop

struct Avx512Bf16 {
  static constexpr int MR = 6, NR = 4, NR1 = 16;  // 24 or 16 accumulators
  template <int M, int N>
  AVX512BF16 static void block(const bf16* const* ar, const bf16* const* br, idx kp, float* res) {
    __m512 acc[M * N];
    for (int s = 0; s < M * N; ++s) acc[s] = _mm512_setzero_ps();
    for (idx k = 0; k < kp; k += 32) {
      __m512bh av[M];
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) av[i] = (__m512bh)_mm512_loadu_si512(ar[i] + k);
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        const __m512bh bv = (__m512bh)_mm512_loadu_si512(br[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < M; ++i) acc[i * N + j] = _mm512_dpbf16_ps(acc[i * N + j], av[i], bv);
      }
    }
    for (int s = 0; s < M * N; ++s) res[s] = tree16(acc[s]);
  }
};
#endif

// ---------------------------------------------------------------- the blocked loop
// c rows [r0, r1) of c (M, N) = a (M, kp) b^T (b is (N, kp)) (+ bias), or += when accumulate
template <class K>
struct Driver {
  template <int MB, int NB>
  static void blocks(const bf16* a, const bf16* b, const float* bias, float* c, idx r, idx jp, idx je, idx kp,
                     idx N, bool accumulate) {
    const bf16* ar[MB];
    for (int i = 0; i < MB; ++i) ar[i] = a + (r + i) * kp;
    for (idx j0 = jp; j0 < je; j0 += NB) {
      const bf16* br[NB];  // past the panel's end: repeat its last row, whose result is not stored
      for (int j = 0; j < NB; ++j) br[j] = b + std::min(j0 + j, je - 1) * kp;
      float res[MB * NB];  // (MB, NB)
      K::template block<MB, NB>(ar, br, kp, res);
      const int nj = static_cast<int>(std::min<idx>(NB, je - j0));
      for (int i = 0; i < MB; ++i) {
        float* cr = c + (r + i) * N + j0;
        if (accumulate)
          for (int j = 0; j < nj; ++j) cr[j] += res[i * NB + j];
        else if (bias)
          for (int j = 0; j < nj; ++j) cr[j] = res[i * NB + j] + bias[j0 + j];
        else
          for (int j = 0; j < nj; ++j) cr[j] = res[i * NB + j];
      }
    }
  }

  static void rows(const bf16* a, const bf16* b, const float* bias, float* c, idx r0, idx r1, idx kp, idx N,
                   bool accumulate) {
    // a panel of b rows that stays in L2 while every row block of a (in L1) meets it
    constexpr idx kPanelBytes = 256 * 1024;
    const idx per = std::max<idx>(1, kPanelBytes / std::max<idx>(1, kp * 2));
    const idx nc = std::max<idx>(K::NR * K::NR1, per / (K::NR * K::NR1) * (K::NR * K::NR1));
    for (idx jp = 0; jp < N; jp += nc) {
      const idx je = std::min(N, jp + nc);
      idx r = r0;
      for (; r + K::MR <= r1; r += K::MR) blocks<K::MR, K::NR>(a, b, bias, c, r, jp, je, kp, N, accumulate);
      for (; r < r1; ++r) blocks<1, K::NR1>(a, b, bias, c, r, jp, je, kp, N, accumulate);
    }
  }
};

using RowsFn = void (*)(const bf16*, const bf16*, const float*, float*, idx, idx, idx, idx, bool);

struct Job {
  RowsFn fn;
  const bf16 *a, *b;
  const float* bias;
  float* c;
  idx M, N, kp, chunks;
  bool accumulate;
  static void run(void* p, idx t) {
    const Job* j = static_cast<const Job*>(p);
    j->fn(j->a, j->b, j->bias, j->c, j->M * t / j->chunks, j->M * (t + 1) / j->chunks, j->kp, j->N, j->accumulate);
  }
};

// Multiply-adds below which another thread costs more than it brings (as gemm.cpp).
constexpr idx kWorkPerThread = idx(1) << 20;

}  // namespace

bool bf16_isa_available(Bf16Isa isa) {
#ifdef FASTMLP_BF16_X86
  if (isa == Bf16Isa::Avx512Bf16) return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  if (isa == Bf16Isa::Avx512Bf16) return false;
#endif
  return true;
}

FASTMLP_SIMD void convert_bf16(const float* src, bf16* dst, idx rows, idx cols) {
  const idx kp = bf16_stride(cols);
  for (idx r = 0; r < rows; ++r) {
    const float* s = src + r * cols;
    bf16* d = dst + r * kp;
    for (idx k = 0; k < cols; ++k) d[k] = to_bf16(s[k]);
    for (idx k = cols; k < kp; ++k) d[k] = 0;
  }
}

void convert_bf16_transposed(const float* src, bf16* dst, idx rows, idx cols) {
  const idx rp = bf16_stride(rows);
  constexpr idx T = 32;  // tiles of T x T, so that both sides stay in cache
  for (idx r0 = 0; r0 < rows; r0 += T)
    for (idx c0 = 0; c0 < cols; c0 += T)
      for (idx c = c0; c < std::min(cols, c0 + T); ++c)
        for (idx r = r0; r < std::min(rows, r0 + T); ++r) dst[c * rp + r] = to_bf16(src[r * cols + c]);
  for (idx c = 0; c < cols; ++c)
    for (idx r = rows; r < rp; ++r) dst[c * rp + r] = 0;
}

void gemm_bf16(const bf16* a, const bf16* b, const float* bias, float* c, idx M, idx N, idx k, bool accumulate,
               int threads, Bf16Isa isa) {
  if (isa == Bf16Isa::Auto) isa = bf16_isa_available(Bf16Isa::Avx512Bf16) ? Bf16Isa::Avx512Bf16 : Bf16Isa::Emulation;
  if (!bf16_isa_available(isa)) throw value_error("this CPU cannot run the requested bfloat16 kernel");
  RowsFn fn = &Driver<Emulation>::rows;
#ifdef FASTMLP_BF16_X86
  if (isa == Bf16Isa::Avx512Bf16) fn = &Driver<Avx512Bf16>::rows;
#endif
  if (M <= 0 || N <= 0) return;
  const double work = double(M) * double(N) * double(std::max<idx>(k, 1));
  const idx nt = std::max<idx>(1, static_cast<idx>(std::min({work / double(kWorkPerThread), double(threads), double(M)})));
  Job job{fn, a, b, bias, c, M, N, bf16_stride(k), nt, accumulate};
  parallel_for(static_cast<int>(nt), nt, &Job::run, &job);
}

}  // namespace fastmlp
