// What the CPU kernels of fast_cpu.cpp, dequantize_cpu.cpp and qmv_cpu.cpp share: their dispatch on the CPU
// stream, a dtype switch, reading rows of strided arrays, rounding as an op with a half-precision
// output does, and a second core (cpu_kernel.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <type_traits>

#include "internal.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"

namespace mlxb {

/** The default stream, and whether it is the CPU's (where these kernels run). */
inline mx::Stream cpu_stream() {
  return mx::default_stream(mx::default_device());
}
inline bool on_cpu() {
  return cpu_stream().device == mx::Device::cpu;
}

/** The dtypes the kernels take. */
inline bool floating(mx::Dtype t) {
  return t == mx::float32 || t == mx::bfloat16 || t == mx::float16;
}

/** A value rounded to T and back (what an MLX op with output dtype T stores). */
template <typename T>
inline float round_to(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return static_cast<float>(static_cast<T>(v));
}

/** Element offset of row `row` of `a` (rows: every index but the last, in row-major order). */
inline int64_t row_start(const mx::array& a, int64_t row) {
  int64_t at = 0;
  for (int d = static_cast<int>(a.ndim()) - 2; d >= 0; d--) {
    at += (row % a.shape(d)) * a.strides()[d];
    row /= a.shape(d);
  }
  return at;
}

/** Allocates out and registers the arrays with the stream's encoder, which it returns (for the
 * kernel's dispatch; the kernel's weak copy of out is made after this). */
inline mx::cpu::CommandEncoder& prepare(const mx::Stream& stream, const std::vector<mx::array>& inputs, mx::array& out) {
  out.set_data(mx::allocator::malloc(out.nbytes()));
  auto& encoder = mx::cpu::get_command_encoder(stream);
  for (const auto& a : inputs) encoder.set_input_array(a);
  encoder.set_output_array(out);
  return encoder;
}

/** Runs f.template operator()<T>() for the floating dtype T of `t`. */
template <typename F>
void by_dtype(mx::Dtype t, F&& f) {
  if (t == mx::float32)
    f.template operator()<float>();
  else if (t == mx::bfloat16)
    f.template operator()<mx::bfloat16_t>();
  else
    f.template operator()<mx::float16_t>();
}

/** Weak copies of the arrays, for the dispatched kernel (the encoder keeps them alive). */
inline std::vector<mx::array> weak(const std::vector<mx::array>& xs) {
  std::vector<mx::array> out;
  for (const auto& x : xs) out.push_back(mx::array::unsafe_weak_copy(x));
  return out;
}

/** f(begin, end) over [0, n) in chunks of `chunk`, on this thread and the helper together when there
 * are two cores (each taking the next chunk as it is free); returns when all are done. */
void in_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& f);

/** Whether this CPU (and the OS, which must save the registers) runs AVX-512 F and BW, and with
 * `vnni` also AVX-512 VNNI; checked by CPUID. */
bool avx512_available(bool vnni);

} // namespace mlxb
