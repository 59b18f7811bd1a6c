// The sampler's pick as one primitive (SamplePick): per row of logits [B, V], the filters' threshold
// (min-p, top-k, top-p), then the draw by inverse CDF in id order, or the argmax for a greedy row.
// What the MLX ops of a pick took (a sort of the row, cumulative sums, thresholds, a softmax: some
// thirty nodes and kernels per step) is one node here. The rule is src/engine/host-sampler.ts's:
//
//   params [B, 5] float32 per row: 1/temperature (0: greedy, the first largest logit), the mass top-p
//   drops (1 - topP, or -1: none), log(minP) (-inf: none), minTokensToKeep, topK (0: none);
//   seeds [B, 2] uint32 (each row's seed: low and high 32 bits) and draws [B] uint32 (the index of
//   each row's draw): u in (0, 1) is drawUniform(drawKey(seed, draw)) of host-sampler.ts, computed
//   here, so that a replayed step takes no data from the host.
//   threshold = max(min(top + log(minP), the minTokensToKeep-th largest) when min-p is on,
//                   the topK-th largest, the smallest value v whose ascending cumulative mass
//                   (softmax of the row at temperature 1, ties included) passes 1 - topP);
//   the token: the first id whose running weight exp((x - top) / temperature), over x >= threshold,
//   passes u times their sum (the last such id if rounding leaves none).
//
// Outputs: tokens [B, 1] uint32, the row's largest value [B] float32 (NaN when the row holds a NaN:
// the caller reports logits that are not finite; the token is then 0), and the threshold [B] (the
// kept tokens are x >= threshold; -inf without filters). The selections are exact: k-th largest and
// the mass threshold by radix selection on the float's order-preserving bit pattern (four passes of
// 8 bits). On the CPU (here) masses are summed in double; on a CUDA GPU (sample_cuda.cpp) in float32
// in a fixed order (deterministic). The two may differ where rounding decides a tie.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu_kernel.h"
#include "internal.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

uint32_t key_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

float float_of(uint32_t k) {
  uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/** The k-th largest of x (1 <= k <= x.size()), counted with repeats. */
float kth_largest(const std::vector<float>& x, int64_t k) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t count[256] = {};
    for (float v : x) {
      uint32_t key = key_of(v);
      if ((key & mask) == prefix) count[(key >> shift) & 255u]++;
    }
    int d = 255;
    int64_t above = 0;
    for (; d > 0; d--) {
      if (above + count[d] >= k) break;
      above += count[d];
    }
    k -= above;
    prefix |= static_cast<uint32_t>(d) << shift;
    mask |= 255u << shift;
  }
  return float_of(prefix);
}

/** The smallest value of x whose ascending cumulative weight (e: each value's weight) passes
 * `drop` times the total. */
float mass_threshold(const std::vector<float>& x, const std::vector<double>& e, double drop) {
  uint32_t prefix = 0, mask = 0;
  double below = 0, bound = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    double mass[256] = {};
    for (size_t i = 0; i < x.size(); i++) {
      uint32_t key = key_of(x[i]);
      if ((key & mask) == prefix) mass[(key >> shift) & 255u] += e[i];
    }
    if (shift == 24) {
      double total = 0;
      for (double m : mass) total += m;
      bound = drop * total;
    }
    int d = 0, last = 0;
    double run = below;
    for (; d < 256; d++) {
      if (mass[d] > 0) last = d;
      if (run + mass[d] > bound) break;
      run += mass[d];
    }
    if (d == 256)
      d = last;
    else
      below = run;
    prefix |= static_cast<uint32_t>(d) << shift;
    mask |= 255u << shift;
  }
  return float_of(prefix);
}

uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

/** host-sampler.ts's drawUniform(drawKey(seed, index)). */
float draw_uniform(uint32_t seed_low, uint32_t seed_high, uint32_t index) {
  const uint32_t key = fmix32(seed_low ^ fmix32(seed_high ^ fmix32(index * 0x9e3779b1u + 0x7f4a7c15u)));
  return static_cast<float>((static_cast<double>(key >> 8) + 0.5) / 16777216.0);
}

struct Row {
  uint32_t token;
  float peak, threshold;
};

