// The CPU matvec's int8-activation kernel (opt-in; qmv_cpu.cpp chooses it): x is quantized per block
// of 64 values to int8 with one float scale (as llama.cpp's Q8 activations), and each block's dot
// with the 4-bit weights is one AVX-512 VNNI instruction (64 unsigned nibbles times 64 signed bytes,
// summed in int32), scaled by the weight's and x's scales in float. The bias term uses x's exact
// float sums, so only the q . x term carries the rounding of x (at most half a step of 1/127 of the
// block's largest magnitude per value). For a few rows the weights are read once per four rows, two
// blocks a load (groups of 64), and prefetched ahead; for a prompt's rows the weights go by tiles of
// 16 columns laid out so that one VNNI instruction dots 4 positions of all 16 with a row's 4 values.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "mlx/types/bf16.h"
#include "mlx/types/half_types.h"
#include "cpu_kernel.h"
#include "qmv_cpu.h"

namespace mlxb::qmv {

namespace {

constexpr int BLOCK = 64;

/** Rows of x from which the products go by tiles (tiles_int8; a prompt): below (a decode batch), one
 * pass over the weights per four rows is faster, as unpacking a tile (its transpose by gathers) costs
 * more than it saves (measured at 8 and 16 rows of the default model on this project's 2-core EPYC:
 * 1060 -> 710 and 1224 -> 1013-1118 tok/s; a 96-token prompt: 1900 -> 2700-3000 tok/s). */
constexpr int TILE_ROWS = 32;

/** out[r, j] for the R rows from `row`: each 64-value block of the weight row is unpacked once (low
 * nibbles: the even positions; high nibbles: the odd ones) and dotted with each row's block. */
template <int R, typename S>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void rows_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int row, int begin,
                                                                      int end) {
  const int blocks = p.k / BLOCK, groups = p.k / p.group, per_group = p.group / BLOCK;
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m512i zero = _mm512_setzero_si512();
  for (int j = begin; j < end; j++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w + static_cast<size_t>(j) * (p.k / 8));
    const S* s = p.scales + static_cast<size_t>(j) * groups;
    const S* b = p.biases + static_cast<size_t>(j) * groups;
    __m512 total[R];
    float offset[R];
    for (int r = 0; r < R; r++) total[r] = _mm512_setzero_ps(), offset[r] = 0;
    for (int c = 0; c < blocks; c++) {
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + c * (BLOCK / 2)));
      const __m256i even = _mm256_and_si256(packed, low);
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
      const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(even), odd, 1);
      const float ws = static_cast<float>(s[c / per_group]);
      for (int r = 0; r < R; r++) {
        const size_t at = static_cast<size_t>(row + r) * blocks + c;
        const __m512i x = _mm512_loadu_si512(xq.values.data() + at * BLOCK);
        const __m512i dot = _mm512_dpbusd_epi32(zero, q, x);
        total[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(ws * xq.scales[at]), total[r]);
      }
    }
    for (int g = 0; g < groups; g++) {
      const float bias = static_cast<float>(b[g]);
      for (int r = 0; r < R; r++) offset[r] += bias * group_sums[static_cast<size_t>(row + r) * groups + g];
    }
    for (int r = 0; r < R; r++) p.out[static_cast<size_t>(row + r) * p.n + j] = _mm512_reduce_add_ps(total[r]) + offset[r];
  }
}

/** 8 values of S from `at` as floats (lanes past `mask` zero). */
template <typename S>
__attribute__((target("avx512f,avx512bw,avx512vl,f16c,fma"))) __m256 load8(const S* at, __mmask8 mask) {
  if constexpr (std::is_same_v<S, float>) {
    return _mm256_maskz_loadu_ps(mask, at);
  } else {
    const __m128i bits = _mm_maskz_loadu_epi16(mask, at);
    if constexpr (std::is_same_v<S, mlx::core::float16_t>)
      return _mm256_cvtph_ps(bits);
    else
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16)); // bfloat16: the high half of a float
  }
}

/** The sums of a, b, c and d's 16 lanes: halves added pairwise across the four vectors (lanes of 128
 * bits, then within them), so four horizontal sums cost 9 shuffles and adds instead of 32. */
