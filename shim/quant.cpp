// Quantize / dequantize / quantized_matmul.
#include "internal.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {
/** Rows of x from which a CPU product that the shim's kernel did not take dequantizes the weight. */
constexpr int64_t CPU_DEQUANTIZE_ROWS = 33;
/** Rows of x from which a GPU product of affine weights is a matmul over the weight dequantized for
 * the call (a prompt): MLX's CUDA quantized matmul kernels compute prompt-sized products at about a
 * tenth of the GPU's matmul rate, the dequantized weight costs a few bytes per weight value read and
 * written once, and from about this many rows cuBLAS's matmul more than makes up for it. */
constexpr int64_t GPU_DEQUANTIZE_ROWS = 128;

std::optional<int> positive(int v) {
  if (v <= 0) return std::nullopt;
  return v;
}
std::string mode_of(const char* mode) {
  return mode ? mode : "affine";
}

/** x @ dequantize(w)(^T) (+ addend): one of the shim's matvec kernels where they fit (the addend
 * added in the kernel when it has the product's shape and dtype), else MLX's quantized_matmul (and
 * add). MLX's kernels divide by zero on an empty x or w (no rows, no outputs, or an empty inner axis),
 * so then the product is zeros of the shape MLX infers (an empty sum is 0), without its kernel. */
mx::array quantized_product(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool t,
                            std::optional<int> g, std::optional<int> b, const std::string& m, bool int8,
                            const std::optional<mx::array>& addend = std::nullopt) {
  auto plus = [&](mx::array y) { return addend ? mx::add(y, *addend) : y; };
  if (x.size() == 0 || w.size() == 0) {
    auto shaped = mx::quantized_matmul(x, w, scales, biases, t, g, b, m); // validates and infers the shape
    return plus(mx::zeros(shaped.shape(), shaped.dtype()));
  }
  if (biases) {
    // The addend goes into the kernel when it is exactly the product's shape and dtype.
    auto shape = x.shape();
    shape.back() = w.shape(0);
    bool inside = t && addend && addend->shape() == shape && addend->dtype() == x.dtype();
    auto kernel_addend = inside ? addend : std::nullopt;
#ifdef MLXB_CUDA
    auto ours = mx::default_device() == mx::Device::gpu ? qmv_cuda(x, w, scales, biases, t, g, b, m, kernel_addend)
                                                        : qmv_cpu(x, w, scales, biases, t, g, b, m, int8, kernel_addend);
#else
    auto ours = qmv_cpu(x, w, scales, biases, t, g, b, m, int8, kernel_addend);
#endif
    if (ours) return inside ? *ours : plus(*ours);
  }
  // MLX's CPU quantized matmul is a plain loop (2 GFLOP/s on this project's 2-core EPYC; 8.4 s at 512
  // rows x 4096 x 4096): where the shim's kernel did not take a prompt-sized x (no AVX2), the product
  // is a BLAS matmul over the weight dequantized for the call.
  const int64_t rows = x.size() / x.shape(-1);
  if (mx::default_device() == mx::Device::cpu && biases && rows >= CPU_DEQUANTIZE_ROWS) {
    auto dense = mlxb::dequantize(w, scales, biases, g, b, m, std::nullopt);
    return plus(mx::matmul(x, t ? mx::swapaxes(dense, -1, -2) : dense));
  }
#ifdef MLXB_CUDA
  // A prompt (GPU_DEQUANTIZE_ROWS), and where MLX 0.32's Hopper kernel would run (qmm_sm90: affine,
  // transposed, inner axis a multiple of 64 and at most one group; it gave relative errors near 1 on
  // an H200 for rows 9 and 33, inner 64, group 64): matmul over the dequantized weight.
  int k = x.shape(-1);
  if (mx::default_device() == mx::Device::gpu && biases && t && m == "affine" && (rows >= GPU_DEQUANTIZE_ROWS || (k % 64 == 0 && k <= g.value_or(64)))) {
    return plus(mx::matmul(x, mx::swapaxes(mx::dequantize(w, scales, biases, g, b, m, std::nullopt, x.dtype()), -1, -2)));
  }
#endif
  return plus(mx::quantized_matmul(x, w, scales, biases, t, g, b, m));
}

