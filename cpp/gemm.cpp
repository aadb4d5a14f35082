#include "gemm.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

#include "pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTMLP_GEMM_X86 1
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))
#endif

namespace fastmlp {

namespace {

template <class T>
constexpr int kLanes = 8;  // both float and double (gemm.h)

// ---------------------------------------------------------------- reference twin
// One output element in the canonical order (gemm.h), scalar.
template <class T>
T dot_reference(const T* x, const T* w, idx in) {
  constexpr int L = kLanes<T>;
  T s[L];
  for (int l = 0; l < L; ++l) s[l] = T(0);
  for (idx k0 = 0; k0 < in; k0 += L)
    for (int l = 0; l < L && k0 + l < in; ++l) s[l] = std::fma(x[k0 + l], w[k0 + l], s[l]);
  for (int h = L / 2; h >= 1; h /= 2)
    for (int l = 0; l < h; ++l) s[l] = s[l] + s[l + h];
  return s[0];
}

template <class T>
struct Reference {
  static constexpr int MR = 1, NR = 1, NR1 = 1;
  // xr: MR row pointers of x, wr: NR row pointers of w; res is (MR, NR).
  template <int M, int N>
  static void block(const T* const* xr, const T* const* wr, idx in, T* res) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) res[i * N + j] = dot_reference(xr[i], wr[j], in);
  }
};

#ifdef FASTMLP_GEMM_X86
// ---------------------------------------------------------------- AVX2 + FMA
// A chain's 8 lanes in one ymm (float) or two (double: lanes [0, 4) and [4, 8), whose sum is the first
// level of the tree); the rest of the tree in the register, per output.
AVX2 inline float tree_rest(__m256 v) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // + 4
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));                                          // + 2
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));                         // + 1
}
AVX2 inline double tree_rest(__m256d v) {
  const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));  // + 2
  return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));                       // + 1
}
// ymm register helpers, shared by the inner-product kernel and gemm_outer.inc's AVX2 build
namespace y256 {
AVX2 inline __m256 vzero(float) { return _mm256_setzero_ps(); }
AVX2 inline __m256d vzero(double) { return _mm256_setzero_pd(); }
AVX2 inline __m256 vload(const float* p) { return _mm256_loadu_ps(p); }
AVX2 inline __m256d vload(const double* p) { return _mm256_loadu_pd(p); }
AVX2 inline void vstore(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
AVX2 inline void vstore(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
AVX2 inline __m256 vset1(float a) { return _mm256_set1_ps(a); }
AVX2 inline __m256d vset1(double a) { return _mm256_set1_pd(a); }
AVX2 inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
AVX2 inline __m256d vfma(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
AVX2 inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
AVX2 inline __m256d vadd(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
// masks: the first n elements (as vector masks, for maskload and maskstore)
struct MaskF { __m256i m; };
struct MaskD { __m256i m; };
AVX2 inline MaskF vmask(int n, float) {
  return {_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))};
}
AVX2 inline MaskD vmask(int n, double) {
  return {_mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3))};
}
AVX2 inline __m256 vloadn(MaskF m, const float* p) { return _mm256_maskload_ps(p, m.m); }
AVX2 inline __m256d vloadn(MaskD m, const double* p) { return _mm256_maskload_pd(p, m.m); }
AVX2 inline void vstoren(MaskF m, float* p, __m256 v) { _mm256_maskstore_ps(p, m.m, v); }
AVX2 inline void vstoren(MaskD m, double* p, __m256d v) { _mm256_maskstore_pd(p, m.m, v); }
}  // namespace y256

