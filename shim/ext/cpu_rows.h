// What the CPU kernels of fast_cpu.cpp and dequantize_cpu.cpp share: reading rows of strided arrays
// and rounding as an op with a half-precision output does.
#pragma once

#include <cstdint>
#include <type_traits>

#include "internal.h"

namespace mlxb {

/** A value rounded to T and back (what an MLX op with output dtype T stores). */
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return static_cast<float>(static_cast<T>(v));
}

/** Element offset of row `row` of `a` (rows: every index but the last, in row-major order). */
inline int64_t row_start(const mx::array& a, int64_t row) {
  int64_t at = 0;
  for (int d = static_cast<int>(a.ndim()) - 2; d >= 0; d--) {
    at += (row % a.shape(d)) * a.strides()[d];
    row /= a.shape(d);
  }
  return at;
}

} // namespace mlxb
