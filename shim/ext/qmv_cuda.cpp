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
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda.h"
#include "mlx/fast.h"
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

/** Whether x's dtype takes the tensor-core kernel (bfloat16/float16), unless MLXB_QMV_MMA=0
 * (comparisons). Its compile fails on GPUs before sm_80, which then get the other kernel. */
bool mma_dtype(mx::Dtype t) {
  static const bool off = [] {
    const char* v = std::getenv("MLXB_QMV_MMA");
    return v && std::string(v) == "0";
  }();
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
  static const bool off = [] {
    const char* v = std::getenv("MLXB_QMV_ONE_WAVE");
    return v && std::string(v) == "0";
  }();
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
CUfunc_st* compile(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, bool pair, const Shape& shape) {
  std::string source = "#define DTYPE " + std::to_string(dtype_code(dtype)) + "\n#define GROUP " + std::to_string(group) + "\n#define ROWS " +
                       std::to_string(rows) + "\n#define R " + std::to_string(shape.rows_per_warp) + "\n#define U " + std::to_string(shape.unroll) +
                       "\n#define WARPS " + std::to_string(shape.warps) + "\n#define SPLIT " + std::to_string(shape.split) + "\n#define MMA " +
                       std::to_string(shape.mma ? 1 : 0) + "\n#define ADD " + std::to_string(add ? 1 : 0) + "\n#define NORM " + std::to_string(norm ? 1 : 0) +
                       "\n#define PAIR " + std::to_string(pair ? 1 : 0) + "\n#define ONE_WAVE " + std::to_string(shape.one_wave ? 1 : 0) + "\n" +
                       QMV_CUDA_SOURCE;
  return compile_kernel(device_index, source, "mlxb_qmv.cu", "mlxb_qmv");
}

/** The compiled variant for (dtype, group, rows, add, norm) and the shape for an [n, k] weight on the
 * device, compiled on first use: the tensor-core kernel where it fits, else (or when its compile
 * fails) the float32 one; a null function when both fail (the caller then uses MLX's op). Each
 * kind's first failure is said on stderr. */
Kernel kernel_for(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, bool pair, int n, int k) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, int, bool, bool, bool, std::tuple<int, int, int, int, bool, bool>>, Kernel> kernels;
  static bool warned[2][2] = {}; // [pair][mma]: each kind's first failure said on stderr
  std::lock_guard<std::mutex> lock(mutex);
  for (bool mma : {true, false}) {
    if (mma && !mma_fits(dtype, rows, n, k)) continue;
    // PAIR takes the kind the whole product takes (the same sums), or none.
    if (pair && !mma && mma_fits(dtype, rows, n, k)) break;
    const int variant = variant_rows(mma, rows);
    Shape shape = shape_for(mma, rows, n, k, group);
    if (pair && shape.rows_per_warp % 2 != 0) break; // PAIR: half a warp's rows gate rows, half up rows
    shape.one_wave = one_wave(device_index, shape, n);
    auto key = std::make_tuple(device_index, dtype_code(dtype), group, variant, add, norm, pair, shape.key());
    auto it = kernels.find(key);
    if (it == kernels.end()) {
      Kernel kernel{nullptr, shape};
      try {
        kernel.function = compile(device_index, dtype, group, variant, add, norm, pair, kernel.shape);
      } catch (const std::exception& e) {
        if (pair && !warned[pair][mma])
          std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec writing an MLP's swiglu is unavailable (%s); using the product and MLX's swiglu\n", e.what());
        else if (!warned[pair][mma])
          std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec %s is unavailable (%s); using %s\n", mma ? "on the tensor cores" : "kernel", e.what(),
                       mma ? "its float32 form" : "MLX's quantized_matmul");
        warned[pair][mma] = true;
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
      x = contiguous_copy(inputs[0]);
      encoder.add_completed_handler([kept = x]() {});
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
        encoder.add_completed_handler([kept = whole[0]]() {});
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
      encoder.add_completed_handler([kept = temporary[0]]() {});
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

  /** A row-contiguous copy of a (at most 4 dimensions) in a buffer of the shim's (16-byte aligned),
   * made by the shim's strided copy on this stream. */
  mx::array contiguous_copy(const mx::array& a) {
    mx::array copy(a.shape(), a.dtype(), nullptr, {});
    copy.set_data(device_buffer(stream().device.index, a.nbytes()));
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
    strided_copy_cuda(stream(), as4(a, false), as4(copy, true), 0);
    return copy;
  }

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
  static const bool off = [] {
    const char* v = std::getenv("MLXB_QMV_NORM");
    return v && std::string(v) == "0";
  }();
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
  static const bool off = [] {
    const char* v = std::getenv("MLXB_QMV_SWIGLU");
    return v && std::string(v) == "0";
  }();
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