template <class T>
struct Avx2 {
  using V = decltype(y256::vzero(T()));  // __m256 or __m256d
  static constexpr int H = int(sizeof(V) / sizeof(T));  // elements per ymm
  static constexpr int NV = kLanes<T> / H;              // ymm per chain: 1 (float) or 2 (double)
  static constexpr int MR = NV == 1 ? 3 : 2, NR = NV == 1 ? 4 : 3, NR1 = 12 / NV;  // 12 ymm accumulators
  template <int M, int N>
  AVX2 static void block(const T* const* xr, const T* const* wr, idx in, T* res) {
    constexpr int A = M * N;
    V acc[NV][A];
    for (int v = 0; v < NV; ++v)
      for (int s = 0; s < A; ++s) acc[v][s] = V{};
    idx k = 0;
    for (; k + NV * H <= in; k += NV * H) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        V xv[M];
#pragma GCC unroll 16
        for (int i = 0; i < M; ++i) xv[i] = y256::vload(xr[i] + k + v * H);
#pragma GCC unroll 12
        for (int j = 0; j < N; ++j) {
          const V wv = y256::vload(wr[j] + k + v * H);
#pragma GCC unroll 16
          for (int i = 0; i < M; ++i) acc[v][i * N + j] = y256::vfma(xv[i], wv, acc[v][i * N + j]);
        }
      }
    }
    if (k < in) {  // the rest zero
      const int n = static_cast<int>(in - k);
      for (int v = 0; v < NV; ++v) {
        const auto m = y256::vmask(std::clamp(n - v * H, 0, H), T());
        for (int j = 0; j < N; ++j) {
          const V wv = y256::vloadn(m, wr[j] + k + v * H);
          for (int i = 0; i < M; ++i) acc[v][i * N + j] = y256::vfma(y256::vloadn(m, xr[i] + k + v * H), wv, acc[v][i * N + j]);
        }
      }
    }
    for (int s = 0; s < A; ++s) res[s] = tree_rest(NV == 1 ? acc[0][s] : y256::vadd(acc[0][s], acc[NV - 1][s]));
  }
};
// ---------------------------------------------------------------- AVX-512F
// One zmm accumulator per (row, out) pair holds its 16 (float) or 8 (double)
// lanes. The lane trees of 16 (float) or 8 (double) accumulators are computed
// together by shuffles that keep every addition of the canonical tree.

// GCC 12's shuffle intrinsics start from _mm512_undefined_*(), which it then
// reports as used uninitialised (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
// a[0..7], each two 8-lane chains (chain 2 s + h in 256-bit half h of a[s]) -> their 16 sums along the
// canonical tree (+4, +2, +1 within each half); element 4 c + e of the result is chain 4 e + c's sum.
AVX512 inline __m512 tree8x2(const __m512* a) {
  __m512 p[4], q[2];
  for (int i = 0; i < 4; ++i)  // + 4: 128-bit chunks 0 + 1 and 2 + 3; p[i] chunk c = chain 4 i + c
    p[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; ++i)  // + 2
    q[i] = _mm512_add_ps(_mm512_shuffle_ps(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(2, 0, 2, 0)),  // + 1
                       _mm512_shuffle_ps(q[0], q[1], _MM_SHUFFLE(3, 1, 3, 1)));
}
// acc[0..7] (8 lanes each) -> their 8 sums; element p is the sum of acc[4 (p % 2) + p / 2].
AVX512 inline __m512d tree8(const __m512d* a) {
  __m512d p[4], q[2];
  for (int i = 0; i < 4; ++i)  // + 4
    p[i] = _mm512_add_pd(_mm512_shuffle_f64x2(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f64x2(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)  // + 2
    q[i] = _mm512_add_pd(_mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f64x2(p[2 * i], p[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_pd(_mm512_unpacklo_pd(q[0], q[1]), _mm512_unpackhi_pd(q[0], q[1]));  // + 1
}

// float: one zmm per pair of outputs (j, j + 1) of a row, their 8-lane chains in its two 256-bit halves
struct Avx512Float {
  static constexpr int MR = 6, NR = 8, NR1 = 12;  // 24 zmm, or 12 ymm (Avx2's) for one row
  // 8 elements of p and of q (fewer than 8: the first n, the rest zero) as [p | q]; x's as [x | x]
  AVX512 static __m512 halves(const float* p, const float* q) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(p))),
                                               _mm256_castps_pd(_mm256_loadu_ps(q)), 1));
  }
  AVX512 static __m512 halves(const float* p, const float* q, __mmask16 m) {
    return _mm512_shuffle_f32x4(_mm512_maskz_loadu_ps(m, p), _mm512_maskz_loadu_ps(m, q), _MM_SHUFFLE(1, 0, 1, 0));
  }
  template <int M, int N>
  AVX512 static void block(const float* const* xr, const float* const* wr, idx in, float* res) {
    if constexpr (M == 1) return Avx2<float>::block<1, N>(xr, wr, in, res);  // one row: a ymm per output
    static_assert(M == 1 || N % 2 == 0, "outputs in pairs");
    constexpr int P = N / 2, A = M * P, G = (A + 7) / 8 * 8;  // accumulators, rounded up to tree8x2's groups
    __m512 acc[G];
    for (int s = 0; s < G; ++s) acc[s] = _mm512_setzero_ps();
    idx k = 0;
    for (; k + 8 <= in; k += 8) {
      __m512 xv[M];
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i)
        xv[i] = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(xr[i] + k))));
