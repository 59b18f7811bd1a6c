// A CUDA kernel for the decode-time quantized matmul: x [..., K] (1 to 32 rows; float32, bfloat16 or
// float16) times a 4-bit affine weight [N, K] (packed uint32, scales and biases of x's dtype, group
// 32, 64 or 128), as mx::quantized_matmul(x, w, scales, biases, transpose=true). MLX's CUDA qmv
// reads the weights at ~0.8-1.0 TB/s on an H100 (one 8-byte load per lane in flight), which is most
// of a large model's decode step. This one (qmv_cuda_source.h) keeps several 16-byte loads per lane
// in flight; for bfloat16/float16 it sums on the tensor cores (mma.m16n8k16: every batch, and one
// row of a matrix with k >= 4096 or an lm_head's rows), so that its cost hardly grows with the rows
// of a batch's decode step. It is an MLX primitive (QuantizedMatvecCuda)
// built by qmv_cuda() in place of QuantizedMatmul when the inputs fit (and of the add after it, given an addend); its eval_gpu adds
// one kernel node to MLX's command encoder (MLX's CUDA graph) like MLX's own primitives; an x it
// does not read (strided, or not 16-byte aligned) is first copied by the shim's strided copy. Built by
// qmv_cuda_swiglu() for a fused gate/up weight, it writes silu(gate) * up of the product's halves
// (the PAIR variant, one bfloat16 row). The kernel
// is compiled by NVRTC on first use; if that fails, MLX's op is used. MLXB_QMV=mlx turns it off (for
// comparisons).
//
// Built only against MLX's CUDA libmlx.so (zig build -Dcuda=true), on the plumbing of cuda.h.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda.h"
#include "mlx/fast.h"
#include "norm_rope_row.h"
#include "mlx/primitives.h"
#include "qmv_cuda_source.h"

using namespace mlxb;