/** quantized_product(x, ..., addend) and rms_norm of it (norm_weight, eps): on the GPU of a CUDA build
 * one node of the shim's matvec where it fits (its last warp writes the norm), else the two ops. */
Arrays quantized_product_add_norm(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool t,
                                  std::optional<int> g, std::optional<int> b, const std::string& m, bool int8, const mx::array& addend,
                                  const mx::array& norm_weight, float eps) {
#ifdef MLXB_CUDA
  if (mx::default_device() == mx::Device::gpu && biases && t && x.size() > 0 && w.size() > 0) {
    if (auto made = qmv_cuda_add_norm(x, w, scales, *biases, g, b, m, addend, norm_weight, eps)) return *made;
  }
#endif
  auto sum = quantized_product(x, w, scales, biases, t, g, b, m, int8, addend);
  return {sum, rms_norm(sum, norm_weight, eps)};
}

/** quantized_product(x, ...) as arrays of `shapes` (in order, their sizes adding up to the
 * product's): for one row of x, one SplitProduct node over the product's own; else the product
 * split along its last axis and each part reshaped. */
Arrays quantized_product_split(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool t,
                               std::optional<int> g, std::optional<int> b, const std::string& m, bool int8, const std::vector<mx::Shape>& shapes) {
  auto product = quantized_product(x, w, scales, biases, t, g, b, m, int8);
  const int64_t width = product.shape(-1), rows = product.size() / std::max<int64_t>(width, 1);
  mx::Shape cuts;
  int64_t at = 0;
  for (size_t i = 0; i < shapes.size(); i++) {
    int64_t size = 1;
    for (int d : shapes[i]) size *= d;
    if (rows == 0 || size % rows != 0) throw ArgumentError("output " + std::to_string(i) + " does not take whole rows of the product");
    at += size / rows;
    if (i + 1 < shapes.size()) cuts.push_back(static_cast<int>(at));
  }
  if (at != width) throw ArgumentError("the outputs take " + std::to_string(at) + " of the product's " + std::to_string(width) + " columns per row");
  if (rows == 1 && product.has_primitive() && x.size() > 0) {
    std::vector<int64_t> offsets{0};
    for (int c : cuts) offsets.push_back(c);
    return split_product(product, shapes, std::move(offsets));
  }
  auto parts = mx::split(product, cuts, -1);
  for (size_t i = 0; i < parts.size(); i++) parts[i] = mx::reshape(parts[i], shapes[i]);
  return parts;
}

/** silu(gate) * up where [gate, up] = quantized_product(x, w, ...) split in halves along its last axis
 * (w a fused gate/up weight): on the GPU of a CUDA build one node of the shim's matvec where it fits
 * (qmv_cuda_swiglu), else the product's halves (quantized_product_split), then swiglu (as fast_swiglu makes it). */
mx::array quantized_product_swiglu(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool t,
                                   std::optional<int> g, std::optional<int> b, const std::string& m, bool int8) {
#ifdef MLXB_CUDA
  if (mx::default_device() == mx::Device::gpu && biases && t && x.size() > 0 && w.size() > 0) {
    if (auto made = qmv_cuda_swiglu(x, w, scales, *biases, g, b, m)) return *made;
  }
#endif
  if (w.ndim() != 2 || w.shape(0) % 2 != 0)
    throw ArgumentError("the weight's " + std::to_string(w.ndim() == 2 ? w.shape(0) : 0) + " rows are not a gate's and an up's alike");
  auto half = x.shape();
  half.back() = w.shape(0) / 2;
  // The halves as quantized_product_split makes them (for one row, one node whose outputs are views).
  auto halves = quantized_product_split(x, w, scales, biases, t, g, b, m, int8, {half, half});
  return swiglu(halves[0], halves[1], [&] { return compiled_swiglu(halves[0], halves[1]); });
}

/** q, k, v = quantized_product_split(x, w, ..., shapes) (w a fused q/k/v projection), q and k then
 * normed and rotated (qk_norm_rope): on the GPU of a CUDA build one node of the shim's matvec where it
 * fits (qmv_cuda_qk_norm_rope: one row of x, the heads' shapes), else those ops. */