Row pick_row(std::vector<float>& x, const float* params, int64_t param_stride, float u) {
  const int64_t V = static_cast<int64_t>(x.size());
  const float inv_t = params[0], drop = params[param_stride], log_min_p = params[2 * param_stride];
  const auto min_keep = static_cast<int64_t>(params[3 * param_stride]), top_k = static_cast<int64_t>(params[4 * param_stride]);
  const float inf = std::numeric_limits<float>::infinity();
  float top = -inf;
  int64_t arg = 0;
  bool nan = false;
  for (int64_t i = 0; i < V; i++) {
    if (std::isnan(x[i]))
      nan = true;
    else if (x[i] > top)
      top = x[i], arg = i;
  }
  if (nan) return {0, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::quiet_NaN()};
  if (!std::isfinite(top)) return {0, top, top};
  if (inv_t == 0) return {static_cast<uint32_t>(arg), top, -inf};
  float threshold = -inf;
  if (log_min_p > -inf) threshold = std::min(top + log_min_p, min_keep > 1 ? kth_largest(x, std::min(min_keep, V)) : top);
  if (top_k > 0) threshold = std::max(threshold, kth_largest(x, std::min(top_k, V)));
  if (drop >= 0) {
    std::vector<double> e(V);
    for (int64_t i = 0; i < V; i++) e[i] = std::exp(x[i] - top);
    threshold = std::max(threshold, mass_threshold(x, e, drop));
  }
  // Each kept token's weight, once (float exp; sums in double).
  std::vector<float> w(V);
  double total = 0;
  for (int64_t i = 0; i < V; i++) {
    w[i] = x[i] >= threshold ? std::exp((x[i] - top) * inv_t) : 0.f;
    total += w[i];
  }
  const double target = static_cast<double>(u) * total;
  double run = 0;
  int64_t last = arg;
  for (int64_t i = 0; i < V; i++) {
    if (w[i] == 0) continue;
    run += w[i];
    last = i;
    if (run > target) return {static_cast<uint32_t>(i), top, threshold};
  }
  return {static_cast<uint32_t>(last), top, threshold};
}

template <typename T>
void pick_rows(const mx::array& logits, const mx::array& params, const mx::array& seeds, const mx::array& draws, mx::array& tokens, mx::array& peak,
               mx::array& threshold) {
  const int64_t B = logits.shape(0), V = logits.shape(1);
  const T* l = logits.data<T>();
  const float* p = params.data<float>();
  const uint32_t* seed = seeds.data<uint32_t>();
  const uint32_t* draw = draws.data<uint32_t>();
  std::vector<float> x(V);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t i = 0; i < V; i++) x[i] = static_cast<float>(l[b * logits.strides(0) + i * logits.strides(1)]);
    const float u = draw_uniform(seed[b * seeds.strides(0)], seed[b * seeds.strides(0) + seeds.strides(1)], draw[b * draws.strides(0)]);
    Row r = pick_row(x, p + b * params.strides(0), params.strides(1), u);
    tokens.data<uint32_t>()[b] = r.token;
    peak.data<float>()[b] = r.peak;
    threshold.data<float>()[b] = r.threshold;
  }
}

class SamplePick : public mx::Primitive {
 public:
  explicit SamplePick(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
    auto& encoder = mx::cpu::get_command_encoder(stream());
    for (const auto& a : inputs) encoder.set_input_array(a);
    for (auto& o : outputs) encoder.set_output_array(o);
    encoder.dispatch([logits = mx::array::unsafe_weak_copy(inputs[0]), params = mx::array::unsafe_weak_copy(inputs[1]),
                      seeds = mx::array::unsafe_weak_copy(inputs[2]), draws = mx::array::unsafe_weak_copy(inputs[3]),
                      tokens = mx::array::unsafe_weak_copy(outputs[0]), peak = mx::array::unsafe_weak_copy(outputs[1]),
                      threshold = mx::array::unsafe_weak_copy(outputs[2])]() mutable {
      by_dtype(logits.dtype(), [&]<typename T>() { pick_rows<T>(logits, params, seeds, draws, tokens, peak, threshold); });
    });
  }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
#ifdef MLXB_CUDA
    sample_pick_cuda(stream(), inputs, outputs);
#else
    throw std::runtime_error("SamplePick: no GPU kernel in this build");
#endif
  }

  const char* name() const override { return "SamplePick"; }

  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

/** Each row's first argmax and max as one node of the shim's on the GPU of a CUDA build (the greedy
 * pick: MLX's argmax and max are a node and a one-block pass over the row each); elsewhere the pick is
 * those two ops. */