__attribute__((target("avx512f"))) inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  __m512 abcd = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD)); // 128-bit lane i: 4 partials of the i-th
  abcd = _mm512_add_ps(abcd, _mm512_permute_ps(abcd, 0x4E));
  abcd = _mm512_add_ps(abcd, _mm512_permute_ps(abcd, 0xB1));
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), abcd));
}

/** rows_int8 for groups of 64 and an even number of blocks, x laid out in pairs of blocks (pairs_fit),
 * C columns from j at once: one 64-byte load holds two blocks of a weight row, its low nibbles dotted
 * with both blocks' even positions and its high nibbles with their odd ones (two VNNI instructions;
 * lanes 0-7 are the first block's, 8-15 the second's), so a pair costs one float conversion and one
 * multiply-add with a vector of the two blocks' scales. The scales and the bias term (bias * the
 * float sums of x, not of its int8 values) go 8 groups at a time; the R x C outputs' horizontal sums go four at once
 * (sum4: per output, one chain of dependent shuffles was most of the kernel's time). */
template <int R, int C, typename S>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma"))) void paired_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums,
                                                                                          int row, int j) {
  const int blocks = p.k / BLOCK;
  prefetch_ahead(p, j, C);
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i zero = _mm512_setzero_si512();
  __m512 total[R][C];
  __m256 offset[R][C];
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) total[r][c] = _mm512_setzero_ps(), offset[r][c] = _mm256_setzero_ps();
  // Column after column (the weights read in order: interleaving the columns' rows was slower once
  // they came from memory, 2.2 -> 3.6 ms for the qwen3-0.6b shape's products).
  for (int c = 0; c < C; c++) {
    const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w + static_cast<size_t>(j + c) * (p.k / 8));
    for (int b0 = 0; b0 < blocks; b0 += 8) {
      const int n = std::min(8, blocks - b0);
      const __mmask8 mask = static_cast<__mmask8>((1u << n) - 1);
      const size_t at = static_cast<size_t>(j + c) * blocks + b0;
      const __m256 weight_scales = load8(p.scales + at, mask), biases = load8(p.biases + at, mask);
      __m512 scales[R];
      for (int r = 0; r < R; r++) {
        const size_t x_at = static_cast<size_t>(row + r) * blocks + b0;
        scales[r] = _mm512_castps256_ps512(_mm256_mul_ps(weight_scales, _mm256_maskz_loadu_ps(mask, xq.scales.data() + x_at)));
        offset[r][c] = _mm256_fmadd_ps(biases, _mm256_maskz_loadu_ps(mask, group_sums + x_at), offset[r][c]);
      }
      for (int b = 0; b < n; b += 2) {
        // Lanes 0-7 take block b's scale, lanes 8-15 block b + 1's.
        const __m512i pair = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32(b)), _mm256_set1_epi32(b + 1), 1);
        const __m512i packed = _mm512_loadu_si512(w + (b0 + b) * (BLOCK / 2));
        const __m512i even = _mm512_and_si512(packed, low);
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low);
        for (int r = 0; r < R; r++) {
          const int8_t* x = xq.values.data() + (static_cast<size_t>(row + r) * blocks + b0 + b) * BLOCK;
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, even, _mm512_loadu_si512(x)), odd, _mm512_loadu_si512(x + BLOCK));
          total[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(pair, scales[r]), total[r][c]);
        }
      }
    }
  }
  // Outputs in groups of four (the last padded with zeros).
  constexpr int OUTPUTS = R * C, PADDED = (OUTPUTS + 3) / 4 * 4;
  __m512 sums[PADDED];
  for (int i = 0; i < PADDED; i++)
    sums[i] = i < OUTPUTS ? _mm512_add_ps(total[i / C][i % C], _mm512_zextps256_ps512(offset[i / C][i % C])) : _mm512_setzero_ps();
  alignas(16) float out[PADDED];
  for (int i = 0; i < PADDED; i += 4) _mm_store_ps(out + i, sum4(sums[i], sums[i + 1], sums[i + 2], sums[i + 3]));
  for (int i = 0; i < OUTPUTS; i++) p.out[static_cast<size_t>(row + i / C) * p.n + j + i % C] = out[i];
}

/** paired_int8 over columns [begin, end) for R rows from `row`: 4 / R columns at a time (their R x C
 * accumulators and bias terms fit the 32 vector registers), the rest one at a time. */
