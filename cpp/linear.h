// Batched dense layer: y = x w^T + b, PyTorch's nn.Linear.
// The forward product is gemm.h's (fixed order, fastmlp's threads); the backward ones are OpenBLAS's.
#pragma once
#include "common.h"

namespace fastmlp {

// x is (B, in), w is (out, in), b is (out) or null, y is (B, out).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out);

// dy is (B, out), x is (B, in), w is (out, in).
// dx is (B, in) or null (not wanted); it is overwritten.
// dw is (out, in), db is (out) or null: accumulated into (+=), or overwritten
// when accumulate is false (the same as zero_grad followed by +=).
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, idx B, idx in,
                     idx out, bool accumulate);

}  // namespace fastmlp
