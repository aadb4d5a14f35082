// Batched dense layer: y = x w^T + b, PyTorch's nn.Linear.
#pragma once
#include "common.h"
#include "finite.h"

namespace fastmlp {

// x is (B, in), w is (out, in), b is (out) or null, y is (B, out).
// fixed_order: gemm.h's product (each row's bits independent of the batch and
// the threads; fastmlp's threads), else OpenBLAS's (faster for narrow inputs and in float64).
// half: products in bfloat16 (gemm_bf16.h; float32 only) with linear_bf16_scratch
// elements there (then fixed_order does not matter: gemm_bf16's rows never depend on the batch);
// forms: w's forms made already (the Linear's weight_forms: bfloat16 ones with half, else the fixed-order
// product's packed panels), or null. probe (fixed_order only): told whether x has a NaN or an infinity.
template <class T>
void linear_forward(const T* x, const T* w, const T* b, T* y, idx B, idx in, idx out, bool fixed_order,
                    std::uint16_t* half = nullptr, const std::uint32_t* forms = nullptr,
                    FiniteProbe* probe = nullptr);

// dy is (B, out), x is (B, in), w is (out, in). On OpenBLAS.
// dx is (B, in) or null (not wanted); it is overwritten.
// dw is (out, in), db is (out) or null: accumulated into (+=), or overwritten
// when accumulate is false (the same as zero_grad followed by +=).
// half: as linear_forward's (its contents are not needed: backward converts its own operands).
template <class T>
void linear_backward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* db, idx B, idx in,
                     idx out, bool accumulate, std::uint16_t* half = nullptr, const std::uint32_t* forms = nullptr);

// bfloat16 elements the products of B rows need (forward and backward share them).
idx linear_bf16_scratch(idx B, idx in, idx out);
// The words of w's bfloat16 forms (w^T's panels for the forward, w's pair panels for dx).
idx linear_bf16_weight_words(idx in, idx out);

}  // namespace fastmlp
