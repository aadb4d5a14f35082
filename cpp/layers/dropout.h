// Inverted dropout: keep each element with probability 1 - p and scale the
// kept ones by 1 / (1 - p). The mask is a pure function of (seed, element),
// so it is reproducible and independent of threading.
#pragma once
#include <cstdint>

#include "common.h"

namespace fastmlp {

// x, y are (n); mask is (n), 1 where kept. seed identifies (model seed, layer, step); element i draws
// the number of the batch's flat index first + i (a block of the batch's rows: its first element's).
template <class T>
void dropout_forward(const T* x, T* y, std::uint8_t* mask, idx n, double p, std::uint64_t seed, idx first = 0);

// dy, dx are (n); dx is overwritten with dy * mask / (1 - p).
template <class T>
void dropout_backward(const T* dy, const std::uint8_t* mask, T* dx, idx n, double p);

}  // namespace fastmlp
