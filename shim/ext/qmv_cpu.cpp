// A CPU kernel for the 4-bit quantized matmul: x [..., K] (float32, bfloat16 or float16) times a
// 4-bit affine weight [N, K] (packed uint32, scales and biases of x's dtype, group size a multiple of
// 8), as mx::quantized_matmul(x, w, scales, biases, transpose=true). MLX's CPU quantized matmul runs
// at under 1 GB/s on x86 (a decode step of a 29M-parameter model: 20 ms; a prompt 2 GFLOP/s); this
// one reads the packed weights with AVX2: for a few rows one pass over the weights per four rows
// (7-13x MLX's on this machine's 2-core EPYC for decode-sized matmuls), from TILE_ROWS rows by tiles
// (qmv_cpu_tiles.cpp: prompts and batches, 75-150 GFLOP/s on the two cores; no dequantized copy of
// the weight). Arithmetic is float32 (half-precision x is widened once, scales and biases as they
// are read, the output rounded once). It is an MLX primitive (QuantizedMatvecCpu) built by qmv_cpu()
// in place of QuantizedMatmul when the inputs fit (and of the add after it, given an addend);
// anything else (other devices, dtypes, modes, bit widths; without AVX2, more than 32 rows) keeps
// MLX's op. MLXB_QMV=mlx turns it off (for comparisons), as the CUDA one. With int8 activations asked
// for (and AVX-512 VNNI present, the group a multiple of 64) the products go to qmv_cpu_int8.cpp's
// kernel.
#include <immintrin.h>

#include <algorithm>
#include <cpuid.h>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "cpu_kernel.h"
#include "internal.h"
#include "qmv_cpu.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

/** Rows of x up to which the kernel is used without AVX2 (its scalar loop: decode and small batches;
 * more rows go to MLX's matmul over the dequantized weight, shim/quant.cpp). With AVX2 any number. */
constexpr int SCALAR_MAX_ROWS = 32;

/** Rows of x from which the float products go to the tile kernel (qmv_cpu_tiles.cpp): below, unpacking
 * a tile costs more than it saves (measured on this project's 2-core EPYC, 1536 x 512 to 8192 x 512). */
constexpr int TILE_ROWS = 8;

using qmv::Problem;

/** One row's out[row, j] for j in [begin, end) (two accumulators per group): sum over groups of scale * (q . x) + bias * sum(x). The q . x
 * products stay in vector registers, scaled per group; one horizontal sum per output. */
template <typename S>
__attribute__((target("avx2,fma"))) void matvec_row_avx2(const Problem<S>& p, const float* group_sums, int row, int begin, int end) {
  const int groups = p.k / p.group;
  const int words = p.k / 8;
  const int per_group = p.group / 8;
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i low = _mm256_set1_epi32(0xF);
  for (int r = row; r < row + 1; r++) {
    const float* x = p.x + static_cast<size_t>(r) * p.k;
    const float* sums = group_sums + static_cast<size_t>(r) * groups;
    for (int j = begin; j < end; j++) {
      qmv::prefetch_ahead(p, j, 1);
      const uint32_t* w = p.w + static_cast<size_t>(j) * words;
      const S* s = p.scales + static_cast<size_t>(j) * groups;
      const S* b = p.biases + static_cast<size_t>(j) * groups;
      __m256 total = _mm256_setzero_ps();
      float offset = 0;
      for (int g = 0; g < groups; g++) {
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        const uint32_t* wg = w + g * per_group;
        const float* xg = x + g * p.group;
        int word = 0;
        for (; word + 1 < per_group; word += 2) {
          __m256i q0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(wg[word])), shifts), low);
          __m256i q1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(wg[word + 1])), shifts), low);
          acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), _mm256_loadu_ps(xg + word * 8), acc0);
          acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q1), _mm256_loadu_ps(xg + word * 8 + 8), acc1);
        }
        for (; word < per_group; word++) {
          __m256i q0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(wg[word])), shifts), low);
          acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q0), _mm256_loadu_ps(xg + word * 8), acc0);
        }
        total = _mm256_fmadd_ps(_mm256_add_ps(acc0, acc1), _mm256_set1_ps(static_cast<float>(s[g])), total);
        offset += static_cast<float>(b[g]) * sums[g];
      }
      __m128 half = _mm_add_ps(_mm256_castps256_ps128(total), _mm256_extractf128_ps(total, 1));
      half = _mm_add_ps(half, _mm_movehl_ps(half, half));
      half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
      p.out[static_cast<size_t>(r) * p.n + j] = _mm_cvtss_f32(half) + offset;
    }
  }
}