template <int R, typename S>
void paired_rows_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int row, int begin, int end) {
  constexpr int C = R == 1 ? 4 : R == 2 ? 2 : 1;
  int j = begin;
  for (; j + C <= end; j += C) paired_int8<R, C>(p, xq, group_sums, row, j);
  for (; j < end; j++) paired_int8<R, 1>(p, xq, group_sums, row, j);
}

/** Output columns per tile of the many-rows kernel: one AVX-512 vector of int32 lanes. */
constexpr int COLS = 16;
/** Rows of x per pass over the weights (their int8 blocks stay in the core's caches). */
constexpr int ROW_BLOCK = 96;
/** Rows per register block: 8 int32 accumulators, the tile's vector and a broadcast. */
constexpr int REGISTER_ROWS = 8;

/** The tile of 16 columns from j0 for one 64-value block of the weights, laid out for VNNI:
 * tile[i * 16 + c] holds column c's 4 weights at positions 4i..4i+3 of the block (in x's order: the
 * even positions, then the odd ones), as bytes 0..15. Column c's block is unpacked into 16 dwords,
 * then the 16 x 16 dwords are transposed in registers (dwords, then quadwords, then 128-bit lanes
 * interleaved: 64 shuffles). */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void unpack_tile_int8(const uint8_t* w, size_t row_bytes, int cols, int block, int32_t* tile) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  __m512i r[COLS], t[COLS], u[COLS];
  for (int c = 0; c < COLS; c++) {
    const uint8_t* packed_at = w + static_cast<size_t>(c < cols ? c : 0) * row_bytes + block * (BLOCK / 2);
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed_at));
    const __m256i even = _mm256_and_si256(packed, low);
    const __m256i odd = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
    r[c] = _mm512_inserti64x4(_mm512_castsi256_si512(even), odd, 1);
  }
  // Per 128-bit lane L: t[2p] = (r[2p][4L], r[2p+1][4L], r[2p][4L+1], r[2p+1][4L+1]), t[2p+1] the next two.
  for (int p = 0; p < COLS / 2; p++) {
    t[2 * p] = _mm512_unpacklo_epi32(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_epi32(r[2 * p], r[2 * p + 1]);
  }
  // u[4g + m], lane L: dword 4L + m of columns 4g..4g+3.
  for (int g = 0; g < COLS / 4; g++) {
    u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  // Row 4L + m of the tile: lane L of u[m], u[4 + m], u[8 + m], u[12 + m].
  for (int m = 0; m < 4; m++) {
    const __m512i even_a = _mm512_shuffle_i32x4(u[m], u[4 + m], 0x88), even_b = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0x88);
    const __m512i odd_a = _mm512_shuffle_i32x4(u[m], u[4 + m], 0xDD), odd_b = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], 0xDD);
    _mm512_store_si512(tile + m * COLS, _mm512_shuffle_i32x4(even_a, even_b, 0x88));
    _mm512_store_si512(tile + (8 + m) * COLS, _mm512_shuffle_i32x4(even_a, even_b, 0xDD));
    _mm512_store_si512(tile + (4 + m) * COLS, _mm512_shuffle_i32x4(odd_a, odd_b, 0x88));
    _mm512_store_si512(tile + (12 + m) * COLS, _mm512_shuffle_i32x4(odd_a, odd_b, 0xDD));
  }
}

/** For R rows (their int8 blocks at x, one row every `row_blocks` blocks; their scales likewise):
 * totals[r] (16 columns) += weight scale * x scale * (tile . x[r]) for one block. */
template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void multiply_tile_int8(const int32_t* tile, const int8_t* x, const float* x_scales, size_t row_blocks,
                                                                               __m512 weight_scales, float* totals) {
  __m512i acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_si512();
  for (int i = 0; i < COLS; i++) {
    const __m512i w = _mm512_load_si512(tile + i * COLS);
    for (int r = 0; r < R; r++) {
      int32_t four;
      __builtin_memcpy(&four, x + r * row_blocks * BLOCK + i * 4, 4);
      acc[r] = _mm512_dpbusd_epi32(acc[r], w, _mm512_set1_epi32(four));
    }
  }
  for (int r = 0; r < R; r++) {
    float* t = totals + r * COLS;
    const __m512 scale = _mm512_mul_ps(weight_scales, _mm512_set1_ps(x_scales[r * row_blocks]));
    _mm512_storeu_ps(t, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), scale, _mm512_loadu_ps(t)));
  }
}