#pragma GCC unroll 16
      for (int j = 0; j < P; ++j) {
        const __m512 wv = halves(wr[2 * j] + k, wr[2 * j + 1] + k);
#pragma GCC unroll 16
        for (int i = 0; i < M; ++i) acc[i * P + j] = _mm512_fmadd_ps(xv[i], wv, acc[i * P + j]);
      }
    }
    if (k < in) {  // the tail: zero products in the missing lanes leave them unchanged
      const __mmask16 m = static_cast<__mmask16>((1u << (in - k)) - 1);
      __m512 xv[M];
      for (int i = 0; i < M; ++i) xv[i] = halves(xr[i] + k, xr[i] + k, m);
      for (int j = 0; j < P; ++j) {
        const __m512 wv = halves(wr[2 * j] + k, wr[2 * j + 1] + k, m);
        for (int i = 0; i < M; ++i) acc[i * P + j] = _mm512_fmadd_ps(xv[i], wv, acc[i * P + j]);
      }
    }
    // chain c = 2 s + h is output (i, 2 j + h) for s = i P + j: res[c]
    alignas(64) float t[16];
    for (int g = 0; g < A; g += 8) {
      _mm512_store_ps(t, tree8x2(acc + g));
      for (int p = 0; p < 16; ++p) {
        const int c = 2 * g + 4 * (p % 4) + p / 4;
        if (c < 2 * A) res[c] = t[p];
      }
    }
  }
};

struct Avx512Double {
  static constexpr int MR = 4, NR = 4, NR1 = 8;  // 16 or 8 accumulators
  template <int M, int N>
  AVX512 static void block(const double* const* xr, const double* const* wr, idx in, double* res) {
    constexpr int A = M * N, G = (A + 7) / 8 * 8;  // accumulators, rounded up to tree8's groups
    __m512d acc[G];
    for (int s = 0; s < G; ++s) acc[s] = _mm512_setzero_pd();
    idx k = 0;
    for (; k + 8 <= in; k += 8) {
      __m512d xv[M];
#pragma GCC unroll 16
      for (int i = 0; i < M; ++i) xv[i] = _mm512_loadu_pd(xr[i] + k);
#pragma GCC unroll 16
      for (int j = 0; j < N; ++j) {
        const __m512d wv = _mm512_loadu_pd(wr[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < M; ++i) acc[i * N + j] = _mm512_fmadd_pd(xv[i], wv, acc[i * N + j]);
      }
    }
    if (k < in) {
      const __mmask8 m = static_cast<__mmask8>((1u << (in - k)) - 1);
      __m512d xv[M];
      for (int i = 0; i < M; ++i) xv[i] = _mm512_maskz_loadu_pd(m, xr[i] + k);
      for (int j = 0; j < N; ++j) {
        const __m512d wv = _mm512_maskz_loadu_pd(m, wr[j] + k);
        for (int i = 0; i < M; ++i) acc[i * N + j] = _mm512_fmadd_pd(xv[i], wv, acc[i * N + j]);
      }
    }
    alignas(64) double t[8];
    for (int g = 0; g < A; g += 8) {
      _mm512_store_pd(t, tree8(acc + g));
      for (int p = 0; p < 8; ++p) {
        const int s = g + 4 * (p % 2) + p / 2;
        if (s < A) res[s] = t[p];
      }
    }
  }
};

#pragma GCC diagnostic pop

#endif

// ---------------------------------------------------------------- the blocked loop
// y rows [r0, r1) of y (B, out) = x (B, in) w^T (w is (out, in)) + b.
template <class T, class K>
struct Driver {
  // MR x NR outputs y[r .. r + M)[j0 .. je) from rows r.. of x and the w rows [jp, je) of a panel
  template <int M, int N>
  static void blocks(const T* x, const T* w, const T* b, T* y, idx r, idx jp, idx je, idx in, idx out) {
    const T* xr[M];
    for (int i = 0; i < M; ++i) xr[i] = x + (r + i) * in;
    for (idx j0 = jp; j0 < je; j0 += N) {
      if constexpr (N % 4 == 0) {  // a last block half empty or more: blocks half as wide
        if (je - j0 <= N / 2) return blocks<M, N / 2>(x, w, b, y, r, j0, je, in, out);
      }
      const T* wr[N];  // past the panel's end: repeat its last row, whose result is not stored
      for (int j = 0; j < N; ++j) wr[j] = w + std::min(j0 + j, je - 1) * in;
      T res[M * N];  // (M, N)
      K::template block<M, N>(xr, wr, in, res);
      const int nj = static_cast<int>(std::min<idx>(N, je - j0));
      for (int i = 0; i < M; ++i) {
        T* yr = y + (r + i) * out + j0;
        if (b)
          for (int j = 0; j < nj; ++j) yr[j] = res[i * N + j] + b[j0 + j];
        else
          for (int j = 0; j < nj; ++j) yr[j] = res[i * N + j];
      }
    }
  }