/** out[r, j] for j in [begin, end) and the R rows from `row`: sum over groups of scale * (q . x) +
 * bias * sum(x). Each weight word is unpacked once for the R rows (a decode batch's rows share it);
 * the q . x products stay in vector registers, scaled per group; one horizontal sum per output. */
template <int R, typename S>
__attribute__((target("avx2,fma"))) void matvec_rows_avx2(const Problem<S>& p, const float* group_sums, int row, int begin, int end) {
  const int groups = p.k / p.group;
  const int words = p.k / 8;
  const int per_group = p.group / 8;
  const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i low = _mm256_set1_epi32(0xF);
  const float* x[R];
  const float* sums[R];
  for (int r = 0; r < R; r++) {
    x[r] = p.x + static_cast<size_t>(row + r) * p.k;
    sums[r] = group_sums + static_cast<size_t>(row + r) * groups;
  }
  for (int j = begin; j < end; j++) {
    qmv::prefetch_ahead(p, j, 1);
    const uint32_t* w = p.w + static_cast<size_t>(j) * words;
    const S* s = p.scales + static_cast<size_t>(j) * groups;
    const S* b = p.biases + static_cast<size_t>(j) * groups;
    __m256 total[R];
    float offset[R];
    for (int r = 0; r < R; r++) total[r] = _mm256_setzero_ps(), offset[r] = 0;
    for (int g = 0; g < groups; g++) {
      __m256 acc[R];
      for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
      const uint32_t* wg = w + g * per_group;
      const int at = g * p.group;
      for (int word = 0; word < per_group; word++) {
        __m256 q = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(wg[word])), shifts), low));
        for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(q, _mm256_loadu_ps(x[r] + at + word * 8), acc[r]);
      }
      const __m256 scale = _mm256_set1_ps(static_cast<float>(s[g]));
      const float bias = static_cast<float>(b[g]);
      for (int r = 0; r < R; r++) {
        total[r] = _mm256_fmadd_ps(acc[r], scale, total[r]);
        offset[r] += bias * sums[r][g];
      }
    }
    for (int r = 0; r < R; r++) {
      __m128 half = _mm_add_ps(_mm256_castps256_ps128(total[r]), _mm256_extractf128_ps(total[r], 1));
      half = _mm_add_ps(half, _mm_movehl_ps(half, half));
      half = _mm_add_ss(half, _mm_shuffle_ps(half, half, 1));
      p.out[static_cast<size_t>(row + r) * p.n + j] = _mm_cvtss_f32(half) + offset[r];
    }
  }
}

/** Every row: in blocks of up to four rows per pass over the weights, or for TILE_ROWS rows and more
 * by tiles. */
template <typename S>
void matvec_avx2(const Problem<S>& p, const float* group_sums, int begin, int end) {
  if (p.rows >= TILE_ROWS) return qmv::matmul_tiles(p, group_sums, begin, end);
  int row = 0;
  for (; row + 4 <= p.rows; row += 4) matvec_rows_avx2<4>(p, group_sums, row, begin, end);
  switch (p.rows - row) {
    case 3:
      return matvec_rows_avx2<3>(p, group_sums, row, begin, end);
    case 2:
      return matvec_rows_avx2<2>(p, group_sums, row, begin, end);
    case 1:
      return matvec_row_avx2(p, group_sums, row, begin, end);
    default:
      return;
  }
}

