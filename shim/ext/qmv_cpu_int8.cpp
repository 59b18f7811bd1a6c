// The CPU matvec's int8-activation kernel (opt-in; qmv_cpu.cpp chooses it): x is quantized per block
// of 64 values to int8 with one float scale (as llama.cpp's Q8 activations), and each block's dot
// with the 4-bit weights is one AVX-512 VNNI instruction (64 unsigned nibbles times 64 signed bytes,
// summed in int32), scaled by the weight's and x's scales in float. The bias term uses x's exact
// float sums, so only the q . x term carries the rounding of x (at most half a step of 1/127 of the
// block's largest magnitude per value).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cpuid.h>

#include "mlx/types/bf16.h"
#include "mlx/types/half_types.h"
#include "qmv_cpu.h"

namespace mlxb::qmv {

namespace {

constexpr int BLOCK = 64;

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

} // namespace

bool int8_available() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false; // OSXSAVE
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xE6) != 0xE6) return false; // XMM, YMM, opmask and ZMM state saved
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool f = b & (1u << 16), bw = b & (1u << 30), vnni = c & (1u << 11);
  return f && bw && vnni;
}

Int8Rows quantize_rows(const float* x, int rows, int k) {
  const int blocks = k / BLOCK;
  Int8Rows q{std::vector<int8_t>(static_cast<size_t>(rows) * k), std::vector<float>(static_cast<size_t>(rows) * blocks)};
  for (int r = 0; r < rows; r++) {
    for (int c = 0; c < blocks; c++) {
      const float* xb = x + static_cast<size_t>(r) * k + c * BLOCK;
      float peak = 0;
      for (int i = 0; i < BLOCK; i++) peak = std::max(peak, std::fabs(xb[i]));
      const float scale = peak / 127.0f, inverse = peak > 0 ? 127.0f / peak : 0.0f;
      const size_t at = static_cast<size_t>(r) * blocks + c;
      q.scales[at] = scale;
      int8_t* out = q.values.data() + at * BLOCK;
      for (int i = 0; i < BLOCK / 2; i++) {
        out[i] = static_cast<int8_t>(std::nearbyint(xb[2 * i] * inverse));
        out[BLOCK / 2 + i] = static_cast<int8_t>(std::nearbyint(xb[2 * i + 1] * inverse));
      }
    }
  }
  return q;
}

template <typename S>
void matvec_int8(const Problem<S>& p, const Int8Rows& xq, const float* group_sums, int begin, int end) {
  int row = 0;
  for (; row + 4 <= p.rows; row += 4) rows_int8<4>(p, xq, group_sums, row, begin, end);
  switch (p.rows - row) {
    case 3:
      return rows_int8<3>(p, xq, group_sums, row, begin, end);
    case 2:
      return rows_int8<2>(p, xq, group_sums, row, begin, end);
    case 1:
      return rows_int8<1>(p, xq, group_sums, row, begin, end);
    default:
      return;
  }
}

template void matvec_int8(const Problem<float>&, const Int8Rows&, const float*, int, int);
template void matvec_int8(const Problem<mlx::core::bfloat16_t>&, const Int8Rows&, const float*, int, int);
template void matvec_int8(const Problem<mlx::core::float16_t>&, const Int8Rows&, const float*, int, int);

} // namespace mlxb::qmv