namespace {

constexpr int MAX_ROWS = 32;

/** The rows of the kernel variant serving x's rows (fewer variants to compile, the weights still
 * read once): for the tensor-core kernel 1, 2, 4, 8, 16 or 32 (its steps and fragments change only
 * there), for the other each count up to 8, then 16 and 32. */
int variant_rows(bool mma, int rows) {
  if (mma && rows > 2 && rows <= 8) return rows <= 4 ? 4 : 8;
  return rows <= 8 ? rows : rows <= 16 ? 16 : 32;
}

/** The launch shape of a kernel variant: output rows per warp, load batches (chunk steps, or groups
 * for the tensor-core kernel) issued together, warps per block, warps sharing rows (splitting k;
 * divides warps), and whether it is the tensor-core kernel (16 rows per warp). */
struct Shape {
  int rows_per_warp, unroll, warps, split;
  bool mma;
  bool one_wave = false; // see one_wave below
  auto key() const { return std::make_tuple(rows_per_warp, unroll, warps, split, mma, one_wave); }
};

/** Whether the environment variable `name` is "0": a switch that turns one of the kernel's forms off
 * (for comparisons; docs/gpu.md lists them). Read once by each caller's static. */
bool switched_off(const char* name) {
  return env_is(name, "0");
}

/** Whether x's dtype takes the tensor-core kernel (bfloat16/float16), unless MLXB_QMV_MMA=0
 * (comparisons). Its compile fails on GPUs before sm_80, which then get the other kernel. */
bool mma_dtype(mx::Dtype t) {
  static const bool off = switched_off("MLXB_QMV_MMA");
  return !off && (t == mx::bfloat16 || t == mx::float16);
}

/** Output rows from which a product is taken for an lm_head (a vocabulary's rows): its 16-row tiles
 * alone fill the GPU. */
constexpr int LARGE_N = 65536;

/** Whether an [n, k] product over `rows` rows of x takes the tensor-core kernel: every batch, and one
 * row (decode) where it measured faster than the float32 kernel (k >= 4096, or an lm_head); one row
 * of k < 4096 (a 0.6B-sized layer) was equal or slower (docs/performance.md). */
bool mma_fits(mx::Dtype t, int rows, int n, int k) {
  return mma_dtype(t) && (rows > 1 || k >= 4096 || n >= LARGE_N);
}

/** The tensor-core kernel's shape: a warp per 16 output rows; for an lm_head 8 warps a block each
 * over all of k (2 sharing rows at one row of x and k >= 4096), for the others 16 warps a block, 8
 * sharing each 16 rows (each taking every 8th step of k: a 4096-row matrix then has 256 blocks,
 * not 32), one row of x issuing up to 3 steps' loads together (all of a warp's at k = 12288).
 * Measured on an H200 (bench matvec, bfloat16, group 64, chained as a decode step's): e.g. one row,
 * 4096 x 4096 10.2-10.4 µs against 34.6 for a warp over all of k (32 blocks), 12.5 for the float32
 * kernel; 4096 x 12288 17.0 (88.3, 21.2); eight rows 6144 x 4096 18.3 (55.2, 70.7). */
Shape mma_shape(int rows, int n, int k, int group) {
  if (n >= LARGE_N) return {16, 2, 8, rows == 1 && k >= 4096 ? 2 : 1, true};
  const int split = 8;
  const int per_step = (rows == 1 ? 8 : rows == 2 ? 4 : rows <= 4 ? 2 : 1) * group; // the kernel's GPS groups
  const int steps = (k + per_step - 1) / per_step;
  return {16, rows == 1 ? std::min(3, std::max(1, (steps + split - 1) / split)) : 1, 16, split, true};
}

/** The shape of a variant: the tensor-core kernel's above; for the other (float32 x, one row of a
 * small matrix, GPUs before sm_80, MLXB_QMV_MMA=0) rows of x decide it. One row (decode): 4 output rows per warp, measured best
 * of six shapes on an H200 (2-2.6 TB/s for the 8B shapes' large matrices, bfloat16); a matrix of fewer than
 * SPLIT_BELOW rows and k of 2048 or more has 4 warps share each 4 rows (fewer rows leave too few
 * warps to keep loads in flight). More rows: fewer output rows per warp, so that no variant spills
 * registers (checked with ptxas -v for every rows count). MLXB_QMV_SHAPE="R,U,W[,S]" overrides it
 * (tuning; R and U 1-8, W 1-32, S dividing W, else ignored; R is 16 for the tensor-core kernel). */
constexpr int SPLIT_BELOW = 16384;
Shape shape_for(bool mma, int rows, int n, int k, int group) {
  static const char* forced = std::getenv("MLXB_QMV_SHAPE");
  if (forced) {
    Shape s{0, 0, 0, 1, mma};
    // Bounded so that a block stays launchable (<= 1024 threads) and the registers plausible.
    int read = std::sscanf(forced, "%d,%d,%d,%d", &s.rows_per_warp, &s.unroll, &s.warps, &s.split);
    if (mma) s.rows_per_warp = 16;
    if (read >= 3 && s.rows_per_warp > 0 && s.rows_per_warp <= 16 && s.unroll > 0 && s.unroll <= 8 && s.warps > 0 && s.warps <= 32 && s.split > 0 &&
        s.warps % s.split == 0)
      return s;
  }
  if (mma) return mma_shape(rows, n, k, group);
  if (rows == 1) return n < SPLIT_BELOW && k >= 2048 ? Shape{4, 1, 4, 4, false} : Shape{4, 1, 4, 1, false};
  if (rows == 2) return {2, 1, 4, 1, false};
  return {1, 1, 4, 1, false};
}

/** Whether a tensor-core product's grid for n weight rows fits the device's SMs at one block each,
 * unless MLXB_QMV_ONE_WAVE=0 (comparisons). Such a kernel is compiled with a minimum of one block an
 * SM in its launch bounds, where ptxas then gives a one-step product ~100 registers instead of 64
 * and issues more of a warp's weight loads before its first mma: two blocks an SM are of no use to a
 * grid that has at most one block for each (the 8B's o_proj: 128 blocks on an H200's 132 SMs). */
bool one_wave(int device_index, const Shape& shape, int n) {
  static const bool off = switched_off("MLXB_QMV_ONE_WAVE");
  if (off || !shape.mma) return false;
  const long long rows_per_block = static_cast<long long>(shape.rows_per_warp) * shape.warps / shape.split;
  return (n + rows_per_block - 1) / rows_per_block <= multiprocessors(device_index);
}

struct Kernel {
  CUfunc_st* function = nullptr;
  Shape shape{};
};

/** Compiles the variant for (dtype, group, rows, add, shape) for the device's architecture and loads
 * it; throws with NVRTC's log or the driver's error. */
CUfunc_st* compile(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, bool pair, bool qk_norm_rope, const Shape& shape) {
  std::string source = "#define DTYPE " + std::to_string(dtype_code(dtype)) + "\n#define GROUP " + std::to_string(group) + "\n#define ROWS " +
                       std::to_string(rows) + "\n#define R " + std::to_string(shape.rows_per_warp) + "\n#define U " + std::to_string(shape.unroll) +
                       "\n#define WARPS " + std::to_string(shape.warps) + "\n#define SPLIT " + std::to_string(shape.split) + "\n#define MMA " +
                       std::to_string(shape.mma ? 1 : 0) + "\n#define ADD " + std::to_string(add ? 1 : 0) + "\n#define NORM " + std::to_string(norm ? 1 : 0) +
                       "\n#define PAIR " + std::to_string(pair ? 1 : 0) + "\n#define QK_NORM_ROPE " + std::to_string(qk_norm_rope ? 1 : 0) +
                       "\n#define ONE_WAVE " + std::to_string(shape.one_wave ? 1 : 0) + "\n" +
                       (qk_norm_rope ? dtype_source(dtype) + NORM_ROPE_ROW_SOURCE : "") + QMV_CUDA_SOURCE;
  return compile_kernel(device_index, source, "mlxb_qmv.cu", qk_norm_rope ? "mlxb_qmv_qk_norm_rope" : "mlxb_qmv");
}

/** The compiled variant for (dtype, group, rows, add, norm) and the shape for an [n, k] weight on the
 * device, compiled on first use: the tensor-core kernel where it fits, else (or when its compile
 * fails) the float32 one; a null function when both fail (the caller then uses MLX's op). Each
 * kind's first failure is said on stderr. */
Kernel kernel_for(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, bool pair, int n, int k, bool qk_norm_rope = false) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, int, bool, bool, bool, bool, std::tuple<int, int, int, int, bool, bool>>, Kernel> kernels;
  static bool warned[3][2] = {}; // [plain, pair, q/k norm + rope][mma]: each kind's first failure said on stderr
  const int kind = qk_norm_rope ? 2 : pair ? 1 : 0;
  std::lock_guard<std::mutex> lock(mutex);
  for (bool mma : {true, false}) {
    if (mma && !mma_fits(dtype, rows, n, k)) continue;
    // PAIR and QK_NORM_ROPE take the kind the whole product takes (the same sums), or none.
    if ((pair || qk_norm_rope) && !mma && mma_fits(dtype, rows, n, k)) break;
    const int variant = variant_rows(mma, rows);
    Shape shape = shape_for(mma, rows, n, k, group);
    if (pair && shape.rows_per_warp % 2 != 0) break; // PAIR: half a warp's rows gate rows, half up rows
    shape.one_wave = !qk_norm_rope && one_wave(device_index, shape, n);
    auto key = std::make_tuple(device_index, dtype_code(dtype), group, variant, add, norm, pair, qk_norm_rope, shape.key());
    auto it = kernels.find(key);
    if (it == kernels.end()) {
      Kernel kernel{nullptr, shape};
      try {
        kernel.function = compile(device_index, dtype, group, variant, add, norm, pair, qk_norm_rope, kernel.shape);
      } catch (const std::exception& e) {
        if (kind == 1 && !warned[kind][mma])
          std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec writing an MLP's swiglu is unavailable (%s); using the product and MLX's swiglu\n", e.what());
        else if (kind == 2 && !warned[kind][mma])
          std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec writing q and k normed and rotated is unavailable (%s); using %s\n", e.what(),
                       mma ? "its float32 form" : "the product and the q/k norm + rope kernel");
        else if (!warned[kind][mma])
          std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec %s is unavailable (%s); using %s\n", mma ? "on the tensor cores" : "kernel", e.what(),
                       mma ? "its float32 form" : "MLX's quantized_matmul");
        warned[kind][mma] = true;
      }
      it = kernels.emplace(key, kernel).first;
    }
    if (it->second.function) return it->second;
  }
  return Kernel{};
}

