// Affine dequantization on the CPU as one node: MLX's CPU backend builds it from ~50 (a shift and a
// mask per value of a word, broadcasts, a concatenation), and a decode step dequantizes the token's
// embedding row every step (a third of the default model's nodes). Values as MLX's op computes them:
// q * scale + bias in the scales' dtype, each op's result rounded to it.
#include "cpu_kernel.h"
#include "internal.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

/** Inputs: packed w [..., K * bits / 32] uint32, scales and biases [..., K / group]; out [..., K]. */
class DequantizeCpu : public mx::UnaryPrimitive {
 public:
  DequantizeCpu(mx::Stream stream, int group, int bits) : mx::UnaryPrimitive(stream), group_(group), bits_(bits) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out), group = group_, bits = bits_]() mutable {
      by_dtype(out.dtype(), [&]<typename T>() { run<T>(in[0], in[1], in[2], out, group, bits); });
    });
  }

  template <typename T>
  static void run(const mx::array& w, const mx::array& s, const mx::array& b, mx::array& out, int group, int bits) {
    const int64_t k = out.shape(-1), rows = out.size() / k, per_word = 32 / bits, groups = k / group;
    const uint32_t mask = (1u << bits) - 1;
    const int64_t ws = w.strides().back(), ss = s.strides().back(), bs = b.strides().back();
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; r++) {
      const uint32_t* wr = w.data<uint32_t>() + row_start(w, r);
      const T* sr = s.data<T>() + row_start(s, r);
      const T* br = b.data<T>() + row_start(b, r);
      T* orow = o + r * k;
      for (int64_t g = 0; g < groups; g++) {
        const float scale = static_cast<float>(sr[g * ss]), bias = static_cast<float>(br[g * bs]);
        for (int64_t i = g * group; i < (g + 1) * group; i++) {
          const float q = static_cast<float>((wr[(i / per_word) * ws] >> (bits * (i % per_word))) & mask);
          orow[i] = static_cast<T>(round_to<T>(q * scale) + bias);
        }
      }
    }
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("DequantizeCpu runs on the CPU only"); }
  const char* name() const override { return "DequantizeCpu"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const DequantizeCpu&>(other);
    return group_ == o.group_ && bits_ == o.bits_;
  }

 private:
  int group_, bits_;
};

} // namespace

mx::array mlxb::dequantize(const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, std::optional<int> group_size,
                           std::optional<int> bits, const std::string& mode, std::optional<mx::Dtype> dtype) {
  const int g = group_size.value_or(64), b = bits.value_or(4);
  const auto t = scales.dtype();
  const bool fits = on_cpu() && mode == "affine" && biases && (b == 2 || b == 4 || b == 8) && floating(t) && dtype.value_or(t) == t && biases->dtype() == t &&
                    w.dtype() == mx::uint32 && w.ndim() >= 1 && w.ndim() == scales.ndim() && biases->shape() == scales.shape() && g > 0 && w.size() > 0 && [&] {
                      for (int d = 0; d + 1 < static_cast<int>(w.ndim()); d++)
                        if (w.shape(d) != scales.shape(d)) return false;
                      const int64_t k = static_cast<int64_t>(w.shape(-1)) * 32 / b;
                      return k % g == 0 && scales.shape(-1) == k / g;
                    }();
  if (!fits) return mx::dequantize(w, scales, biases, group_size, bits, mode, std::nullopt, dtype);
  auto shape = w.shape();
  shape.back() = w.shape(-1) * 32 / b;
  return mx::array(std::move(shape), t, std::make_shared<DequantizeCpu>(cpu_stream(), g, b), {w, scales, *biases});
}
