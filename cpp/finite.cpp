#include "finite.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "pool.h"

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

template <class T>
void check_rows_finite_parallel(const T* x, idx rows, idx cols, const char* what, idx first_row, int threads) {
  constexpr idx kPart = idx(1) << 16;  // elements per part: a part is worth a hand-off to another thread
  const idx n = rows * cols, parts = std::min<idx>(4 * idx(std::max(threads, 1)), n / kPart);
  bool ok = true;
  if (threads > 1 && parts > 1) {
    struct Parts {
      const T* x;
      idx n, parts;
      std::atomic<bool> bad{false};
      static void run(void* p, idx c) {
        auto* a = static_cast<Parts*>(p);
        const idx lo = a->n * c / a->parts, hi = a->n * (c + 1) / a->parts;
        if (!all_finite(a->x + lo, hi - lo)) a->bad.store(true, std::memory_order_relaxed);
      }
    } a{x, n, parts};
    parallel_take(threads, parts, &Parts::run, &a);
    ok = !a.bad.load();
  } else {
    ok = all_finite(x, n);
  }
  if (!ok) check_rows_finite(x, rows, cols, what, first_row);  // names the first bad row
}

template bool all_finite<float>(const float*, idx);
template bool all_finite<double>(const double*, idx);
template void check_rows_finite<float>(const float*, idx, idx, const char*, idx, const idx*);
template void check_rows_finite<double>(const double*, idx, idx, const char*, idx, const idx*);
template void check_rows_finite_parallel<float>(const float*, idx, idx, const char*, idx, int);
template void check_rows_finite_parallel<double>(const double*, idx, idx, const char*, idx, int);

}  // namespace fastmlp