bool aligned16(const mx::array& a) {
  return reinterpret_cast<uintptr_t>(device_pointer(a)) % 16 == 0;
}

/** A row-contiguous copy of a (at most 4 dimensions) in a buffer of the shim's (16-byte aligned),
 * made by the shim's strided copy on the stream. */
mx::array contiguous_copy(const mx::Stream& stream, const mx::array& a) {
  mx::array copy(a.shape(), a.dtype(), nullptr, {});
  copy.set_data(device_buffer(stream.device.index, a.nbytes()));
  auto as4 = [](const mx::array& v, bool row_major) {
    mx::Shape shape(4 - v.ndim(), 1);
    mx::Strides strides(4 - v.ndim(), 0);
    shape.insert(shape.end(), v.shape().begin(), v.shape().end());
    strides.insert(strides.end(), v.strides().begin(), v.strides().end());
    if (row_major)
      for (int d = 3; d >= 0; d--) strides[d] = d == 3 ? 1 : strides[d + 1] * shape[d + 1];
    mx::array view(shape, v.dtype(), nullptr, {});
    view.copy_shared_buffer(v, strides, v.flags(), v.data_size(), 0);
    return view;
  };
  strided_copy_cuda(stream, as4(a, false), as4(copy, true), 0);
  return copy;
}