  // rows [r, r1) (fewer than M + 1 of them) for the w rows [jp, je)
  template <int M>
  static void rest(const T* x, const T* w, const T* b, T* y, idx r, idx r1, idx jp, idx je, idx in, idx out) {
    if constexpr (M <= 1) {
      if (r < r1) blocks<1, K::NR1>(x, w, b, y, r, jp, je, in, out);
    } else {
      if (r1 - r == M) return blocks<M, K::NR>(x, w, b, y, r, jp, je, in, out);
      rest<M - 1>(x, w, b, y, r, r1, jp, je, in, out);
    }
  }

  // y rows [r0, r1), columns [c0, c1)
  static void rows(const T* x, const T* w, const T* b, T* y, idx r0, idx r1, idx c0, idx c1, idx in, idx out,
                   FiniteProbe* probe) {
    if (probe) probe->saw(all_finite(x + r0 * in, (r1 - r0) * in));
    // a panel of w rows that stays in L2 while every row block of x (in L1) meets it
    constexpr idx kPanelBytes = 256 * 1024;
    const idx per = std::max<idx>(1, kPanelBytes / std::max<idx>(1, in * static_cast<idx>(sizeof(T))));
    const idx nc = std::max<idx>(K::NR * K::NR1, per / (K::NR * K::NR1) * (K::NR * K::NR1));
    for (idx jp = c0; jp < c1; jp += nc) {
      const idx je = std::min(c1, jp + nc);
      idx r = r0;
      for (; r + K::MR <= r1; r += K::MR) blocks<K::MR, K::NR>(x, w, b, y, r, jp, je, in, out);
      // the last r1 - r < MR rows together, so that each w row loaded serves all of them
      rest<K::MR - 1>(x, w, b, y, r, r1, jp, je, in, out);
    }
  }
};

#ifdef FASTMLP_GEMM_X86
// A growable per-thread buffer (grown when a wider layer first arrives, then reused).
template <class T>
struct Panels {
  T* p = nullptr;
  idx n = 0;
  ~Panels() { std::free(p); }
  T* get(idx want) {
    if (want > n) {
      std::free(p);
      p = nullptr, n = 0;
      p = static_cast<T*>(std::aligned_alloc(64, static_cast<std::size_t>((want * idx(sizeof(T)) + 63) / 64 * 64)));
      if (!p) throw std::bad_alloc();
      n = want;
    }
    return p;
  }
};

// ---------------------------------------------------------------- AVX-512F outer products (many rows)
// gemm_outer.inc on zmm registers
namespace z512 {
constexpr int kOuterMR = 12;
AVX512 inline __m512 vzero(float) { return _mm512_setzero_ps(); }
AVX512 inline __m512d vzero(double) { return _mm512_setzero_pd(); }
AVX512 inline __m512 vload(const float* p) { return _mm512_loadu_ps(p); }
AVX512 inline __m512d vload(const double* p) { return _mm512_loadu_pd(p); }
AVX512 inline void vstore(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
AVX512 inline void vstore(double* p, __m512d v) { _mm512_storeu_pd(p, v); }
AVX512 inline __m512 vset1(float a) { return _mm512_set1_ps(a); }
AVX512 inline __m512d vset1(double a) { return _mm512_set1_pd(a); }
AVX512 inline __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
AVX512 inline __m512d vfma(__m512d a, __m512d b, __m512d c) { return _mm512_fmadd_pd(a, b, c); }
AVX512 inline __m512 vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
AVX512 inline __m512d vadd(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
AVX512 inline __mmask16 vmask(int n, float) { return static_cast<__mmask16>((1u << n) - 1); }
AVX512 inline __mmask8 vmask(int n, double) { return static_cast<__mmask8>((1u << n) - 1); }
AVX512 inline __m512 vloadn(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
AVX512 inline __m512d vloadn(__mmask8 m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
AVX512 inline void vstoren(__mmask16 m, float* p, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
AVX512 inline void vstoren(__mmask8 m, double* p, __m512d v) { _mm512_mask_storeu_pd(p, m, v); }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// r[i] = row i of a 16 x 16 (float) block -> r[c] = its column c
AVX512 inline void transpose(__m512* r) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // t[2i] chunk q: r2i[4q], r2i+1[4q], r2i[4q+1], r2i+1[4q+1]; t[2i+1]: the same at 4q+2
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // u[4g + m] chunk q: rows 4g .. 4g+3 at column 4q + m
    const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]),
                  c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int m = 0; m < 4; ++m) {  // 128-bit chunks: (g0 q0, g0 q2, g1 q0, g1 q2) ..., then the four groups
    const __m512 e01 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x88), o01 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xdd),
                 e23 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x88),
                 o23 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xdd);
    r[m] = _mm512_shuffle_f32x4(e01, e23, 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(e01, e23, 0xdd);
    r[4 + m] = _mm512_shuffle_f32x4(o01, o23, 0x88);
    r[12 + m] = _mm512_shuffle_f32x4(o01, o23, 0xdd);
  }
}
// r[i] = row i of an 8 x 8 (double) block -> r[c] = its column c
AVX512 inline void transpose(__m512d* r) {
  __m512d t[8];
  for (int i = 0; i < 4; ++i) {  // t[2g + m] chunk q: rows 2g, 2g+1 at column 2q + m
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  for (int m = 0; m < 2; ++m) {
    const __m512d e01 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0x88), o01 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0xdd),
                  e23 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0x88),
                  o23 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0xdd);
    r[m] = _mm512_shuffle_f64x2(e01, e23, 0x88);
    r[4 + m] = _mm512_shuffle_f64x2(e01, e23, 0xdd);
    r[2 + m] = _mm512_shuffle_f64x2(o01, o23, 0x88);
    r[6 + m] = _mm512_shuffle_f64x2(o01, o23, 0xdd);
  }
}
#pragma GCC diagnostic pop