class GreedyPick : public mx::Primitive {
 public:
  explicit GreedyPick(mx::Stream stream) : mx::Primitive(stream) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("GreedyPick runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
#ifdef MLXB_CUDA
    greedy_pick_cuda(stream(), inputs[0], outputs);
#else
    (void)inputs, (void)outputs;
    throw std::runtime_error("GreedyPick: no GPU kernel in this build");
#endif
  }

  const char* name() const override { return "GreedyPick"; }

  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

/** Penalize's rule for one row (logits x as float32 in place): each distinct id among the last
 * repetition-context ids divided by the penalty (multiplied when negative), among the last presence-
 * context ids lowered by the presence penalty, and lowered by the frequency penalty once per slot of
 * the last frequency-context ids that holds it (in slot order). ids: the row's W recent ids (-1: an
 * empty slot); params: (repetition, its context, presence, its context, frequency, its context). */
void penalize_row(float* x, int64_t V, const int32_t* ids, int64_t id_stride, int64_t W, const float* params, int64_t param_stride) {
  const float repetition = params[0], presence = params[2 * param_stride], frequency = params[4 * param_stride];
  // A context as a count of slots in [0, W] (below 1 or NaN: none; past W: all).
  const auto start = [W](float context) { return W - (context >= 1 ? static_cast<int64_t>(std::min(context, static_cast<float>(W))) : 0); };
  const int64_t from[3] = {start(params[param_stride]), start(params[3 * param_stride]), start(params[5 * param_stride])};
  for (int64_t w = 0; w < W; w++) {
    const int32_t id = ids[w * id_stride];
    if (id < 0 || id >= V) continue;
    bool first = true;
    for (int64_t u = 0; u < w && first; u++) first = ids[u * id_stride] != id;
    if (!first) continue;
    bool in[2] = {false, false};
    for (int64_t u = w; u < W; u++)
      if (ids[u * id_stride] == id) in[0] = in[0] || u >= from[0], in[1] = in[1] || u >= from[1];
    float v = x[id];
    if (in[0]) v = v < 0 ? v * repetition : v / repetition;
    if (in[1]) v -= presence;
    for (int64_t u = std::max(w, from[2]); u < W; u++)
      if (ids[u * id_stride] == id) v -= frequency;
    x[id] = v;
  }
}

template <typename T>
void penalize_rows(const mx::array& logits, const mx::array& ids, const mx::array& params, mx::array& out) {
  const int64_t B = logits.shape(0), V = logits.shape(1), W = ids.shape(1);
  const T* l = logits.data<T>();
  float* o = out.data<float>();
  for (int64_t b = 0; b < B; b++) {
    for (int64_t i = 0; i < V; i++) o[b * V + i] = static_cast<float>(l[b * logits.strides(0) + i * logits.strides(1)]);
    penalize_row(o + b * V, V, ids.data<int32_t>() + b * ids.strides(0), ids.strides(1), W, params.data<float>() + b * params.strides(0), params.strides(1));
  }
}

/** The penalties (repetition, presence, frequency) over each row's recent ids as one node: what
 * some dozen MLX ops did (gathers, selects, scatters). */
class Penalize : public mx::UnaryPrimitive {
 public:
  explicit Penalize(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    auto& encoder = prepare(stream(), inputs, out);
    encoder.dispatch(
        [logits = mx::array::unsafe_weak_copy(inputs[0]), ids = mx::array::unsafe_weak_copy(inputs[1]), params = mx::array::unsafe_weak_copy(inputs[2]),
         out = mx::array::unsafe_weak_copy(out)]() mutable { by_dtype(logits.dtype(), [&]<typename T>() { penalize_rows<T>(logits, ids, params, out); }); });
  }

  void eval_gpu(const std::vector<mx::array>& inputs, mx::array& out) override {
#ifdef MLXB_CUDA
    penalize_cuda(stream(), inputs, out);
#else
    throw std::runtime_error("Penalize: no GPU kernel in this build");
#endif
  }

