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
    std::optional<mx::Dtype> dt;
    if (dtype >= 0) dt = to_dtype(dtype);
    put(out, mx::dequantize(arr(wq, "wq"), arr(scales, "scales"), optional_arr(biases), positive(group_size), positive(bits), mode_of(mode), std::nullopt, dt));
  });
}

int mlx_quantized_matmul(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits, const char* mode) {
  return guard([&] {
    put(out, mx::quantized_matmul(arr(x, "x"), arr(wq, "wq"), arr(scales, "scales"), optional_arr(biases), transpose != 0, positive(group_size), positive(bits), mode_of(mode)));
  });
}

} // extern "C"