#define OUTER_TARGET AVX512
#include "gemm_outer.inc"
#undef OUTER_TARGET
}  // namespace z512

// ---------------------------------------------------------------- AVX2 outer products (many rows)
// gemm_outer.inc on ymm registers
namespace y256 {
constexpr int kOuterMR = 6;  // 12 accumulators, 2 w^T loads and a broadcast of the 16 ymm
// r[i] = row i of an 8 x 8 (float) block -> r[c] = its column c
AVX2 inline void transpose(__m256* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {  // t[2i]: r2i[0] r2i+1[0] r2i[1] r2i+1[1] | the same at 4, 5
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 2; ++g) {  // u[4g + m]: rows 4g .. 4g+3 at column m | m + 4
    u[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x20);
    r[4 + m] = _mm256_permute2f128_ps(u[m], u[4 + m], 0x31);
  }
}
// r[i] = row i of a 4 x 4 (double) block -> r[c] = its column c
AVX2 inline void transpose(__m256d* r) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]),
                t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

#define OUTER_TARGET AVX2
#include "gemm_outer.inc"
#undef OUTER_TARGET
}  // namespace y256

// Rows and columns below which the inner-product kernels are faster: packing w costs about what ~40 rows
// of the outer products gain, and a narrow layer leaves most of a 32-column tile empty (bench/gemm_speed.py)
constexpr idx kOuterRows = 48, kOuterCols = 64;