Arrays quantized_product_qk_norm_rope(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool t,
                                      std::optional<int> g, std::optional<int> b, const std::string& m, bool int8, const std::vector<mx::Shape>& shapes,
                                      const mx::array& q_weight, const mx::array& k_weight, float eps, int dims, bool traditional, std::optional<float> base,
                                      float scale, const mx::array& offset, const std::optional<mx::array>& periods) {
  if (shapes.size() != 3) throw ArgumentError("quantized_matmul_qk_norm_rope: " + std::to_string(shapes.size()) + " output shapes, not q's, k's and v's");
#ifdef MLXB_CUDA
  if (mx::default_device() == mx::Device::gpu && biases && t && !int8 && x.size() > 0 && w.size() > 0) {
    if (auto made = qmv_cuda_qk_norm_rope(x, w, scales, *biases, g, b, m, shapes, q_weight, k_weight, eps, dims, traditional, base, scale, offset, periods))
      return *made;
  }
#endif
  auto parts = quantized_product_split(x, w, scales, biases, t, g, b, m, int8, shapes);
  auto qk = qk_norm_rope(parts[0], parts[1], q_weight, k_weight, eps, dims, traditional, base, scale, offset, periods);
  return {qk[0], qk[1], parts[2]};
}
} // namespace

extern "C" {

int mlx_quantize(mlx_array* wq, mlx_array* scales, mlx_array* biases, mlx_array w, int group_size, int bits, const char* mode) {
  return guard([&] {
    if (wq == nullptr || scales == nullptr || biases == nullptr) throw ArgumentError("out-pointer is null");
    auto parts = mx::quantize(arr(w, "w"), positive(group_size), positive(bits), mode_of(mode));
    put(wq, parts.at(0));
    put(scales, parts.at(1));
    if (parts.size() > 2) {
      put(biases, parts.at(2));
    } else {
      *biases = nullptr;
    }
  });
}

int mlx_dequantize(mlx_array* out, mlx_array wq, mlx_array scales, mlx_array biases, int group_size, int bits, const char* mode, int dtype) {
  return guard([&] {
    arr(wq, "wq"), arr(scales, "scales");
    std::optional<mx::Dtype> dt;
    if (dtype >= 0) dt = to_dtype(dtype);
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    if (biases == nullptr)
      return emit1(out, {wq, scales}, [=](const Arrays& a) { return mx::dequantize(a[0], a[1], std::nullopt, g, b, m, std::nullopt, dt); });
    emit1(out, {wq, scales, biases}, [=](const Arrays& a) { return dequantize(a[0], a[1], a[2], g, b, m, dt); });
  });
}

int mlx_quantized_matmul(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits,
                         const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0, i8 = int8_activations != 0;
    if (biases == nullptr)
      return emit1(out, {x, wq, scales}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], std::nullopt, t, g, b, m, i8); });
    emit1(out, {x, wq, scales, biases}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], a[3], t, g, b, m, i8); });
  });
}

int mlx_quantized_matmul_add(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, mlx_array addend, int transpose, int group_size,
                             int bits, const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales"), arr(addend, "addend");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0, i8 = int8_activations != 0;
    if (biases == nullptr) {
      return emit1(out, {x, wq, scales, addend}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], std::nullopt, t, g, b, m, i8, a[3]); });
    }
    emit1(out, {x, wq, scales, biases, addend}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], a[3], t, g, b, m, i8, a[4]); });
  });
}

