// mlx::core::fast ops and the fused swiglu.
#include <cmath>

#include "internal.h"

using namespace mlxb;

// silu(gate) * up compiled into one primitive (elementwise, so shapeless: one trace serves every
// shape), as mlx-lm's compiled swiglu.
mx::array mlxb::compiled_swiglu(const mx::array& gate, const mx::array& up) {
  static const auto fn =
      mx::compile([](const std::vector<mx::array>& x) { return std::vector<mx::array>{mx::multiply(mx::multiply(x[0], mx::sigmoid(x[0])), x[1])}; },
                  /* shapeless */ true);
  return fn({gate, up}).at(0);
}

Arrays mlxb::qk_norm_rope(const mx::array& q, const mx::array& k, const mx::array& q_weight, const mx::array& k_weight, float eps, int dims, bool traditional,
                          std::optional<float> base, float scale, const mx::array& offset, const std::optional<mx::array>& periods) {
#ifdef MLXB_CUDA
  if (auto fused = qk_norm_rope_cuda(q, k, q_weight, k_weight, eps, dims, traditional, base, scale, offset, periods)) return *fused;
#endif
  auto rotate = [&](const mx::array& x, const mx::array& w) { return rope(rms_norm(x, w, eps), dims, traditional, base, scale, offset, periods); };
  return Arrays{rotate(q, q_weight), rotate(k, k_weight)};
}

extern "C" {

int mlx_fast_rms_norm(mlx_array* out, mlx_array x, mlx_array weight, float eps) {
  return guard([&] {
    arr(x, "x");
    if (weight == nullptr) return emit1(out, {x}, [eps](const Arrays& a) { return mx::fast::rms_norm(a[0], std::nullopt, eps); });
    emit1(out, {x, weight}, [eps](const Arrays& a) { return rms_norm(a[0], a[1], eps); });
  });
}

int mlx_fast_layer_norm(mlx_array* out, mlx_array x, mlx_array weight, mlx_array bias, float eps) {
  return guard([&] {
    arr(x, "x");
    bool has_weight = weight != nullptr, has_bias = bias != nullptr;
    std::vector<mlx_array> inputs{x};
    if (has_weight) inputs.push_back(weight);
    if (has_bias) inputs.push_back(bias);
    emit1(out, inputs, [eps, has_weight, has_bias](const Arrays& a) {
      std::optional<mx::array> w, b;
      if (has_weight) w = a[1];
      if (has_bias) b = a[has_weight ? 2 : 1];
      return mx::fast::layer_norm(a[0], w, b, eps);
    });
  });
}

int mlx_fast_rope(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, int offset, mlx_array freqs) {
  return guard([&] {
    arr(x, "x");
    auto b = rope_base(base, freqs);
    bool t = traditional != 0;
    if (freqs == nullptr) return emit1(out, {x}, [=](const Arrays& a) { return rope(a[0], dims, t, b, scale, mx::array(offset), std::nullopt); });
    emit1(out, {x, freqs}, [=](const Arrays& a) { return rope(a[0], dims, t, b, scale, mx::array(offset), a[1]); });
  });
}

int mlx_fast_rope_dynamic(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, mlx_array offset, mlx_array freqs) {
  return guard([&] {
    arr(x, "x"), arr(offset, "offset");
    auto b = rope_base(base, freqs);
    bool t = traditional != 0;
    if (freqs == nullptr) return emit1(out, {x, offset}, [=](const Arrays& a) { return rope(a[0], dims, t, b, scale, a[1], std::nullopt); });
    emit1(out, {x, offset, freqs}, [=](const Arrays& a) { return rope(a[0], dims, t, b, scale, a[1], a[2]); });
  });
}

int mlx_fast_qk_norm_rope(mlx_array* q_out, mlx_array* k_out, mlx_array q, mlx_array k, mlx_array q_weight, mlx_array k_weight, float eps, int dims,
                          int traditional, float base, float scale, mlx_array offset, mlx_array freqs) {
  return guard([&] {
    arr(q, "q"), arr(k, "k"), arr(q_weight, "q_weight"), arr(k_weight, "k_weight"), arr(offset, "offset");
    auto b = rope_base(base, freqs);
    bool t = traditional != 0;
    std::vector<mlx_array> inputs{q, k, q_weight, k_weight, offset};
    if (freqs != nullptr) inputs.push_back(freqs);
    emit({q_out, k_out}, inputs, [=](const Arrays& a) {
      std::optional<mx::array> periods;
      if (a.size() > 5) periods = a[5];
      return qk_norm_rope(a[0], a[1], a[2], a[3], eps, dims, t, b, scale, a[4], periods);
    });
  });
}

int mlx_fast_scaled_dot_product_attention(mlx_array* out, mlx_array q, mlx_array k, mlx_array v, float scale, const char* mask_mode, mlx_array mask) {
  return guard([&] {
    arr(q, "q"), arr(k, "k"), arr(v, "v");
    std::string mode = mask_mode ? mask_mode : "";
    if (mask == nullptr) return emit1(out, {q, k, v}, [=](const Arrays& a) { return attention(a[0], a[1], a[2], scale, mode, std::nullopt); });
    emit1(out, {q, k, v, mask}, [=](const Arrays& a) { return attention(a[0], a[1], a[2], scale, mode, a[3]); });
  });
}

int mlx_fast_swiglu(mlx_array* out, mlx_array gate, mlx_array up) {
  return guard([&] {
    arr(gate, "gate"), arr(up, "up");
    emit1(out, {gate, up}, [](const Arrays& a) { return swiglu(a[0], a[1], [&] { return compiled_swiglu(a[0], a[1]); }); });
  });
}

/** Bytes the shim's own kernels hold outside MLX's allocator (outputs of its GPU primitives): in use
 * (counted as active) or idle (counted as cache). */
static size_t own_bytes(bool in_use) {
#ifdef MLXB_CUDA
  return device_buffer_bytes(in_use);
#else
  (void)in_use;
  return 0;
#endif
}

int mlx_get_active_memory(size_t* out) {
  return guard([&] { *out = mx::get_active_memory() + own_bytes(true); });
}
int mlx_get_peak_memory(size_t* out) {
  return guard([&] { *out = mx::get_peak_memory(); });
}
int mlx_reset_peak_memory(void) {
  return guard([&] { mx::reset_peak_memory(); });
}
int mlx_get_cache_memory(size_t* out) {
  return guard([&] { *out = mx::get_cache_memory() + own_bytes(false); });
}
int mlx_set_memory_limit(size_t* previous, size_t limit) {
  return guard([&] { *previous = mx::set_memory_limit(limit); });
}
int mlx_set_cache_limit(size_t* previous, size_t limit) {
  return guard([&] { *previous = mx::set_cache_limit(limit); });
}
int mlx_clear_cache(void) {
  return guard([&] {
    mx::clear_cache();
#ifdef MLXB_CUDA
    device_buffers_release();
#endif
  });
}

} // extern "C"
