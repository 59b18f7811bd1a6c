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

int mlx_fast_kv_cache_attention(mlx_array* out, mlx_array* k_cache_out, mlx_array* v_cache_out, mlx_array q_, mlx_array k_, mlx_array v_, mlx_array k_cache, mlx_array v_cache, int offset, float scale, mlx_array key_mask) {
  return guard([&] {
    const auto& q = arr(q_, "q");
    const auto& k = arr(k_, "k");
    const auto& kc = arr(k_cache, "k_cache");
    if (k.ndim() != 4 || kc.ndim() != 4) throw ArgumentError("k and k_cache must be [B, H, T, D]");
    int batch = k.shape(0), heads = k.shape(1), length = k.shape(2), dim = k.shape(3);
    int end = offset + length;
    if (offset < 0 || end > kc.shape(2)) throw ArgumentError("offset + length exceeds the cache length");
    mx::Shape start{0, 0, offset, 0}, stop{batch, heads, end, dim};
    auto keys_all = mx::slice_update(kc, k, start, stop);
    auto values_all = mx::slice_update(arr(v_cache, "v_cache"), arr(v_, "v"), start, stop);
    mx::Shape head{0, 0, 0, 0}, upto{batch, heads, end, dim};
    auto keys = mx::slice(keys_all, head, upto);
    auto values = mx::slice(values_all, head, upto);
    std::optional<mx::array> mask;
    std::string mode;
    if (key_mask == nullptr) {
      // Keys are exactly [0, offset + T): MLX's bottom-right-aligned causal mask is the right one.
      if (q.shape(2) > 1) mode = "causal";
    } else {
      auto visible = mx::slice(arr(key_mask, "key_mask"), {0, 0}, {batch, end});
      auto allowed = mx::reshape(mx::not_equal(visible, mx::array(0, visible.dtype())), {batch, 1, 1, end});
      int queries = q.shape(2);
      auto rows = mx::reshape(mx::add(mx::arange(queries), mx::array(offset)), {queries, 1});
      auto causal = mx::greater_equal(rows, mx::reshape(mx::arange(end), {1, end}));
      mask = mx::logical_and(allowed, causal);
    }
    auto attended = mx::fast::scaled_dot_product_attention(q, keys, values, scale, mode, mask);
    put(out, attended);
    put(k_cache_out, keys_all);
    put(v_cache_out, values_all);
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