template <int R>
void multiply_block_int8(const int32_t* tile, const Int8Rows& xq, size_t row_blocks, int row, int block, __m512 weight_scales, float* totals) {
  const size_t at = static_cast<size_t>(row) * row_blocks + block;
  multiply_tile_int8<R>(tile, xq.values.data() + at * BLOCK, xq.scales.data() + at, row_blocks, weight_scales, totals);
}

/** multiply_tile_int8 for `rows` rows from `row`: register blocks of 8, then one of the rest. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void multiply_rows_int8(const int32_t* tile, const Int8Rows& xq, size_t row_blocks, int row, int rows,
                                                                               int block, __m512 weight_scales, float* totals) {
  int r = 0;
  for (; r + REGISTER_ROWS <= rows; r += REGISTER_ROWS)
    multiply_block_int8<REGISTER_ROWS>(tile, xq, row_blocks, row + r, block, weight_scales, totals + r * COLS);
  float* t = totals + r * COLS;
  with_rows<REGISTER_ROWS - 1>(rows - r, [&]<int R>() { multiply_block_int8<R>(tile, xq, row_blocks, row + r, block, weight_scales, t); });
}

/** The many-rows product: tiles of 16 columns x one 64-value block unpacked once for a block of
 * rows, each row's block dotted with the 16 columns at once (one VNNI instruction per 4 positions),
 * the bias term added per group as the one-row kernel does. */
template <typename S>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void tiles_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int begin, int end) {
  const int blocks = p.k / BLOCK, groups = p.k / p.group, per_group = p.group / BLOCK;
  const size_t row_bytes = static_cast<size_t>(p.k) / 2;
  alignas(64) int32_t tile[COLS * COLS];
  alignas(64) float scale[COLS];
  std::vector<float> totals(static_cast<size_t>(std::min(p.rows, ROW_BLOCK)) * COLS);
  std::vector<float> biases(static_cast<size_t>(groups) * COLS); // the tile's 16 columns' biases, per group
  const uint8_t* w = reinterpret_cast<const uint8_t*>(p.w);
  for (int r0 = 0; r0 < p.rows; r0 += ROW_BLOCK) {
    const int rows = std::min(ROW_BLOCK, p.rows - r0);
    for (int j0 = begin; j0 < end; j0 += COLS) {
      const int cols = std::min(COLS, end - j0);
      for (int g = 0; g < groups; g++)
        for (int col = 0; col < COLS; col++)
          biases[g * COLS + col] = static_cast<float>(p.biases[static_cast<size_t>(j0 + (col < cols ? col : 0)) * groups + g]);
      for (int r = 0; r < rows; r++) _mm512_storeu_ps(totals.data() + r * COLS, _mm512_setzero_ps());
      for (int c = 0; c < blocks; c++) {
        if (c % per_group == 0) {
          for (int col = 0; col < COLS; col++)
            scale[col] = static_cast<float>(p.scales[static_cast<size_t>(j0 + (col < cols ? col : 0)) * groups + c / per_group]);
        }
        // The 16 columns' next cache line (two blocks a line), or the next tile's first, is fetched
        // while this block is multiplied: the hardware's prefetchers do not follow 16 strided rows.
        if (c % 2 == 0) {
          const size_t ahead = c + 2 < blocks ? static_cast<size_t>(j0) * row_bytes + (c + 2) * (BLOCK / 2) : static_cast<size_t>(j0 + COLS) * row_bytes;
          for (int col = 0; col < COLS; col++) __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(w) + ahead + col * row_bytes));
        }
        unpack_tile_int8(w + static_cast<size_t>(j0) * row_bytes, row_bytes, cols, c, tile);
        multiply_rows_int8(tile, xq, blocks, r0, rows, c, _mm512_load_ps(scale), totals.data());
      }
      // Out: the totals plus the bias term, bias * the rows' exact float sums per group.
      const __mmask16 mask = static_cast<__mmask16>((1u << cols) - 1);
      for (int r = 0; r < rows; r++) {
        const float* sums = group_sums + static_cast<size_t>(r0 + r) * groups;
        __m512 total = _mm512_loadu_ps(totals.data() + r * COLS);
        for (int g = 0; g < groups; g++) total = _mm512_fmadd_ps(_mm512_loadu_ps(biases.data() + g * COLS), _mm512_set1_ps(sums[g]), total);
        _mm512_mask_storeu_ps(p.out + static_cast<size_t>(r0 + r) * p.n + j0, mask, total);
      }
    }
  }
}

} // namespace

