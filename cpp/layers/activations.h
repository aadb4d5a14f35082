// Element-wise activations and the row-wise softmax, as PyTorch defines them:
// one functor per activation (fwd and bwd side by side) in activations.cpp,
// each registered as a layer that can also finish a Linear's product.
#pragma once
#include "common.h"

namespace fastmlp {

// y (B, C) += b (C) on every row (a Linear's bias when no activation follows).
template <class T>
void bias_identity_forward(T* y, const T* b, idx B, idx C);

}  // namespace fastmlp