/** x @ dequantize(w)^T, plus a fifth input (the addend, the product's shape and dtype) when there is
 * one (the kernel's ADD variant); with a sixth (a norm's weight: NORM), a second output, MLX's
 * rms_norm of the first with that weight and eps. */
class QuantizedMatvecCuda : public mx::Primitive {
 public:
  /** fallback: MLX's QuantizedMatmul for the same parameters; add: MLX's Add, for an addend; norm:
   * MLX's RMSNorm, for a norm; swiglu: MLX's compiled swiglu, for a PAIR kernel (w a gate's rows then
   * an up's: the output is silu(gate) * up). */
  QuantizedMatvecCuda(mx::Stream stream, int group, Kernel kernel, std::shared_ptr<mx::Primitive> fallback, std::shared_ptr<mx::Primitive> add,
                      std::shared_ptr<mx::Primitive> norm = nullptr, float eps = 0.f, std::shared_ptr<mx::Primitive> swiglu = nullptr)
      : mx::Primitive(stream),
        group_(group),
        kernel_(kernel),
        fallback_(std::move(fallback)),
        add_(std::move(add)),
        norm_(std::move(norm)),
        eps_(eps),
        swiglu_(std::move(swiglu)) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("QuantizedMatvecCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const bool add = inputs.size() > 4, norm = inputs.size() > 5;
    auto& out = outputs[0];
    auto& encoder = cu::get_command_encoder(stream());
    // An x the kernel does not read (strided, or not 16-byte aligned: MLX's product would fault on
    // it too) is copied first; in a decode graph it is contiguous.
    mx::array x = inputs[0];
    if ((!x.flags().row_contiguous || !aligned16(x)) && x.ndim() <= 4) {
      x = contiguous_copy(stream(), inputs[0]);
      keep_until_done(encoder, x);
    }
    // Other layouts the kernel does not read (a strided weight or addend: not made by the loader or
    // a model's graph) go to MLX's own primitives.
    bool plain = x.flags().row_contiguous && aligned16(x) && aligned16(inputs[1]);
    for (size_t i = 1; i < inputs.size(); i++) plain = plain && inputs[i].flags().row_contiguous;
    if (!plain) {
      std::vector<mx::array> product{x, inputs[1], inputs[2], inputs[3]};
      if (swiglu_) {
        // MLX's product of all 2n rows into a temporary (one row of x), then its swiglu of the halves.
        const int64_t n = out.shape(-1);
        auto whole_shape = out.shape();
        whole_shape.back() = static_cast<int>(2 * n);
        std::vector<mx::array> whole{mx::array(whole_shape, out.dtype(), nullptr, {})};
        fallback_->eval_gpu(product, whole);
        auto half = [&](int64_t offset) {
          mx::array h(out.shape(), out.dtype(), nullptr, {});
          share_elements(whole[0], h, offset);
          return h;
        };
        std::vector<mx::array> result{out};
        swiglu_->eval_gpu({half(0), half(n)}, result);
        keep_until_done(encoder, whole[0]);
        return;
      }
      if (!add) {
        std::vector<mx::array> first{out}; // shares out's data: filling it fills out
        fallback_->eval_gpu(product, first);
        return;
      }
      // The product into a temporary, kept until the GPU is done with it, then MLX's add.
      std::vector<mx::array> temporary{mx::array(out.shape(), out.dtype(), nullptr, {})};
      fallback_->eval_gpu(product, temporary);
      std::vector<mx::array> first{out};
      add_->eval_gpu({temporary[0], inputs[4]}, first);
      keep_until_done(encoder, temporary[0]);
      if (norm) {
        std::vector<mx::array> second{outputs[1]};
        norm_->eval_gpu({out, inputs[5]}, second);
      }
      return;
    }
    for (auto& o : outputs) o.set_data(device_buffer(stream().device.index, o.nbytes()));
    encoder.set_input_array(x);
    for (size_t i = 1; i < inputs.size(); i++) encoder.set_input_array(inputs[i]);
    for (const auto& o : outputs) encoder.set_output_array(o);
    void* xp = device_pointer(x);
    void* wp = device_pointer(inputs[1]);
    void* sp = device_pointer(inputs[2]);
    void* bp = device_pointer(inputs[3]);
    void* ap = add ? device_pointer(inputs[4]) : nullptr;
    void* op = device_pointer(out);
    void* nwp = norm ? device_pointer(inputs[5]) : nullptr;
    void* np = norm ? device_pointer(outputs[1]) : nullptr;
    int n = static_cast<int>(out.shape(-1));
    int k = static_cast<int>(x.shape(-1));
    int rows = static_cast<int>(x.size() / x.shape(-1));
    void* counter = norm ? counters_for(stream().device.index, 1) : nullptr;
    float eps = eps_;
    void* params[] = {&xp, &wp, &sp, &bp, &ap, &op, &n, &k, &rows, &nwp, &np, &counter, &eps};
    const Shape& s = kernel_.shape;
    // PAIR (swiglu_): a block's rows are half gate rows, half up rows: half as many outputs.
    const unsigned rows_per_block = static_cast<unsigned>(s.rows_per_warp * s.warps / s.split / (swiglu_ ? 2 : 1));
    encoder.add_kernel_node_raw(kernel_.function, dim3{(static_cast<unsigned>(n) + rows_per_block - 1) / rows_per_block, 1, 1},
                                dim3{static_cast<unsigned>(32 * s.warps), 1, 1}, dim3{1, 1, 1}, 0, params);
  }

