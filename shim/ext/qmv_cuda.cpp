// A CUDA kernel for the decode-time quantized matmul: x [..., K] (1 to 32 rows; float32, bfloat16 or
// float16) times a 4-bit affine weight [N, K] (packed uint32, scales and biases of x's dtype, group
// 32, 64 or 128), as mx::quantized_matmul(x, w, scales, biases, transpose=true). MLX's CUDA qmv
// reads the weights at ~0.8-1.0 TB/s on an H100 (one 8-byte load per lane in flight), which is most
// of a large model's decode step. This one (qmv_cuda_source.h) keeps several 16-byte loads per lane
// in flight. It is an MLX primitive (QuantizedMatvecCuda) built by qmv_cuda() in place of
// QuantizedMatmul when the inputs fit (and of the add after it, given an addend); its eval_gpu adds
// one kernel node to MLX's command encoder (MLX's CUDA graph) like MLX's own primitives. The kernel
// is compiled by NVRTC on first use; if that fails, MLX's op is used. MLXB_QMV=mlx turns it off (for
// comparisons). Given an RMS norm (the layer's input norm), the kernel normalizes x itself (one node
// fewer than MLX's rms_norm and then the product).
//
// Built only against MLX's CUDA libmlx.so (zig build -Dcuda=true), on the plumbing of cuda.h.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

#include "cuda.h"
#include "mlx/primitives.h"
#include "qmv_cuda_source.h"

using namespace mlxb;

namespace {

constexpr int MAX_ROWS = 32;
/** The most shared memory a normalizing variant takes for its rows of x (the default limit). */
constexpr size_t MAX_NORMED_BYTES = 48 * 1024;

/** The rows of the kernel variant serving x's rows: each count up to 8, then 16 and 32 (a batch's
 * decode step; fewer variants to compile, the weights still read once). */
int variant_rows(int rows) {
  return rows <= 8 ? rows : rows <= 16 ? 16 : 32;
}

/** The launch shape of a kernel variant: output rows per warp, chunk steps per load batch, warps
 * per block, warps sharing rows (splitting k; divides warps). */
struct Shape {
  int rows_per_warp, unroll, warps, split;
  auto key() const { return std::make_tuple(rows_per_warp, unroll, warps, split); }
};

/** Rows of x decide the shape. One row (decode): 4 output rows per warp, measured best of six
 * shapes on an H200 (2-2.6 TB/s for the 8B shapes' large matrices, bfloat16); a matrix of fewer than
 * SPLIT_BELOW rows and k of 2048 or more has 4 warps share each 4 rows (fewer rows leave too few
 * warps to keep loads in flight). More rows: fewer output rows per warp, so that no variant spills
 * registers (checked with ptxas -v for every rows count). MLXB_QMV_SHAPE="R,U,W[,S]" overrides it
 * (tuning; R and U 1-8, W 1-32, S dividing W, else ignored). */
constexpr int SPLIT_BELOW = 16384;
Shape shape_for(int rows, int n, int k) {
  static const char* forced = std::getenv("MLXB_QMV_SHAPE");
  if (forced) {
    Shape s{0, 0, 0, 1};
    // Bounded so that a block stays launchable (<= 1024 threads) and the registers plausible.
    int read = std::sscanf(forced, "%d,%d,%d,%d", &s.rows_per_warp, &s.unroll, &s.warps, &s.split);
    if (read >= 3 && s.rows_per_warp > 0 && s.rows_per_warp <= 8 && s.unroll > 0 && s.unroll <= 8 && s.warps > 0 && s.warps <= 32 && s.split > 0 &&
        s.warps % s.split == 0)
      return s;
  }
  if (rows == 1) return n < SPLIT_BELOW && k >= 2048 ? Shape{4, 1, 4, 4} : Shape{4, 1, 4, 1};
  if (rows == 2) return {2, 1, 4, 1};
  return {1, 1, 4, 1};
}

struct Kernel {
  CUfunc_st* function = nullptr;
  Shape shape{};
};

/** Compiles the variant for (dtype, group, rows, add, shape) for the device's architecture and loads
 * it; throws with NVRTC's log or the driver's error. */
CUfunc_st* compile(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, const Shape& shape) {
  std::string source = "#define DTYPE " + std::to_string(dtype_code(dtype)) + "\n#define GROUP " + std::to_string(group) + "\n#define ROWS " +
                       std::to_string(rows) + "\n#define R " + std::to_string(shape.rows_per_warp) + "\n#define U " + std::to_string(shape.unroll) +
                       "\n#define WARPS " + std::to_string(shape.warps) + "\n#define SPLIT " + std::to_string(shape.split) + "\n#define ADD " +
                       std::to_string(add ? 1 : 0) + "\n#define NORM " + std::to_string(norm ? 1 : 0) + "\n" + QMV_CUDA_SOURCE;
  return compile_kernel(device_index, source, "mlxb_qmv.cu", "mlxb_qmv");
}

/** The compiled variant for (dtype, group, rows, add, norm) and the shape for an [n, k] weight on the
 * device, compiled on first use; a null function when that fails (reported once on stderr; the
 * caller then uses MLX's op). */
Kernel kernel_for(int device_index, mx::Dtype dtype, int group, int rows, bool add, bool norm, int n, int k) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, int, bool, bool, std::tuple<int, int, int, int>>, Kernel> kernels;
  static bool warned = false;
  std::lock_guard<std::mutex> lock(mutex);
  const Shape shape = shape_for(rows, n, k);
  auto key = std::make_tuple(device_index, dtype_code(dtype), group, rows, add, norm, shape.key());
  if (auto it = kernels.find(key); it != kernels.end()) return it->second;
  Kernel kernel{nullptr, shape};
  try {
    kernel.function = compile(device_index, dtype, group, rows, add, norm, kernel.shape);
  } catch (const std::exception& e) {
    if (!warned) std::fprintf(stderr, "mlx-bun: the CUDA 4-bit matvec kernel is unavailable (%s); using MLX's quantized_matmul\n", e.what());
    warned = true;
  }
  kernels[key] = kernel;
  return kernel;
}

