// Element-wise activations and the row-wise softmax, as PyTorch defines them.
#pragma once
#include "common.h"

namespace fastmlp {

enum class Act { Identity, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax };

// x is (B, C), y is (B, C); param is LeakyReLU's negative_slope.
template <class T>
void activation_forward(Act a, const T* x, T* y, idx B, idx C, double param);

// dy, x (layer input), y (layer output) and dx are (B, C); dx is overwritten
// with dL/dx (x and dx, or y and dx, may alias).
template <class T>
void activation_backward(Act a, const T* dy, const T* x, const T* y, T* dx, idx B, idx C,
                         double param);

// Fused epilogue of a Linear layer: pre (B, C) += b (C) (if b), then
// y (B, C) = f(pre). y may be pre itself (in place).
template <class T>
void bias_activation_forward(Act a, T* pre, const T* b, T* y, idx B, idx C, double param);

// Fused backward of activation + bias: dx (B, C) = dL/d(pre), and the bias
// gradient db (C) (+)= column sums of dx (overwritten when accumulate is false).
template <class T>
void activation_bias_backward(Act a, const T* dy, const T* x, const T* y, T* dx, T* db, idx B, idx C,
                              double param, bool accumulate);

}  // namespace fastmlp