bool int8_available() {
  return avx512_available(/* vnni */ true);
}

/** Whether the products of `rows` rows go by paired_rows_int8 (x laid out in pairs of blocks). */
static bool pairs_fit(int rows, int k, int group) {
  return rows < TILE_ROWS && group == BLOCK && (k / BLOCK) % 2 == 0;
}

/** 16 values times `scaled`, rounded to int8 (round half to even, the default rounding mode), at `to`. */
__attribute__((target("avx512f"))) static inline void store_int8(int8_t* to, __m512 values, __m512 scaled) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(to), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(values, scaled))));
}

__attribute__((target("avx512f,avx512bw"))) Int8Rows quantize_rows(const float* x, int rows, int k, int group) {
  const int blocks = k / BLOCK, groups = k / group, per_group = group / BLOCK;
  const bool pairs = pairs_fit(rows, k, group);
  Int8Rows q{std::vector<int8_t>(static_cast<size_t>(rows) * k), std::vector<float>(static_cast<size_t>(rows) * blocks), pairs,
             std::vector<float>(static_cast<size_t>(rows) * groups)};
  const __m512i even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_add_epi32(even_index, _mm512_set1_epi32(1));
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < blocks; c++) {
      const float* xb = x + static_cast<size_t>(r) * k + c * BLOCK;
      const __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16), v2 = _mm512_loadu_ps(xb + 32), v3 = _mm512_loadu_ps(xb + 48);
      const float peak =
          _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)), _mm512_max_ps(_mm512_abs_ps(v2), _mm512_abs_ps(v3))));
      const float scale = peak / 127.0f, inverse = peak > 0 ? 127.0f / peak : 0.0f;
      const size_t at = static_cast<size_t>(r) * blocks + c;
      q.scales[at] = scale;
      q.sums[static_cast<size_t>(r) * groups + c / per_group] += _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(v0, v1), _mm512_add_ps(v2, v3)));
      // One block: its even positions, then its odd ones. A pair (blocks 2m, 2m + 1): both blocks' even
      // positions, then both odd ones. Each value round-half-even(x * inverse) (the default rounding mode).
      int8_t* even = q.values.data() + at * BLOCK;
      int8_t* odd = even + BLOCK / 2;
      if (pairs) {
        even = q.values.data() + (at - c % 2) * BLOCK + (c % 2) * (BLOCK / 2);
        odd = even + BLOCK;
      }
      const __m512 scaled = _mm512_set1_ps(inverse);
      store_int8(even, _mm512_permutex2var_ps(v0, even_index, v1), scaled);
      store_int8(even + 16, _mm512_permutex2var_ps(v2, even_index, v3), scaled);
      store_int8(odd, _mm512_permutex2var_ps(v0, odd_index, v1), scaled);
      store_int8(odd + 16, _mm512_permutex2var_ps(v2, odd_index, v3), scaled);
    }
  }
  return q;
}

template <typename S>
void matvec_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int begin, int end) {
  if (p.rows >= TILE_ROWS) return tiles_int8(p, xq, group_sums, begin, end);
  int row = 0;
  if (xq.paired) {
    for (; row + 4 <= p.rows; row += 4) paired_rows_int8<4>(p, xq, group_sums, row, begin, end);
    return with_rows<3>(p.rows - row, [&]<int R>() { paired_rows_int8<R>(p, xq, group_sums, row, begin, end); });
  }
  for (; row + 4 <= p.rows; row += 4) rows_int8<4>(p, xq, group_sums, row, begin, end);
  with_rows<3>(p.rows - row, [&]<int R>() { rows_int8<R>(p, xq, group_sums, row, begin, end); });
}

template void matvec_int8(const Problem<float>&, const Int8Rows&, const float*, int, int);
template void matvec_int8(const Problem<mlx::core::bfloat16_t>&, const Int8Rows&, const float*, int, int);
template void matvec_int8(const Problem<mlx::core::float16_t>&, const Int8Rows&, const float*, int, int);

} // namespace mlxb::qmv
