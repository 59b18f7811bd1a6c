// The CPU matvec's kernel for several rows of x (a decode batch, a prompt): float32 arithmetic as the
// one-row kernel's (per group, scale * (q . x) + bias * sum(x)), but laid out as a small matmul.
// A tile of 16 output columns and one group of the packed 4-bit weights is unpacked once into float
// values 0..15 (the tile's k-th row holds the 16 columns' k-th weights), and every row of x in the
// block is multiplied by it with a register block of 6 rows x 16 columns (12 AVX2 accumulators:
// per weight row two loads, six broadcasts of x and twelve FMAs). Unpacking costs about one
// instruction per weight, paid once per block of rows, so the FMAs dominate from a few rows up.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "mlx/types/bf16.h"
#include "mlx/types/half_types.h"
#include "qmv_cpu.h"

namespace mlxb::qmv {

namespace {

/** Output columns per tile: two AVX2 vectors. */
constexpr int COLS = 16;
/** Rows of x per register block: 6 x 2 accumulators, two weight vectors and a broadcast fill 15 of
 * the 16 registers. */
constexpr int REGISTER_ROWS = 6;
/** Rows of x per pass over the weights: their slice of x stays in the core's L2 while the tiles are
 * unpacked once for all of them. */
constexpr int ROW_BLOCK = 96;

/** tile[i * 16 + c] = weight (j0 + c, first + i) as a float 0..15, for i < group (c past the last
 * column: column 0 again, its outputs dropped). `w` points at row j0 of the packed weight. Eight
 * columns at a time: their words at one position in one vector, each nibble shifted out in turn. */
__attribute__((target("avx2,fma"))) void unpack_tile(const uint32_t* w, int words, int cols, int first_word, int per_group, float* tile) {
  const __m256i low = _mm256_set1_epi32(0xF);
  for (int half = 0; half < 2; half++) {
    const uint32_t* rows[8];
    for (int c = 0; c < 8; c++) {
      const int col = half * 8 + c;
      rows[c] = w + static_cast<size_t>(col < cols ? col : 0) * words + first_word;
    }
    for (int word = 0; word < per_group; word++) {
      const __m256i packed =
          _mm256_setr_epi32(static_cast<int>(rows[0][word]), static_cast<int>(rows[1][word]), static_cast<int>(rows[2][word]), static_cast<int>(rows[3][word]),
                            static_cast<int>(rows[4][word]), static_cast<int>(rows[5][word]), static_cast<int>(rows[6][word]), static_cast<int>(rows[7][word]));
      float* out = tile + static_cast<size_t>(word) * 8 * COLS + half * 8;
      _mm256_storeu_ps(out + 0 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(packed, low)));
      _mm256_storeu_ps(out + 1 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 4), low)));
      _mm256_storeu_ps(out + 2 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 8), low)));
      _mm256_storeu_ps(out + 3 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 12), low)));
      _mm256_storeu_ps(out + 4 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 16), low)));
      _mm256_storeu_ps(out + 5 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 20), low)));
      _mm256_storeu_ps(out + 6 * COLS, _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(packed, 24), low)));
      _mm256_storeu_ps(out + 7 * COLS, _mm256_cvtepi32_ps(_mm256_srli_epi32(packed, 28)));
    }
  }
}

/** For R rows of x (x[r] at x + r * k, from the group's first value): totals[r] (16 columns) +=
 * scale * (tile . x[r]) + bias * sum[r] (sums[r * groups]: the row's sum over this group). */
template <int R>
__attribute__((target("avx2,fma"))) void multiply_tile(const float* tile, int group, const float* x, size_t k, const float* sums, int groups,
                                                       const float* scale, const float* bias, float* totals) {
  __m256 acc[R][2];
  for (int r = 0; r < R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int i = 0; i < group; i++) {
    const __m256 w0 = _mm256_loadu_ps(tile + i * COLS), w1 = _mm256_loadu_ps(tile + i * COLS + 8);
    for (int r = 0; r < R; r++) {
      const __m256 xv = _mm256_broadcast_ss(x + r * k + i);
      acc[r][0] = _mm256_fmadd_ps(w0, xv, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w1, xv, acc[r][1]);
    }
  }
  const __m256 s0 = _mm256_loadu_ps(scale), s1 = _mm256_loadu_ps(scale + 8);
  const __m256 b0 = _mm256_loadu_ps(bias), b1 = _mm256_loadu_ps(bias + 8);
  for (int r = 0; r < R; r++) {
    float* t = totals + r * COLS;
    const __m256 sum = _mm256_set1_ps(sums[static_cast<size_t>(r) * groups]);
    _mm256_storeu_ps(t, _mm256_fmadd_ps(b0, sum, _mm256_fmadd_ps(acc[r][0], s0, _mm256_loadu_ps(t))));
    _mm256_storeu_ps(t + 8, _mm256_fmadd_ps(b1, sum, _mm256_fmadd_ps(acc[r][1], s1, _mm256_loadu_ps(t + 8))));
  }
}