template <typename S>
void matvec_scalar(const Problem<S>& p, const float* group_sums, int begin, int end) {
  const int groups = p.k / p.group;
  const int words = p.k / 8;
  for (int r = 0; r < p.rows; r++) {
    const float* x = p.x + static_cast<size_t>(r) * p.k;
    for (int j = begin; j < end; j++) {
      qmv::prefetch_ahead(p, j, 1);
      const uint32_t* w = p.w + static_cast<size_t>(j) * words;
      float total = 0;
      for (int g = 0; g < groups; g++) {
        float dot = 0;
        for (int i = g * p.group; i < (g + 1) * p.group; i++) dot += static_cast<float>((w[i / 8] >> (4 * (i % 8))) & 0xF) * x[i];
        total += static_cast<float>(p.scales[static_cast<size_t>(j) * groups + g]) * dot +
                 static_cast<float>(p.biases[static_cast<size_t>(j) * groups + g]) * group_sums[static_cast<size_t>(r) * groups + g];
      }
      p.out[static_cast<size_t>(r) * p.n + j] = total;
    }
  }
}

/** Products of at least this many weight values (rows x n x k) are split between this thread and
 * the helper; smaller ones cost less than the handoff. */
constexpr int64_t SPLIT_VALUES = 1 << 21;

/** AVX2 and FMA usable: CPUID says so and the OS saves the YMM registers (XGETBV). */
bool detect_avx2() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  bool fma = c & (1u << 12), osxsave = c & (1u << 27);
  if (!fma || !osxsave) return false;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 6) != 6) return false;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return b & (1u << 5);
}

/** detect_avx2(), asked once. */
bool has_avx2() {
  static const bool available = detect_avx2();
  return available;
}

/** int8: x quantized to int8 per block (qmv_cpu_int8.cpp); the caller checked that it can run. */
template <typename S>
void matvec(const Problem<S>& p, bool int8) {
  const int groups = p.k / p.group;
  qmv::Int8Rows xq;
  std::vector<float> sums;
  if (int8) {
    xq = qmv::quantize_rows(p.x, p.rows, p.k, p.group);
    sums = std::move(xq.sums);
  } else {
    sums.resize(static_cast<size_t>(p.rows) * groups);
    for (int r = 0; r < p.rows; r++) {
      for (int g = 0; g < groups; g++) {
        float s = 0;
        for (int i = g * p.group; i < (g + 1) * p.group; i++) s += p.x[static_cast<size_t>(r) * p.k + i];
        sums[static_cast<size_t>(r) * groups + g] = s;
      }
    }
  }
  const bool avx2 = has_avx2();
  auto part = [&](int begin, int end) {
    if (int8)
      qmv::matvec_int8(p, xq, sums.data(), begin, end);
    else if (avx2)
      matvec_avx2(p, sums.data(), begin, end);
    else
      matvec_scalar(p, sums.data(), begin, end);
  };
  // Chunks of a multiple of 16 columns (the tiles' width), about 8 of them.
  if (static_cast<int64_t>(p.rows) * p.n * p.k >= SPLIT_VALUES)
    in_chunks(p.n, std::max(16, (p.n / 8 + 15) / 16 * 16), [&](int64_t begin, int64_t end) { part(begin, end); });
  else
    part(0, p.n);
}

/** The array's elements in row-major order: its own data when it is row-contiguous, else copied into
 * `copy` following its strides. */