bool aligned16(const mx::array& a) {
  return reinterpret_cast<uintptr_t>(device_pointer(a)) % 16 == 0;
}

/** x @ dequantize(w)^T: inputs x, w, scales, biases, then the addend (the product's shape and dtype:
 * the kernel's ADD variant) and the norm weight (NORM: x is rms_norm(x, weight, eps) first) where
 * given. */
class QuantizedMatvecCuda : public mx::UnaryPrimitive {
 public:
  /** MLX's primitives for the same work where the kernel cannot read the inputs: its QuantizedMatmul,
   * Add (for an addend) and RMSNorm (for a norm). */
  struct Fallback {
    std::shared_ptr<mx::Primitive> product, add, norm;
  };

  QuantizedMatvecCuda(mx::Stream stream, int group, Kernel kernel, bool add, bool norm, float eps, Fallback fallback)
      : mx::UnaryPrimitive(stream), group_(group), kernel_(kernel), add_(add), norm_(norm), eps_(eps), fallback_(std::move(fallback)) {}

  void eval_cpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("QuantizedMatvecCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    const auto& x = inputs[0];
    auto& encoder = cu::get_command_encoder(stream());
    // Layouts the kernel does not read (strided or misaligned views) go to MLX's own primitives,
    // which copy them; in a decode graph the inputs are contiguous.
    bool plain = true;
    for (const auto& a : inputs) plain = plain && a.flags().row_contiguous;
    if (!plain || !aligned16(x) || !aligned16(inputs[1])) {
      eval_by_mlx(inputs, out, encoder);
      return;
    }
    out.set_data(device_buffer(stream().device.index, out.nbytes()));
    for (const auto& a : inputs) encoder.set_input_array(a);
    encoder.set_output_array(out);
    void* xp = device_pointer(x);
    void* wp = device_pointer(inputs[1]);
    void* sp = device_pointer(inputs[2]);
    void* bp = device_pointer(inputs[3]);
    void* ap = add_ ? device_pointer(inputs[4]) : nullptr;
    void* np = norm_ ? device_pointer(inputs.back()) : nullptr;
    float eps = eps_;
    void* op = device_pointer(out);
    int n = static_cast<int>(out.shape(-1));
    int k = static_cast<int>(x.shape(-1));
    int rows = static_cast<int>(x.size() / x.shape(-1));
    void* params[] = {&xp, &wp, &sp, &bp, &ap, &np, &eps, &op, &n, &k, &rows};
    const Shape& s = kernel_.shape;
    const unsigned rows_per_block = static_cast<unsigned>(s.rows_per_warp * s.warps / s.split);
    const auto normed_bytes = static_cast<uint32_t>(norm_ ? x.nbytes() : 0);
    encoder.add_kernel_node_raw(kernel_.function, dim3{(static_cast<unsigned>(n) + rows_per_block - 1) / rows_per_block, 1, 1},
                                dim3{static_cast<unsigned>(32 * s.warps), 1, 1}, dim3{1, 1, 1}, normed_bytes, params);
  }