template <class T>
void rows_avx512(const T* x, const T* w, const T* b, T* y, idx r0, idx r1, idx c0, idx c1, idx in, idx out,
                 FiniteProbe* probe) {
  if (r1 - r0 >= kOuterRows && c1 - c0 >= kOuterCols)
    return z512::Outer<T>::rows(x, w, b, y, r0, r1, c0, c1, in, out, probe);
  Driver<T, std::conditional_t<sizeof(T) == 4, Avx512Float, Avx512Double>>::rows(x, w, b, y, r0, r1, c0, c1, in,
                                                                                   out, probe);
}
template <class T>
void rows_avx2(const T* x, const T* w, const T* b, T* y, idx r0, idx r1, idx c0, idx c1, idx in, idx out,
               FiniteProbe* probe) {
  if (r1 - r0 >= kOuterRows && c1 - c0 >= kOuterCols)
    return y256::Outer<T>::rows(x, w, b, y, r0, r1, c0, c1, in, out, probe);
  Driver<T, Avx2<T>>::rows(x, w, b, y, r0, r1, c0, c1, in, out, probe);
}
#endif

template <class T>
using RowsFn = void (*)(const T*, const T*, const T*, T*, idx, idx, idx, idx, idx, idx, FiniteProbe*);

template <class T>
RowsFn<T> rows_fn(GemmIsa isa) {  // isa: resolved (not Auto)
  if (!gemm_isa_available(isa)) throw value_error("this CPU cannot run the requested product kernel");
#ifdef FASTMLP_GEMM_X86
  if (isa == GemmIsa::Avx512)
    return &rows_avx512<T>;
  if (isa == GemmIsa::Avx2) return &rows_avx2<T>;
#endif
  return &Driver<T, Reference<T>>::rows;
}

// Many rows on several threads, the outer products' way (O: an ISA's Outer<T>): w^T packed once into
// panels that every thread reads (the packing shared out by panels), then pieces of a few row tiles taken
// by whichever thread is free, so that a thread the OS deschedules holds up no one: the others take its
// pieces. For products whose w^T panels fit one packing (O::panel_cols); the bits are every path's.
template <class O, class T>
void shared_rows(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, int threads,
                 FiniteProbe* probe, const T* wp) {
  struct Ctx {
    const T *x, *w, *b;
    T *y, *bp;  // bp: the w^T panels, (in, out rounded up to NR)
    idx B, in, out, panels, pack_parts, piece;
    FiniteProbe* probe;
    static void pack(void* p, idx c) {  // panels [q0, q1)
      const auto* j = static_cast<const Ctx*>(p);
      const idx q0 = j->panels * c / j->pack_parts, q1 = j->panels * (c + 1) / j->pack_parts;
      const idx c0 = q0 * O::NR, c1 = std::min(j->out, q1 * O::NR);
      if (c1 > c0) O::pack_w(j->w, j->in, c0, c1 - c0, j->bp + c0 * j->in);
    }
    static void rows(void* p, idx c) {  // rows [c piece, (c + 1) piece)
      const auto* j = static_cast<const Ctx*>(p);
      O::rows_packed(j->x, j->bp, j->b, j->y, c * j->piece, std::min(j->B, (c + 1) * j->piece), 0, j->out, j->in,
                     j->out, j->probe);
    }
  };
  thread_local Panels<T> shared;
  const idx panels = (out + O::NR - 1) / O::NR;
  const idx per = (B + 4 * idx(threads) - 1) / (4 * idx(threads));  // about four pieces per thread
  Ctx ctx{x, w, b, y, wp ? const_cast<T*>(wp) : shared.get(panels * O::NR * std::max<idx>(in, 1)), B, in, out,
          panels, std::min<idx>(panels, 2 * idx(threads)), (per + O::MR - 1) / O::MR * O::MR, probe};
  if (!wp) parallel_take(threads, ctx.pack_parts, &Ctx::pack, &ctx);
  parallel_take(threads, (B + ctx.piece - 1) / ctx.piece, &Ctx::rows, &ctx);
}

