// What the CPU matvec's kernels share (qmv_cpu.cpp: the float kernels and the primitive;
// qmv_cpu_int8.cpp: the int8-activation kernel).
#pragma once

#include <cstdint>
#include <vector>

namespace mlxb::qmv {

/** One product: x [rows, k] float32 times the 4-bit weight [n, k] (packed uint32, 8 values a word,
 * value i of a word at bits 4i), scales and biases [n, k / group] of S (float, mx::bfloat16_t or
 * mx::float16_t), into out [rows, n] float32. */
template <typename S>
struct Problem {
  const float* x;
  const uint32_t* w;
  const S* scales;
  const S* biases;
  float* out;
  int rows, n, k, group;
};

/** x quantized for the int8 kernel, per row and per block of 64 values: the block's values as
 * int8 round(x / scale), ordered as the weight's nibbles come out of its bytes (the even positions,
 * then the odd ones), and scale = max |x| / 127. */
struct Int8Rows {
  std::vector<int8_t> values;
  std::vector<float> scales;
};

/** Calls kernel.template operator()<R>() with R = rows, for rows in [1, MAX] (a kernel templated on
 * its number of rows: the rest of a batch after its full register blocks); nothing for 0. */
template <int MAX, typename F>
void with_rows(int rows, F&& kernel) {
  if constexpr (MAX > 0) {
    if (rows == MAX) return kernel.template operator()<MAX>();
    with_rows<MAX - 1>(rows, kernel);
  }
}

/** AVX-512 VNNI (and the OS saving ZMM state): the int8 kernel can run. */
bool int8_available();

/** The int8 kernel takes groups that are multiples of 64 (a block of x never spans two groups). */
inline bool int8_fits(int group) {
  return group % 64 == 0;
}

/** out[r, j] for j in [begin, end), every row, by tiles of the weights unpacked once for a block of
 * rows (qmv_cpu_tiles.cpp; AVX2 and FMA). */
template <typename S>
void matmul_tiles(const Problem<S>& p, const float* group_sums, int begin, int end);

Int8Rows quantize_rows(const float* x, int rows, int k);

/** out[r, j] for j in [begin, end): sum over blocks of weight scale * x scale * (q . xq) (an int32 dot
 * by VNNI) + bias * sum(x) (group_sums: the exact float sums of x per row and group). */
template <typename S>
void matvec_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int begin, int end);

} // namespace mlxb::qmv