  const char* name() const override { return "QuantizedMatvecCuda"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantizedMatvecCuda&>(other);
    return group_ == o.group_ && kernel_.function == o.kernel_.function && eps_ == o.eps_;
  }

 private:
  int group_;
  Kernel kernel_;
  std::shared_ptr<mx::Primitive> fallback_, add_, norm_;
  float eps_;
  std::shared_ptr<mx::Primitive> swiglu_;
};

/** MLX's QuantizedMatmul primitive for these inputs, and its Add (libmlx.so does not export their
 * constructors, so they are taken from the nodes mx::quantized_matmul and mx::add build), one per
 * stream and group size. */
std::pair<std::shared_ptr<mx::Primitive>, std::shared_ptr<mx::Primitive>> mlx_primitives(const mx::array& x, const mx::array& w, const mx::array& scales,
                                                                                         const mx::array& biases, int group, const mx::Stream& stream) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int>, std::pair<std::shared_ptr<mx::Primitive>, std::shared_ptr<mx::Primitive>>> primitives;
  std::lock_guard<std::mutex> lock(mutex);
  auto& p = primitives[{static_cast<int>(stream.device.type), stream.index, group}];
  if (!p.first) {
    auto product = mx::quantized_matmul(x, w, scales, biases, true, group, 4, "affine");
    p = {product.primitive_ptr(), mx::add(product, product).primitive_ptr()};
  }
  return p;
}

} // namespace