  const char* name() const override { return "Penalize"; }

  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

} // namespace

int mlx_sample_pick(mlx_array* tokens, mlx_array* peak, mlx_array* threshold, mlx_array logits, mlx_array params, mlx_array seeds, mlx_array draws) {
  return guard([&] {
    const auto& l = arr(logits, "logits");
    const auto& p = arr(params, "params");
    const auto& s = arr(seeds, "seeds");
    const auto& d = arr(draws, "draws");
    if (l.ndim() != 2 || l.shape(0) < 1 || l.shape(1) < 1) throw ArgumentError("samplePick: logits must be [B, V] with B, V >= 1");
    if (l.dtype() != mx::float32 && l.dtype() != mx::bfloat16 && l.dtype() != mx::float16)
      throw ArgumentError("samplePick: logits must be float32, bfloat16 or float16");
    const int B = l.shape(0);
    if (p.dtype() != mx::float32 || p.ndim() != 2 || p.shape(0) != B || p.shape(1) != 5) throw ArgumentError("samplePick: params must be float32 [B, 5]");
    if (s.dtype() != mx::uint32 || s.ndim() != 2 || s.shape(0) != B || s.shape(1) != 2) throw ArgumentError("samplePick: seeds must be uint32 [B, 2]");
    if (d.dtype() != mx::uint32 || d.ndim() != 1 || d.shape(0) != B) throw ArgumentError("samplePick: draws must be uint32 [B]");
    emit({tokens, peak, threshold}, {logits, params, seeds, draws}, [](const Arrays& a) {
      auto stream = mx::default_stream(mx::default_device());
#ifdef MLXB_CUDA
      // The GPU kernel is compiled on first use; without it the pick runs on the CPU.
      if (stream.device == mx::Device::gpu && !sample_kernel_ready(stream.device.index, a[0].dtype())) stream = mx::default_stream(mx::Device::cpu);
#endif
      const int B = a[0].shape(0);
      return mx::array::make_arrays({mx::Shape{B, 1}, mx::Shape{B}, mx::Shape{B}}, {mx::uint32, mx::float32, mx::float32}, std::make_shared<SamplePick>(stream),
                                    a);
    });
  });
}

int mlx_greedy_pick(mlx_array* tokens, mlx_array* peak, mlx_array logits) {
  return guard([&] {
    const auto& l = arr(logits, "logits");
    if (l.ndim() != 2 || l.shape(0) < 1 || l.shape(1) < 1) throw ArgumentError("greedyPick: logits must be [B, V] with B, V >= 1");
    if (l.dtype() != mx::float32 && l.dtype() != mx::bfloat16 && l.dtype() != mx::float16)
      throw ArgumentError("greedyPick: logits must be float32, bfloat16 or float16");
    emit({tokens, peak}, {logits}, [](const Arrays& a) {
      auto stream = mx::default_stream(mx::default_device());
#ifdef MLXB_CUDA
      static const bool wanted = !env_is("MLXB_GREEDY_PICK", "mlx");
      // The GPU kernel is compiled on first use; without it (or MLXB_GREEDY_PICK=mlx) MLX's ops.
      if (wanted && stream.device == mx::Device::gpu && greedy_kernel_ready(stream, a[0].dtype())) {
        const int B = a[0].shape(0);
        return mx::array::make_arrays({mx::Shape{B, 1}, mx::Shape{B}}, {mx::uint32, a[0].dtype()}, std::make_shared<GreedyPick>(stream), a);
      }
#endif
      return Arrays{mx::argmax(a[0], -1, true), mx::max(a[0], -1)};
    });
  });
}

int mlx_penalize(mlx_array* out, mlx_array logits, mlx_array ids, mlx_array params) {
  return guard([&] {
    const auto& l = arr(logits, "logits");
    const auto& i = arr(ids, "ids");
    const auto& p = arr(params, "params");
    if (l.ndim() != 2 || l.shape(0) < 1 || l.shape(1) < 1) throw ArgumentError("penalize: logits must be [B, V] with B, V >= 1");
    if (l.dtype() != mx::float32 && l.dtype() != mx::bfloat16 && l.dtype() != mx::float16)
      throw ArgumentError("penalize: logits must be float32, bfloat16 or float16");
    const int B = l.shape(0);
    if (i.dtype() != mx::int32 || i.ndim() != 2 || i.shape(0) != B) throw ArgumentError("penalize: ids must be int32 [B, W]");
    if (p.dtype() != mx::float32 || p.ndim() != 2 || p.shape(0) != B || p.shape(1) != 6) throw ArgumentError("penalize: params must be float32 [B, 6]");
    emit({out}, {logits, ids, params}, [](const Arrays& a) {
      auto stream = mx::default_stream(mx::default_device());
#ifdef MLXB_CUDA
      // The GPU kernel is compiled on first use; without it the penalties run on the CPU.
      if (stream.device == mx::Device::gpu && !penalize_kernel_ready(stream.device.index, a[0].dtype())) stream = mx::default_stream(mx::Device::cpu);
#endif
      return Arrays{mx::array(a[0].shape(), mx::float32, std::make_shared<Penalize>(stream), a)};
    });
  });
}
