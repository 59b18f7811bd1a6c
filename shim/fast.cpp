// mlx::core::fast ops and the fused swiglu.
#include <cmath>

#include "internal.h"

using namespace mlxb;

extern "C" {

int mlx_fast_rms_norm(mlx_array* out, mlx_array x, mlx_array weight, float eps) {
  return guard([&] { put(out, mx::fast::rms_norm(arr(x, "x"), optional_arr(weight), eps)); });
}

int mlx_fast_layer_norm(mlx_array* out, mlx_array x, mlx_array weight, mlx_array bias, float eps) {
  return guard([&] { put(out, mx::fast::layer_norm(arr(x, "x"), optional_arr(weight), optional_arr(bias), eps)); });
}

static std::optional<float> rope_base(float base, mlx_array freqs) {
  if (freqs != nullptr || std::isnan(base)) return std::nullopt;
  return base;
}

int mlx_fast_rope(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, int offset, mlx_array freqs) {
  return guard([&] {
    put(out, mx::fast::rope(arr(x, "x"), dims, traditional != 0, rope_base(base, freqs), scale, offset, optional_arr(freqs)));
  });
}

int mlx_fast_rope_dynamic(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, mlx_array offset, mlx_array freqs) {
  return guard([&] {
    put(out, mx::fast::rope(arr(x, "x"), dims, traditional != 0, rope_base(base, freqs), scale, arr(offset, "offset"), optional_arr(freqs)));
  });
}

int mlx_fast_scaled_dot_product_attention(mlx_array* out, mlx_array q, mlx_array k, mlx_array v, float scale, const char* mask_mode, mlx_array mask) {
  return guard([&] {
    put(out, mx::fast::scaled_dot_product_attention(arr(q, "q"), arr(k, "k"), arr(v, "v"), scale, mask_mode ? mask_mode : "", optional_arr(mask)));
  });
}

int mlx_fast_swiglu(mlx_array* out, mlx_array gate, mlx_array up) {
  return guard([&] {
    const auto& g = arr(gate, "gate");
    put(out, mx::multiply(mx::multiply(g, mx::sigmoid(g)), arr(up, "up")));
  });
}

int mlx_get_active_memory(size_t* out) {
  return guard([&] { *out = mx::get_active_memory(); });
}
int mlx_get_peak_memory(size_t* out) {
  return guard([&] { *out = mx::get_peak_memory(); });
}
int mlx_reset_peak_memory(void) {
  return guard([&] { mx::reset_peak_memory(); });
}
int mlx_get_cache_memory(size_t* out) {
  return guard([&] { *out = mx::get_cache_memory(); });
}
int mlx_set_memory_limit(size_t* previous, size_t limit) {
  return guard([&] { *previous = mx::set_memory_limit(limit); });
}
int mlx_set_cache_limit(size_t* previous, size_t limit) {
  return guard([&] { *previous = mx::set_cache_limit(limit); });
}
int mlx_clear_cache(void) {
  return guard([&] { mx::clear_cache(); });
}

} // extern "C"