template <typename T>
const T* row_major(const mx::array& a, std::vector<T>& copy) {
  if (a.flags().row_contiguous) return a.data<T>();
  copy.resize(a.size());
  const T* base = a.data<T>();
  const auto& shape = a.shape();
  const auto& strides = a.strides();
  for (size_t i = 0; i < a.size(); i++) {
    size_t rest = i;
    int64_t at = 0;
    for (int d = static_cast<int>(shape.size()) - 1; d >= 0; d--) {
      at += static_cast<int64_t>(rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    copy[i] = base[at];
  }
  return copy.data();
}

/** x @ dequantize(w)^T, plus a fifth input (the addend, the product's shape and dtype) when there is
 * one: added to the product rounded to the output dtype, as a separate add would. */
class QuantizedMatvecCpu : public mx::UnaryPrimitive {
 public:
  QuantizedMatvecCpu(mx::Stream stream, int group, bool int8) : mx::UnaryPrimitive(stream), group_(group), int8_(int8) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const int k = static_cast<int>(inputs[0].shape(-1));
    const int n = static_cast<int>(out.shape(-1));
    const int rows = static_cast<int>(inputs[0].size() / k);
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out), rows, n, k, group = group_, int8 = int8_]() mutable {
      const auto addend = in.size() > 4 ? std::optional<mx::array>(in[4]) : std::nullopt;
      by_dtype(in[0].dtype(), [&]<typename T>() { run<T>(in[0], in[1], in[2], in[3], addend, out, rows, n, k, group, int8); });
    });
  }

  /** The product with x, scales, biases and out of element type T: inputs read in row-major order
   * (the weights always are; x may be a strided view), half-precision x widened to float once, the
   * float result rounded to T once (then the addend added, and rounded again). */
  template <typename T>
  static void run(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases, const std::optional<mx::array>& addend,
                  mx::array& out, int rows, int n, int k, int group, bool int8) {
    std::vector<T> xs, ss, bs, as;
    std::vector<uint32_t> ws;
    const T* xt = row_major<T>(x, xs);
    Problem<T> p{nullptr, row_major<uint32_t>(w, ws), row_major<T>(scales, ss), row_major<T>(biases, bs), nullptr, rows, n, k, group};
    const T* at = addend ? row_major<T>(*addend, as) : nullptr;
    T* o = out.data<T>();
    const size_t size = static_cast<size_t>(rows) * n;
    if constexpr (std::is_same_v<T, float>) {
      p.x = xt;
      p.out = o;
      matvec(p, int8);
      if (at)
        for (size_t i = 0; i < size; i++) o[i] += at[i];
    } else {
      std::vector<float> xf(xt, xt + static_cast<size_t>(rows) * k), of(size);
      p.x = xf.data();
      p.out = of.data();
      matvec(p, int8);
      if (at)
        for (size_t i = 0; i < size; i++) o[i] = static_cast<T>(static_cast<float>(static_cast<T>(of[i])) + static_cast<float>(at[i]));
      else
        for (size_t i = 0; i < size; i++) o[i] = static_cast<T>(of[i]);
    }
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("QuantizedMatvecCpu runs on the CPU only"); }

  const char* name() const override { return "QuantizedMatvecCpu"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantizedMatvecCpu&>(other);
    return group_ == o.group_ && int8_ == o.int8_;
  }

 private:
  int group_;
  bool int8_;
};

} // namespace

bool mlxb::own_matvec_off() {
  static const bool off = env_is("MLXB_QMV", "mlx");
  return off;
}

std::optional<mx::array> mlxb::qmv_cpu(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                       std::optional<int> group_size, std::optional<int> bits, const std::string& mode, bool int8,
                                       const std::optional<mx::array>& addend) {
  auto stream = mx::default_stream(mx::default_device());
  const int group = group_size.value_or(64);
  const auto t = x.dtype();
  static const bool int8_available = qmv::int8_available();
  const bool use_int8 = int8 && int8_available && qmv::int8_fits(group);
  const bool avx2 = has_avx2();
  const int max_rows = use_int8 || avx2 ? std::numeric_limits<int>::max() : SCALAR_MAX_ROWS;
  const bool fits = stream.device == mx::Device::cpu && matvec_fits(x, w, scales, biases, transpose, group, bits, mode, max_rows) && group % 8 == 0 &&
                    (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && scales.dtype() == t && biases->dtype() == t;
  if (!fits) return std::nullopt;
  auto shape = x.shape();
  shape.back() = w.shape(0);
  std::vector<mx::array> inputs{x, w, scales, *biases};
  if (addend) inputs.push_back(*addend);
  return mx::array(shape, t, std::make_shared<QuantizedMatvecCpu>(stream, group, use_int8), std::move(inputs));
}