// w's panels for the whole of out, packed apart by up to `threads` threads (as shared_rows does)
template <class O, class T>
void pack_all(const T* w, idx in, idx out, T* wp, int threads) {
  struct Ctx {
    const T* w;
    T* wp;
    idx in, out, panels, parts;
    static void run(void* p, idx c) {
      const auto* j = static_cast<const Ctx*>(p);
      const idx q0 = j->panels * c / j->parts, q1 = j->panels * (c + 1) / j->parts;
      const idx c0 = q0 * O::NR, c1 = std::min(j->out, q1 * O::NR);
      if (c1 > c0) O::pack_w(j->w, j->in, c0, c1 - c0, j->wp + c0 * j->in);
    }
  };
  const idx panels = (out + O::NR - 1) / O::NR;
  Ctx ctx{w, wp, in, out, panels, std::min<idx>(panels, 2 * idx(std::max(threads, 1)))};
  parallel_take(threads, ctx.parts, &Ctx::run, &ctx);
}

template <class T>
using SharedFn = void (*)(const T*, const T*, const T*, T*, idx, idx, idx, int, FiniteProbe*, const T*);

// shared_rows for this product on isa (not Auto), or null where it does not apply
// (prepacked: w's panels packed already, whatever their size)
template <class T>
SharedFn<T> shared_fn(GemmIsa isa, idx B, idx in, idx out, bool prepacked = false) {
#ifdef FASTMLP_GEMM_X86
  if (B < kOuterRows || out < kOuterCols) return nullptr;
  if (isa == GemmIsa::Avx512 && (prepacked || out <= z512::Outer<T>::panel_cols(in)))
    return &shared_rows<z512::Outer<T>, T>;
  if (isa == GemmIsa::Avx2 && (prepacked || out <= y256::Outer<T>::panel_cols(in)))
    return &shared_rows<y256::Outer<T>, T>;
#else
  (void)isa, (void)B, (void)in, (void)out, (void)prepacked;
#endif
  return nullptr;
}

// chunk c of `chunks`: a range of rows (by_rows) or of 32-column groups, with all of the other
template <class T>
struct Job {
  static constexpr idx kCols = 32;
  RowsFn<T> fn;
  const T *x, *w, *b;
  T* y;
  idx B, in, out, chunks;
  bool by_rows;
  FiniteProbe* probe;
  static void run(void* p, idx c) {
    const Job* j = static_cast<const Job*>(p);
    if (j->by_rows)
      return j->fn(j->x, j->w, j->b, j->y, j->B * c / j->chunks, j->B * (c + 1) / j->chunks, 0, j->out, j->in, j->out,
                   j->probe);
    const idx groups = (j->out + kCols - 1) / kCols;
    const idx c0 = std::min(j->out, groups * c / j->chunks * kCols);
    const idx c1 = std::min(j->out, groups * (c + 1) / j->chunks * kCols);
    j->fn(j->x, j->w, j->b, j->y, 0, j->B, c0, c1, j->in, j->out, c == 0 ? j->probe : nullptr);  // x: once
  }
};

// Multiply-adds below which another thread costs more than it brings (a
// sleeping worker takes tens of microseconds to wake).
constexpr idx kWorkPerThread = idx(1) << 20;

}  // namespace

