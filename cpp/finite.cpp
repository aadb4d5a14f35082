#include "finite.h"

#include <cmath>
#include <limits>

namespace fastmlp {

template <class T>
FASTMLP_SIMD bool all_finite(const T* p, idx n) {
  const T big = std::numeric_limits<T>::max();
  int bad = 0;
  for (idx i = 0; i < n; ++i) bad |= !(std::fabs(p[i]) <= big);  // NaN compares false
  return bad == 0;
}

template <class T>
void check_rows_finite(const T* x, idx rows, idx cols, const char* what, idx first_row, const idx* index) {
  if (all_finite(x, rows * cols)) return;
  for (idx r = 0; r < rows; ++r)
    if (!all_finite(x + r * cols, cols))
      throw value_error(std::string(what) + " contains NaN or infinity (row " +
                        std::to_string(index ? index[r] : first_row + r) + ")");
}

template bool all_finite<float>(const float*, idx);
template bool all_finite<double>(const double*, idx);
template void check_rows_finite<float>(const float*, idx, idx, const char*, idx, const idx*);
template void check_rows_finite<double>(const double*, idx, idx, const char*, idx, const idx*);

}  // namespace fastmlp
