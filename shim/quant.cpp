// Quantize / dequantize / quantized_matmul.
#include "internal.h"

using namespace mlxb;

namespace {
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
                            std::optional<int> g, std::optional<int> b, const std::string& m, const std::optional<mx::array>& addend = std::nullopt) {
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
                                                         : qmv_cpu(x, w, scales, biases, t, g, b, m, kernel_addend);
#else
    auto ours = qmv_cpu(x, w, scales, biases, t, g, b, m, kernel_addend);
#endif
    if (ours) return inside ? *ours : plus(*ours);
  }
  return plus(mx::quantized_matmul(x, w, scales, biases, t, g, b, m));
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
    if (biases == nullptr) return emit1(out, {wq, scales}, [=](const Arrays& a) { return mx::dequantize(a[0], a[1], std::nullopt, g, b, m, std::nullopt, dt); });
    emit1(out, {wq, scales, biases}, [=](const Arrays& a) { return mx::dequantize(a[0], a[1], a[2], g, b, m, std::nullopt, dt); });
  });
}

int mlx_quantized_matmul(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits, const char* mode) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0;
    if (biases == nullptr) return emit1(out, {x, wq, scales}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], std::nullopt, t, g, b, m); });
    emit1(out, {x, wq, scales, biases}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], a[3], t, g, b, m); });
  });
}

int mlx_quantized_matmul_add(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, mlx_array addend, int transpose, int group_size,
                             int bits, const char* mode) {
  return guard([&] {
    arr(x, "x"), arr(wq, "wq"), arr(scales, "scales"), arr(addend, "addend");
    auto m = mode_of(mode);
    auto g = positive(group_size), b = positive(bits);
    bool t = transpose != 0;
    if (biases == nullptr) {
      return emit1(out, {x, wq, scales, addend}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], std::nullopt, t, g, b, m, a[3]); });
    }
    emit1(out, {x, wq, scales, biases, addend}, [=](const Arrays& a) { return quantized_product(a[0], a[1], a[2], a[3], t, g, b, m, a[4]); });
  });
}

} // extern "C"