bool gemm_isa_available(GemmIsa isa) {
#ifdef FASTMLP_GEMM_X86
  if (isa == GemmIsa::Avx512) return __builtin_cpu_supports("avx512f");
  if (isa == GemmIsa::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  if (isa == GemmIsa::Avx512 || isa == GemmIsa::Avx2) return false;
#endif
  return true;
}

GemmIsa gemm_best_isa() {
  static const GemmIsa best = gemm_isa_available(GemmIsa::Avx512) ? GemmIsa::Avx512
                              : gemm_isa_available(GemmIsa::Avx2) ? GemmIsa::Avx2
                                                                  : GemmIsa::Reference;
  return best;
}

template <class T>
void dense_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, int threads, GemmIsa isa,
                   FiniteProbe* probe, const T* wp) {
  if (isa == GemmIsa::Auto) isa = gemm_best_isa();
  const RowsFn<T> fn = rows_fn<T>(isa);
  if (B <= 0) return;
  if (out <= 0) {  // nothing reads x
    if (probe) probe->saw(all_finite(x, B * in));
    return;
  }
  const double work = double(B) * double(out) * double(std::max<idx>(in, 1));  // multiply-adds, never overflows
  // split the wider of the two: each thread packs (or streams) only its part of w, or of x
  const bool by_rows = B >= out;
  const idx parts = by_rows ? B : (out + Job<T>::kCols - 1) / Job<T>::kCols;
  const idx nt = std::max<idx>(1, static_cast<idx>(std::min({work / double(kWorkPerThread), double(threads), double(parts)})));
  if (wp && isa == gemm_best_isa()) {  // w packed already (dense_pack): for the outer products' rows
    if (const SharedFn<T> shared = shared_fn<T>(isa, B, in, out, true))
      return shared(x, w, b, y, B, in, out, int(nt), probe, wp);
  }
  if (nt == 1) return fn(x, w, b, y, 0, B, 0, out, in, out, probe);
  if (const SharedFn<T> shared = shared_fn<T>(isa, B, in, out))
    return shared(x, w, b, y, B, in, out, int(nt), probe, nullptr);
  Job<T> job{fn, x, w, b, y, B, in, out, nt, by_rows, probe};
  parallel_for(static_cast<int>(nt), nt, &Job<T>::run, &job);
}

template <class T>
idx dense_pack_size(idx B, idx in, idx out) {
#ifdef FASTMLP_GEMM_X86
  if (B < kOuterRows || out < kOuterCols) return 0;
  const GemmIsa isa = gemm_best_isa();
  const auto size = [&](idx nr) { return checked_mul(checked_mul((out + nr - 1) / nr, nr), std::max<idx>(in, 1)); };
  if (isa == GemmIsa::Avx512) return size(z512::Outer<T>::NR);
  if (isa == GemmIsa::Avx2) return size(y256::Outer<T>::NR);
#else
  (void)B, (void)in, (void)out;
#endif
  return 0;
}

template <class T>
void dense_pack(const T* w, idx in, idx out, T* wp, int threads) {
#ifdef FASTMLP_GEMM_X86
  const GemmIsa isa = gemm_best_isa();
  if (isa == GemmIsa::Avx512) return pack_all<z512::Outer<T>>(w, in, out, wp, threads);
  if (isa == GemmIsa::Avx2) return pack_all<y256::Outer<T>>(w, in, out, wp, threads);
#else
  (void)w, (void)in, (void)out, (void)wp, (void)threads;
#endif
}

template void dense_forward<float>(const float*, const float*, const float*, float*, idx, idx, idx, int, GemmIsa,
                                   FiniteProbe*, const float*);
template void dense_forward<double>(const double*, const double*, const double*, double*, idx, idx, idx, int,
                                    GemmIsa, FiniteProbe*, const double*);
template idx dense_pack_size<float>(idx, idx, idx);
template idx dense_pack_size<double>(idx, idx, idx);
template void dense_pack<float>(const float*, idx, idx, float*, int);
template void dense_pack<double>(const double*, idx, idx, double*, int);

}  // namespace fastmlp
