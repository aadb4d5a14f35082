// The forward product of a Linear, y = x w^T (+ b), computed in a fixed order
// so that each output element is a function of (its x row, its w row, in) only:
// the same bits whatever the row's position, the batch size, how rows are
// chunked or threaded, which ISA path runs, and what runs concurrently.
//
// Canonical order of y[r][j] (L = 8 lanes, float and double):
//   lane l in [0, L) accumulates the k = l, l + L, l + 2L, ... < in terms in
//   increasing k, starting from +0: s_l = fma(x[r][k], w[j][k], s_l);
//   then a fixed pairwise tree over the lanes: while L > 1, s_l = s_l + s_{l+L/2}
//   for l < L/2 and L = L/2 (8 -> 4 -> 2 -> 1);
//   then y = s_0 + b[j] if there is a bias.
// Kernels: AVX-512F and AVX2+FMA, picked at run time, and the scalar std::fma
// reference twin, which is the fallback and the tests' oracle. Few rows:
// MR x NR dot products on w as it is ((out, in) is contiguous along in),
// nothing repacked (AVX-512 float: a zmm holds the chains of two outputs, one
// row's outputs a ymm each). 48 rows and 64 columns or more: BLIS-style outer products
// (gemm_outer.inc, on zmm or ymm registers) -- each lane l is a chain of its own
// over k = l, l + L, ..., so with k packed lane by lane into panels of w^T
// (in, NR) and of x (in, MR), an MR x NR register tile (12 x 32 floats on
// AVX-512, 6 x 16 on AVX2) runs lane l's chains at once, and the L lane tiles
// are added along the same tree. Both give the same bits. (8 lanes, not 16:
// fewer lane tiles to start and add; the 16-lane order measured 15-25% slower.)
#pragma once
#include "common.h"
#include "finite.h"

namespace fastmlp {

enum class GemmIsa { Auto, Avx512, Avx2, Reference };

// Whether the CPU runs that path (Auto and Reference: always).
bool gemm_isa_available(GemmIsa isa);
// The path Auto picks on this CPU.
GemmIsa gemm_best_isa();

// x is (B, in), w is (out, in), b is (out) or null, y is (B, out); y must not
// overlap x, w or b. Rows are split over up to `threads` of fastmlp's threads
// (pool.h) when the product is large enough to gain from it. probe, if set, learns whether x has a NaN or
// an infinity (checked as x is read for the product).
// wp, if set: w's panels packed by dense_pack (for the Auto path), read instead of packing w again.
template <class T>
void dense_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, int threads,
                   GemmIsa isa = GemmIsa::Auto, FiniteProbe* probe = nullptr, const T* wp = nullptr);

// w's packed panels, prepared once for several dense_forward calls of B rows or more (a batch's chunks, a
// predict's): dense_pack_size elements of T (0: those calls would not read them), written by dense_pack
// over up to `threads` threads. w is (out, in).
template <class T>
idx dense_pack_size(idx B, idx in, idx out);
template <class T>
void dense_pack(const T* w, idx in, idx out, T* wp, int threads);

}  // namespace fastmlp