int mlx_quantized_matmul_add_norm(mlx_array* outs, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, mlx_array addend, mlx_array norm_weight,
                                  float eps, int transpose, int group_size, int bits, const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales"), arr(addend, "addend"), arr(norm_weight, "norm_weight");
    if (outs == nullptr) throw ArgumentError("quantized_matmul_add_norm: out-pointers are null");
    if (transpose == 0) throw ArgumentError("quantized_matmul_add_norm: transpose must be 1 (the Linear layout)");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0, i8 = int8_activations != 0;
    std::vector<mlx_array*> outputs{&outs[0], &outs[1]};
    if (biases == nullptr) {
      return emit(outputs, {x, wq, scales, addend, norm_weight},
                  [=](const Arrays& a) { return quantized_product_add_norm(a[0], a[1], a[2], std::nullopt, t, g, b, m, i8, a[3], a[4], eps); });
    }
    emit(outputs, {x, wq, scales, biases, addend, norm_weight},
         [=](const Arrays& a) { return quantized_product_add_norm(a[0], a[1], a[2], a[3], t, g, b, m, i8, a[4], a[5], eps); });
  });
}

int mlx_quantized_matmul_swiglu(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits,
                                const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales");
    if (transpose == 0) throw ArgumentError("quantized_matmul_swiglu: transpose must be 1 (the Linear layout)");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool i8 = int8_activations != 0;
    if (biases == nullptr)
      return emit1(out, {x, wq, scales}, [=](const Arrays& a) { return quantized_product_swiglu(a[0], a[1], a[2], std::nullopt, true, g, b, m, i8); });
    emit1(out, {x, wq, scales, biases}, [=](const Arrays& a) { return quantized_product_swiglu(a[0], a[1], a[2], a[3], true, g, b, m, i8); });
  });
}

int mlx_quantized_matmul_split(mlx_array* outs, int count, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, const int32_t* ranks,
                               const int32_t* dims, int transpose, int group_size, int bits, const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales");
    if (outs == nullptr || count < 1) throw ArgumentError("quantized_matmul_split: out-pointers are null or fewer than one");
    auto rank = ints_of(ranks, count);
    std::vector<mx::Shape> shapes;
    size_t at = 0;
    for (int r : rank) {
      if (r < 0) throw ArgumentError("quantized_matmul_split: a negative rank");
      shapes.push_back(dims_of(dims + at, r));
      at += r;
    }
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0, i8 = int8_activations != 0;
    std::vector<mlx_array*> outputs;
    for (int i = 0; i < count; i++) outputs.push_back(&outs[i]);
    if (biases == nullptr)
      return emit(outputs, {x, wq, scales}, [=](const Arrays& a) { return quantized_product_split(a[0], a[1], a[2], std::nullopt, t, g, b, m, i8, shapes); });
    emit(outputs, {x, wq, scales, biases}, [=](const Arrays& a) { return quantized_product_split(a[0], a[1], a[2], a[3], t, g, b, m, i8, shapes); });
  });
}

int mlx_quantized_matmul_qk_norm_rope(mlx_array* outs, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, const int32_t* dims, mlx_array q_weight,
                                      mlx_array k_weight, mlx_array offset, mlx_array freqs, float eps, int rope_dims, int traditional, float base, float scale,
                                      int group_size, int bits, const char* mode, int int8_activations) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales"), arr(q_weight, "q_weight"), arr(k_weight, "k_weight"), arr(offset, "offset");
    if (outs == nullptr) throw ArgumentError("quantized_matmul_qk_norm_rope: out-pointers are null");
    std::vector<mx::Shape> shapes;
    for (int i = 0; i < 3; i++) shapes.push_back(dims_of(dims + 4 * i, 4));
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    auto rb = rope_base(base, freqs);
    bool tr = traditional != 0, i8 = int8_activations != 0;
    std::vector<mlx_array> inputs{x, wq, scales, q_weight, k_weight, offset};
    if (biases != nullptr) inputs.push_back(biases);
    if (freqs != nullptr) inputs.push_back(freqs);
    const bool has_biases = biases != nullptr, has_freqs = freqs != nullptr;
    emit({&outs[0], &outs[1], &outs[2]}, inputs, [=](const Arrays& a) {
      std::optional<mx::array> bs, periods;
      size_t at = 6;
      if (has_biases) bs = a[at++];
      if (has_freqs) periods = a[at++];
      return quantized_product_qk_norm_rope(a[0], a[1], a[2], bs, true, g, b, m, i8, shapes, a[3], a[4], eps, rope_dims, tr, rb, scale, a[5], periods);
    });
  });
}

} // extern "C"
