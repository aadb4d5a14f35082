// Batched dense layer: y = x w^T + b, PyTorch's nn.Linear.
#pragma once
#include "common.h"

namespace fastmlp {

// x is (B, in), w is (out, in), b is (out) or null, y is (B, out).
// fixed_order: gemm.h's product (each row's bits independent of the batch and
// the threads; fastmlp's threads), else OpenBLAS's (faster at training sizes).
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, bool fixed_order);

// dy is (B, out), x is (B, in), w is (out, in). On OpenBLAS.
// dx is (B, in) or null (not wanted); it is overwritten.
// dw is (out, in), db is (out) or null: accumulated into (+=), or overwritten
// when accumulate is false (the same as zero_grad followed by +=).
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, idx B, idx in,
                     idx out, bool accumulate);

}  // namespace fastmlp
