// Shared types and helpers of the engine: index type, error types, checked
// size arithmetic and a 64-byte aligned buffer that is allocated once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>

// Element-wise kernels are compiled for AVX-512, AVX2 and baseline x86-64
// and picked at run time (no -march=native). The build uses
// -ffp-contract=off, so every path rounds alike and gives the same result.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FASTMLP_NO_CLONES)
#define FASTMLP_SIMD __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTMLP_SIMD
#endif

namespace fastmlp {

using idx = std::int64_t;

// Bad argument (maps to Python ValueError).
struct value_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Training produced non-finite numbers (maps to Python FloatingPointError).
struct numeric_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Wrong kind of argument (maps to Python TypeError).
struct type_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// a * b for sizes, throwing instead of wrapping around.
inline idx checked_mul(idx a, idx b) {
  if (a < 0 || b < 0) throw value_error("negative size");
  idx r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::length_error("size overflows 64-bit arithmetic");
  return r;
}
inline idx checked_add(idx a, idx b) {
  idx r;
  if (__builtin_add_overflow(a, b, &r)) throw std::length_error("size overflows 64-bit arithmetic");
  return r;
}

// A zero-initialised, 64-byte aligned array of T. Resizing reallocates, so
// owners size it once (or grow it only when a larger batch first appears).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(idx n) { resize(n); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) { std::free(p_); p_ = o.p_; n_ = o.n_; o.p_ = nullptr; o.n_ = 0; }
    return *this;
  }
  ~Buffer() { std::free(p_); }

  void resize(idx n) {
    if (n == n_) return;
    idx bytes = checked_mul(n, static_cast<idx>(sizeof(T)));
    idx rounded = checked_add(bytes, 63) / 64 * 64;
    void* q = rounded ? std::aligned_alloc(64, static_cast<size_t>(rounded)) : nullptr;
    if (rounded && !q) throw std::bad_alloc();
    if (q) std::memset(q, 0, static_cast<size_t>(rounded));
    std::free(p_);
    p_ = static_cast<T*>(q);
    n_ = n;
  }
  // Grow to at least n elements; existing contents are not kept.
  void reserve(idx n) { if (n > n_) resize(n); }
  // The same, new memory left as the allocator gives it (untouched pages stay unmapped): for parts
  // always written before they are read.
  void reserve_uninitialized(idx n) {
    if (n <= n_) return;
    const idx bytes = checked_add(checked_mul(n, static_cast<idx>(sizeof(T))), 63) / 64 * 64;
    void* q = std::aligned_alloc(64, static_cast<size_t>(bytes));
    if (!q) throw std::bad_alloc();
    std::free(p_);
    p_ = static_cast<T*>(q);
    n_ = n;
  }
  void zero() { if (n_) std::memset(static_cast<void*>(p_), 0, sizeof(T) * static_cast<size_t>(n_)); }
  T* data() { return p_; }
  const T* data() const { return p_; }
  idx size() const { return n_; }

 private:
  T* p_ = nullptr;
  idx n_ = 0;
};

enum class Reduction { Mean, Sum };

}  // namespace fastmlp