namespace {

/** The product's node (qmv_cuda, qmv_cuda_add_norm), or nullopt where the inputs do not fit the
 * kernels or none compiles. */
std::optional<Arrays> matvec_node(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                  std::optional<int> group_size, std::optional<int> bits, const std::string& mode, const std::optional<mx::array>& addend,
                                  const std::optional<mx::array>& norm_weight, float eps) {
  auto stream = mx::default_stream(mx::default_device());
  const int group = group_size.value_or(64);
  const auto t = x.dtype();
  const bool fits = stream.device == mx::Device::gpu && matvec_fits(x, w, scales, biases, transpose, group, bits, mode, MAX_ROWS) &&
                    (group == 32 || group == 64 || group == 128) && (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && scales.dtype() == t &&
                    biases->dtype() == t;
  if (!fits) return std::nullopt;
  const int rows = static_cast<int>(x.size() / x.shape(-1));
  const bool norm = norm_weight.has_value();
  Kernel kernel = kernel_for(stream.device.index, t, group, rows, addend.has_value(), norm, false, w.shape(0), x.shape(-1));
  if (!kernel.function) return std::nullopt;
  auto shape = x.shape();
  shape.back() = w.shape(0);
  auto [fallback, add] = mlx_primitives(x, w, scales, *biases, group, stream);
  std::vector<mx::array> inputs{x, w, scales, *biases};
  if (addend) inputs.push_back(*addend);
  if (!norm)
    return Arrays{mx::array(shape, t, std::make_shared<QuantizedMatvecCuda>(stream, group, kernel, std::move(fallback), std::move(add)), std::move(inputs))};
  inputs.push_back(*norm_weight);
  make_counter_ring(stream.device.index, stream);
  auto rms = mx::fast::rms_norm(*norm_weight, *norm_weight, eps).primitive_ptr(); // MLX's RMSNorm, for layouts the kernel does not read
  auto node = std::make_shared<QuantizedMatvecCuda>(stream, group, kernel, std::move(fallback), std::move(add), std::move(rms), eps);
  return mx::array::make_arrays({shape, shape}, {t, t}, std::move(node), std::move(inputs));
}

/** The host's copy of the kernel's QkParams (qmv_cuda_source.h, norm_rope_row.h's RopeParams). */
struct RopeParams {
  long long freq_stride;
  int dims, traditional, has_freqs;
  float scale, log2_base;
};
struct QkParams {
  RopeParams rope;
  int q_heads, k_heads, head_dim;
  float eps;
};

/** A fused q/k/v projection of one row whose q and k heads come out normed and rotated (the kernel's
 * QK_NORM_ROPE variant): inputs x, w, scales, biases, q_weight, k_weight, offset (int32, one value)
 * and, with periods, the periods (float32 [dims / 2]); outputs q [1, q_heads, 1, D], k and v
 * [1, k_heads, 1, D], v a view of the product's last rows (the product's buffer, whose q and k rows
 * only the kernel reads). Made for the dtypes and shapes the kernel reads (qmv_cuda_qk_norm_rope); an
 * input laid out otherwise (known only once evaluated) is copied at evaluation. */
class QkvNormRopeCuda : public mx::Primitive {
 public:
  QkvNormRopeCuda(mx::Stream stream, Kernel kernel, QkParams params) : mx::Primitive(stream), kernel_(kernel), params_(params) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("QkvNormRopeCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const int device = stream().device.index;
    auto& encoder = cu::get_command_encoder(stream());
    // An input the kernel does not read as it is (strided, or x or w not 16-byte aligned: none in a
    // decode graph) is copied first.
    std::vector<mx::array> in(inputs);
    for (size_t i = 0; i < in.size(); i++) {
      if (in[i].flags().row_contiguous && (i > 1 || aligned16(in[i]))) continue;
      in[i] = contiguous_copy(stream(), inputs[i]);
      keep_until_done(encoder, in[i]);
    }
    const auto& x = in[0];
    const auto& w = in[1];
    int n = static_cast<int>(w.shape(0));
    int k = static_cast<int>(x.shape(-1));
    mx::array product({n}, outputs[0].dtype(), nullptr, {});
    product.set_data(device_buffer(device, product.nbytes()));
    outputs[0].set_data(device_buffer(device, outputs[0].nbytes()));
    outputs[1].set_data(device_buffer(device, outputs[1].nbytes()));
    share_elements(product, outputs[2], static_cast<int64_t>(params_.q_heads + params_.k_heads) * params_.head_dim);
    for (const auto& a : in) encoder.set_input_array(a);
    encoder.set_output_array(product);
    encoder.set_output_array(outputs[0]);
    encoder.set_output_array(outputs[1]);
    void* xp = device_pointer(x);
    void* wp = device_pointer(w);
    void* sp = device_pointer(in[2]);
    void* bp = device_pointer(in[3]);
    void* op = device_pointer(product);
    void* wqp = device_pointer(in[4]);
    void* wkp = device_pointer(in[5]);
    void* offp = device_pointer(in[6]);
    void* fp = in.size() > 7 ? device_pointer(in[7]) : nullptr;
    void* qp = device_pointer(outputs[0]);
    void* kp = device_pointer(outputs[1]);
    void* counters = counters_for(device, params_.q_heads + params_.k_heads);
    QkParams p = params_;
    p.rope.freq_stride = in.size() > 7 ? in[7].strides(0) : 0;
    void* params[] = {&xp, &wp, &sp, &bp, &op, &n, &k, &wqp, &wkp, &offp, &fp, &qp, &kp, &counters, &p};
    const Shape& s = kernel_.shape;
    const unsigned rows_per_block = static_cast<unsigned>(s.rows_per_warp * s.warps / s.split);
    encoder.add_kernel_node_raw(kernel_.function, dim3{(static_cast<unsigned>(n) + rows_per_block - 1) / rows_per_block, 1, 1},
                                dim3{static_cast<unsigned>(32 * s.warps), 1, 1}, dim3{1, 1, 1}, 0, params);
  }

  const char* name() const override { return "QkvNormRopeCuda"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QkvNormRopeCuda&>(other);
    const auto &a = params_, &b = o.params_;
    return kernel_.function == o.kernel_.function && a.q_heads == b.q_heads && a.k_heads == b.k_heads && a.head_dim == b.head_dim && a.eps == b.eps &&
           a.rope.dims == b.rope.dims && a.rope.traditional == b.rope.traditional && a.rope.has_freqs == b.rope.has_freqs && a.rope.scale == b.rope.scale &&
           a.rope.log2_base == b.rope.log2_base;
  }

 private:
  Kernel kernel_;
  QkParams params_;
};

} // namespace

std::optional<mx::array> mlxb::qmv_cuda(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                        std::optional<int> group_size, std::optional<int> bits, const std::string& mode,
                                        const std::optional<mx::array>& addend) {
  auto made = matvec_node(x, w, scales, biases, transpose, group_size, bits, mode, addend, std::nullopt, 0.f);
  if (!made) return std::nullopt;
  return (*made)[0];
}

std::optional<Arrays> mlxb::qmv_cuda_add_norm(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                                              std::optional<int> group_size, std::optional<int> bits, const std::string& mode, const mx::array& addend,
                                              const mx::array& norm_weight, float eps) {
  static const bool off = switched_off("MLXB_QMV_NORM");
  if (off) return std::nullopt; // MLXB_QMV_NORM=0: the product, then MLX's rms_norm (comparisons)
  auto shape = x.shape();
  shape.back() = w.shape(0);
  const auto t = x.dtype();
  // The addend exactly the product's shape and dtype, the norm's weight one value a column.
  if (addend.shape() != shape || addend.dtype() != t || norm_weight.dtype() != t || norm_weight.ndim() != 1 || norm_weight.shape(0) != w.shape(0))
    return std::nullopt;
  return matvec_node(x, w, scales, biases, true, group_size, bits, mode, addend, norm_weight, eps);
}

std::optional<mx::array> mlxb::qmv_cuda_swiglu(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                                               std::optional<int> group_size, std::optional<int> bits, const std::string& mode) {
  static const bool off = switched_off("MLXB_QMV_SWIGLU");
  // MLXB_QMV_SWIGLU=0: the product, split, then MLX's swiglu (comparisons). PAIR: one bfloat16 row.
  auto stream = mx::default_stream(mx::default_device());
  const int group = group_size.value_or(64);
  const auto t = x.dtype();
  if (off || t != mx::bfloat16 || x.size() != x.shape(-1) || w.ndim() != 2 || w.shape(0) % 2 != 0) return std::nullopt;
  const bool fits = stream.device == mx::Device::gpu && matvec_fits(x, w, scales, biases, true, group, bits, mode, MAX_ROWS) &&
                    (group == 32 || group == 64 || group == 128) && scales.dtype() == t && biases.dtype() == t;
  if (!fits) return std::nullopt;
  // The kind and shape the whole product would take (the same steps in the same order for each row,
  // so the same sums); the kernel then writes the n = rows / 2 values of the swiglu.
  Kernel kernel = kernel_for(stream.device.index, t, group, 1, false, false, true, static_cast<int>(w.shape(0)), x.shape(-1));
  if (!kernel.function) return std::nullopt;
  auto shape = x.shape();
  shape.back() = static_cast<int>(w.shape(0) / 2);
  auto [fallback, add] = mlx_primitives(x, w, scales, biases, group, stream);
  // MLX's swiglu, for layouts the kernel does not read (two arrays: one array twice is one input of
  // the compiled function).
  auto swiglu = compiled_swiglu(mx::zeros(shape, t), mx::zeros(shape, t)).primitive_ptr();
  auto node = std::make_shared<QuantizedMatvecCuda>(stream, group, kernel, std::move(fallback), std::move(add), nullptr, 0.f, std::move(swiglu));
  return mx::array(shape, t, std::move(node), {x, w, scales, biases});
}

std::optional<Arrays> mlxb::qmv_cuda_qk_norm_rope(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                                                  std::optional<int> group_size, std::optional<int> bits, const std::string& mode,
                                                  const std::vector<mx::Shape>& shapes, const mx::array& q_weight, const mx::array& k_weight, float eps,
                                                  int dims, bool traditional, std::optional<float> base, float scale, const mx::array& offset,
                                                  const std::optional<mx::array>& periods) {
  static const bool off = switched_off("MLXB_QMV_QK_NORM_ROPE");
  // MLXB_QMV_QK_NORM_ROPE=0: the product's parts, then the q/k norm + rope kernel (comparisons).
  auto stream = mx::default_stream(mx::default_device());
  const int group = group_size.value_or(64);
  const auto t = x.dtype();
  if (off || stream.device != mx::Device::gpu || x.size() != x.shape(-1) || shapes.size() != 3 || w.ndim() != 2) return std::nullopt;
  // q [1, Hq, 1, D], k and v [1, Hk, 1, D]: the product's rows, a head's D at a time.
  for (const auto& s : shapes)
    if (s.size() != 4 || s[0] != 1 || s[2] != 1 || s[3] != shapes[0][3]) return std::nullopt;
  const int q_heads = shapes[0][1], k_heads = shapes[1][1], D = shapes[0][3];
  if (shapes[2][1] != k_heads || static_cast<int64_t>(q_heads + 2 * k_heads) * D != w.shape(0)) return std::nullopt;
  auto vector = [&](const mx::array& a, mx::Dtype dtype, int size) { return a.dtype() == dtype && a.ndim() == 1 && a.shape(0) == size; };
  const bool fits = matvec_fits(x, w, scales, biases, true, group, bits, mode, 1) && (group == 32 || group == 64 || group == 128) &&
                    (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && scales.dtype() == t && biases.dtype() == t && D % 2 == 0 && D <= 512 &&
                    dims > 0 && dims % 2 == 0 && dims <= D && vector(q_weight, t, D) && vector(k_weight, t, D) && offset.dtype() == mx::int32 &&
                    offset.size() == 1 && (base.has_value() != periods.has_value()) && (!periods || vector(*periods, mx::float32, dims / 2));
  if (!fits) return std::nullopt;
  Kernel kernel = kernel_for(stream.device.index, t, group, 1, false, false, false, static_cast<int>(w.shape(0)), x.shape(-1), true);
  // The epilogue's row code takes D / 2 threads (in warps) of the block.
  if (!kernel.function || 32 * kernel.shape.warps < std::max(32, (D / 2 + 31) / 32 * 32)) return std::nullopt;
  make_counter_ring(stream.device.index, stream);
  QkParams p{};
  p.rope.dims = dims, p.rope.traditional = traditional ? 1 : 0, p.rope.has_freqs = periods ? 1 : 0;
  p.rope.scale = scale, p.rope.log2_base = std::log2(base.value_or(1.f));
  p.q_heads = q_heads, p.k_heads = k_heads, p.head_dim = D, p.eps = eps;
  std::vector<mx::array> inputs{x, w, scales, biases, q_weight, k_weight, offset};
  if (periods) inputs.push_back(*periods);
  return mx::array::make_arrays(shapes, {t, t, t}, std::make_shared<QkvNormRopeCuda>(stream, kernel, p), std::move(inputs));
}
