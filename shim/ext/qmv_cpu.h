// What the CPU matvec's kernels share (qmv_cpu.cpp: the float kernels and the primitive;
// qmv_cpu_int8.cpp: the int8-activation kernel).
#pragma once

#include <algorithm>
#include <cstddef>
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
 * then the odd ones; `paired`: two blocks' even positions, then their odd ones, as one 64-byte load
 * of the weights unpacks), and scale = max |x| / 127. */
struct Int8Rows {
  std::vector<int8_t> values;
  std::vector<float> scales;
  bool paired = false;
  /** The float sums of x (not of its int8 values) per row and group, for the bias term. */
  std::vector<float> sums;
};

/** Bytes of the weights ahead of the columns being read that the one-pass kernels prefetch (into the
 * L2 cache): the hardware's prefetchers alone left them waiting on memory once a step's other data
 * (the KV cache, the activations) had pushed the weights out of the last-level cache (33 int8
 * products of the default model in a loop that reads 8 MB of other data between passes, this
 * project's 2-core EPYC: 1100 µs, 16 GB/s; prefetched 4 KB ahead 720 µs; 1, 2, 8 and 16 KB: 870,
 * 790, 770, 820 µs). Into L2 rather than L1: end to end, alternating fresh processes, int8 decode of
 * the default model 520 -> 611 tok/s and of the qwen3-0.6b shape 35 -> 45 (medians of 5; there the
 * L1 prefetch was slower than none, 40). */
constexpr size_t PREFETCH_AHEAD = 4096;

/** Prefetches the weight rows, scales and biases of `count` columns PREFETCH_AHEAD bytes of weights
 * past column j (addresses past the arrays' ends too: a prefetch does not fault). */
template <typename S>
inline void prefetch_ahead(const Problem<S>& p, int j, int count) {
  const size_t row_bytes = static_cast<size_t>(p.k) / 2, group_bytes = static_cast<size_t>(p.k / p.group) * sizeof(S);
  const uintptr_t w = reinterpret_cast<uintptr_t>(p.w) + j * row_bytes + PREFETCH_AHEAD;
  for (size_t i = 0; i < count * row_bytes; i += 64) __builtin_prefetch(reinterpret_cast<const void*>(w + i), 0, 2);
  const size_t ahead = (j + std::max<size_t>(1, PREFETCH_AHEAD / row_bytes)) * group_bytes;
  const uintptr_t s = reinterpret_cast<uintptr_t>(p.scales) + ahead, b = reinterpret_cast<uintptr_t>(p.biases) + ahead;
  for (size_t i = 0; i < count * group_bytes; i += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(s + i), 0, 2);
    __builtin_prefetch(reinterpret_cast<const void*>(b + i), 0, 2);
  }
}

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

/** x's rows quantized, laid out for the kernel that matvec_int8 picks for `rows` rows and `group`, with their sums per group. */
Int8Rows quantize_rows(const float* x, int rows, int k, int group);

/** out[r, j] for j in [begin, end): sum over blocks of weight scale * x scale * (q . xq) (an int32 dot
 * by VNNI) + bias * sum(x) (group_sums: the exact float sums of x per row and group). */
template <typename S>
void matvec_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int begin, int end);

} // namespace mlxb::qmv