  const char* name() const override { return "QuantizedMatvecCuda"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QuantizedMatvecCuda&>(other);
    return group_ == o.group_ && kernel_.function == o.kernel_.function && add_ == o.add_ && norm_ == o.norm_ && eps_ == o.eps_;
  }

 private:
  /** The same by MLX's primitives: the norm and the product into temporaries (kept until the GPU is
   * done with them), then the add; the last step writes `out`. */
  void eval_by_mlx(const std::vector<mx::array>& inputs, mx::array& out, cu::CommandEncoder& encoder) {
    std::vector<mx::array> product{inputs.begin(), inputs.begin() + 4};
    auto temporary = [&] { return mx::array(out.shape(), out.dtype(), nullptr, {}); };
    if (norm_) {
      std::vector<mx::array> normed{mx::array(inputs[0].shape(), inputs[0].dtype(), nullptr, {})};
      fallback_.norm->eval_gpu({inputs[0], inputs.back()}, normed);
      encoder.add_completed_handler([kept = normed[0]]() {});
      product[0] = normed[0];
    }
    if (!add_) {
      std::vector<mx::array> outputs{out}; // shares out's data: filling it fills out
      fallback_.product->eval_gpu(product, outputs);
      return;
    }
    std::vector<mx::array> unadded{temporary()};
    fallback_.product->eval_gpu(product, unadded);
    std::vector<mx::array> outputs{out};
    fallback_.add->eval_gpu({unadded[0], inputs[4]}, outputs);
    encoder.add_completed_handler([kept = unadded[0]]() {});
  }

  int group_;
  Kernel kernel_;
  bool add_, norm_;
  float eps_;
  Fallback fallback_;
};

/** MLX's primitives for the fallback (libmlx.so does not export their constructors, so they are
 * taken from the nodes mx::quantized_matmul, mx::add and mx::fast::rms_norm build), one set per
 * stream, group size and eps. */
QuantizedMatvecCuda::Fallback mlx_primitives(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases, int group,
                                             const std::optional<RmsNorm>& norm, const mx::Stream& stream) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, float>, QuantizedMatvecCuda::Fallback> primitives;
  std::lock_guard<std::mutex> lock(mutex);
  const float eps = norm ? norm->eps : 0.f;
  auto& p = primitives[{static_cast<int>(stream.device.type), stream.index, group, eps}];
  if (!p.product) {
    auto product = mx::quantized_matmul(x, w, scales, biases, true, group, 4, "affine");
    p.product = product.primitive_ptr();
    p.add = mx::add(product, product).primitive_ptr();
  }
  if (norm && !p.norm) p.norm = mx::fast::rms_norm(x, norm->weight, norm->eps).primitive_ptr();
  return p;
}

} // namespace

std::optional<mx::array> mlxb::qmv_cuda(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                        std::optional<int> group_size, std::optional<int> bits, const std::string& mode, const std::optional<mx::array>& addend,
                                        const std::optional<RmsNorm>& norm) {
  auto stream = mx::default_stream(mx::default_device());
  const int group = group_size.value_or(64);
  const auto t = x.dtype();
  const bool fits = stream.device == mx::Device::gpu && matvec_fits(x, w, scales, biases, transpose, group, bits, mode, MAX_ROWS) &&
                    (group == 32 || group == 64 || group == 128) && (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && scales.dtype() == t &&
                    biases->dtype() == t;
  if (!fits) return std::nullopt;
  // A norm's weight is x's last axis in x's dtype, and the block holds its rows normalized.
  if (norm && (norm->weight.ndim() != 1 || norm->weight.shape(0) != x.shape(-1) || norm->weight.dtype() != t || x.nbytes() > MAX_NORMED_BYTES))
    return std::nullopt;
  const int rows = static_cast<int>(x.size() / x.shape(-1));
  Kernel kernel = kernel_for(stream.device.index, t, group, variant_rows(rows), addend.has_value(), norm.has_value(), w.shape(0), x.shape(-1));
  if (!kernel.function) return std::nullopt;
  auto shape = x.shape();
  shape.back() = w.shape(0);
  auto fallback = mlx_primitives(x, w, scales, *biases, group, norm, stream);
  std::vector<mx::array> inputs{x, w, scales, *biases};
  if (addend) inputs.push_back(*addend);
  if (norm) inputs.push_back(norm->weight);
  return mx::array(
      shape, t, std::make_shared<QuantizedMatvecCuda>(stream, group, kernel, addend.has_value(), norm.has_value(), norm ? norm->eps : 0.f, std::move(fallback)),
      std::move(inputs));
}
