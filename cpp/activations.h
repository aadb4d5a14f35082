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

}  // namespace fastmlp