/** multiply_tile for R rows from `r`. */
template <int R>
void multiply_block(const float* tile, int group, const float* x, size_t k, const float* sums, int groups, const float* scale, const float* bias, float* totals,
                    int r) {
  multiply_tile<R>(tile, group, x + r * k, k, sums + static_cast<size_t>(r) * groups, groups, scale, bias, totals + r * COLS);
}

/** multiply_tile for `rows` rows: register blocks of 6, the last 7 to 9 rows as two blocks of 3 to 5
 * (a block of 1 or 2 rows has too few accumulators to cover the FMA latency), fewer as one. */
void multiply_rows(const float* tile, int group, const float* x, size_t k, const float* sums, int groups, const float* scale, const float* bias, float* totals,
                   int rows) {
  int r = 0;
  for (; rows - r >= REGISTER_ROWS + 4; r += REGISTER_ROWS) multiply_block<REGISTER_ROWS>(tile, group, x, k, sums, groups, scale, bias, totals, r);
  if (rows - r > REGISTER_ROWS) {
    multiply_block<4>(tile, group, x, k, sums, groups, scale, bias, totals, r);
    r += 4;
  }
  with_rows<REGISTER_ROWS>(rows - r, [&]<int R>() { multiply_block<R>(tile, group, x, k, sums, groups, scale, bias, totals, r); });
}

} // namespace

template <typename S>
void matmul_tiles(const Problem<S>& p, const float* group_sums, int begin, int end) {
  const int groups = p.k / p.group, words = p.k / 8, per_group = p.group / 8;
  const size_t k = p.k;
  std::vector<float> tile(static_cast<size_t>(p.group) * COLS), totals(static_cast<size_t>(std::min(p.rows, ROW_BLOCK)) * COLS);
  float scale[COLS], bias[COLS];
  for (int r0 = 0; r0 < p.rows; r0 += ROW_BLOCK) {
    const int rows = std::min(ROW_BLOCK, p.rows - r0);
    for (int j0 = begin; j0 < end; j0 += COLS) {
      const int cols = std::min(COLS, end - j0);
      std::fill(totals.begin(), totals.end(), 0.0f);
      // The next tile's packed weights (its rows are contiguous) are prefetched a slice per group, and
      // its scales and biases at once: without it the unpacking waited on their loads (a decode
      // step's weights come from memory, not the caches).
      const int next_cols = std::clamp(end - (j0 + COLS), 0, COLS);
      const size_t next = static_cast<size_t>(j0 + COLS);
      const char* next_w = reinterpret_cast<const char*>(p.w + next * words);
      const int lines = next_cols * words * 4 / 64;
      for (size_t at = 0; at < static_cast<size_t>(next_cols) * groups * sizeof(S); at += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(p.scales + next * groups) + at, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(p.biases + next * groups) + at, _MM_HINT_T0);
      }
      for (int g = 0; g < groups; g++) {
        for (int line = g * lines / groups; line < (g + 1) * lines / groups; line++) _mm_prefetch(next_w + line * 64, _MM_HINT_T0);
        unpack_tile(p.w + static_cast<size_t>(j0) * words, words, cols, g * per_group, per_group, tile.data());
        for (int c = 0; c < COLS; c++) {
          const size_t at = static_cast<size_t>(j0 + (c < cols ? c : 0)) * groups + g;
          scale[c] = static_cast<float>(p.scales[at]);
          bias[c] = static_cast<float>(p.biases[at]);
        }
        multiply_rows(tile.data(), p.group, p.x + r0 * k + static_cast<size_t>(g) * p.group, k, group_sums + static_cast<size_t>(r0) * groups + g, groups,
                      scale, bias, totals.data(), rows);
      }
      for (int r = 0; r < rows; r++) std::copy_n(totals.data() + r * COLS, cols, p.out + static_cast<size_t>(r0 + r) * p.n + j0);
    }
  }
}

template void matmul_tiles(const Problem<float>&, const float*, int, int);
template void matmul_tiles(const Problem<mlx::core::bfloat16_t>&, const float*, int, int);
template void matmul_tiles(const Problem<mlx::core::float16_t>&, const float*, int, int);

} // namespace mlxb::qmv
