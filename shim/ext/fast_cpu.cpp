// CPU kernels for the fast ops that MLX's CPU backend builds from many small ops each: rms_norm
// (~10 nodes), rope (~25) and attention (~8); and swiglu, which MLX compiles into one node whose
// CPU code is scalar (libm calls per element). A decode step of the default model made ~860 nodes, at
// several microseconds of dispatch each; as one node per op it makes a fifth of that. Each kernel
// follows MLX's fallback (mlx/fast.cpp) in what it computes and where it rounds: arithmetic in
// float32, and for bfloat16 / float16 inputs a rounding wherever MLX's ops round (their outputs);
// sums may be taken in another order (vectorized). The attention kernel takes prompts too: it skips
// the causal half of the scores and materializes none of them (a 96-token prompt of the default
// model: its evaluation took 52 ms against 77 with MLX's masked matmuls).
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "cpu_kernel.h"
#include "internal.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

/** x * rsqrt(mean(x^2) + eps) over the last axis, rounded to x's dtype, times weight [D]. */
class RmsNormCpu : public mx::UnaryPrimitive {
 public:
  RmsNormCpu(mx::Stream stream, float eps) : mx::UnaryPrimitive(stream), eps_(eps) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out), eps = eps_]() mutable {
      by_dtype(out.dtype(), [&]<typename T>() { run<T>(in[0], in[1], out, eps); });
    });
  }

  template <typename T>
  static void run(const mx::array& x, const mx::array& w, mx::array& out, float eps) {
    const int64_t d = x.shape(-1), rows = x.size() / d, xs = x.strides().back(), ws = w.strides()[0];
    const T* wp = w.data<T>();
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; r++) {
      const T* xr = x.data<T>() + row_start(x, r);
      float sum = 0;
      for (int64_t i = 0; i < d; i++) {
        float v = static_cast<float>(xr[i * xs]);
        sum += v * v;
      }
      const float scale = 1.0f / std::sqrt(sum / static_cast<float>(d) + eps);
      T* orow = o + r * d;
      for (int64_t i = 0; i < d; i++) orow[i] = static_cast<T>(round_to<T>(static_cast<float>(xr[i * xs]) * scale) * static_cast<float>(wp[i * ws]));
    }
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("RmsNormCpu runs on the CPU only"); }
  const char* name() const override { return "RmsNormCpu"; }
  bool is_equivalent(const mx::Primitive& other) const override { return eps_ == static_cast<const RmsNormCpu&>(other).eps_; }

 private:
  float eps_;
};

/** Rotary embedding of x [B, ..., T, D] at positions (t + offset[b]) * scale, as mx::fast::rope: the
 * first `dims` features rotated in pairs (traditional: adjacent; else the two halves), the rest
 * copied. Inputs: x, offset (int32, one or B values), and the periods when given (else base). */
class RopeCpu : public mx::UnaryPrimitive {
 public:
  RopeCpu(mx::Stream stream, int dims, bool traditional, float base, float scale) : mx::UnaryPrimitive(stream), params_{dims, traditional, base, scale} {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out), p = params_]() mutable {
      by_dtype(out.dtype(), [&]<typename T>() { run<T>(in, out, p); });
    });
  }

  struct Params {
    int dims;
    bool traditional;
    float base, scale;
    bool operator==(const Params&) const = default;
  };

  template <typename T>
  static void run(const std::vector<mx::array>& in, mx::array& out, const Params& p) {
    const mx::array& x = in[0];
    const mx::array& offset = in[1];
    const int half = p.dims / 2;
    // MLX: exp(arange(0, -half, -1) * (log(base) / half)), or 1 / periods; all float32.
    std::vector<float> inverse(half);
    if (in.size() > 2) {
      const mx::array& periods = in[2];
      for (int i = 0; i < half; i++) inverse[i] = 1.0f / static_cast<float>(periods.data<float>()[i * periods.strides()[0]]);
    } else {
      const float step = static_cast<float>(std::log(p.base) / half);
      for (int i = 0; i < half; i++) inverse[i] = std::exp(static_cast<float>(-i) * step);
    }
    const int64_t d = x.shape(-1), t_len = x.shape(-2), rows = x.size() / d, per_batch = x.size() / x.shape(0) / d, xs = x.strides().back();
    const int32_t* offsets = offset.data<int32_t>();
    const bool per_example = offset.size() > 1;
    // The angles of each position, once (every head's rows at a position share them).
    const int64_t positions = (per_example ? x.shape(0) : 1) * t_len;
    std::vector<float> cosines(positions * half), sines(positions * half);
    for (int64_t at = 0; at < positions; at++) {
      const int64_t b = at / t_len, t = at % t_len;
      const float position = (static_cast<float>(t) + static_cast<float>(offsets[b * (per_example ? offset.strides()[0] : 0)])) * p.scale;
      for (int i = 0; i < half; i++) {
        const float theta = position * inverse[i];
        cosines[at * half + i] = round_to<T>(std::cos(theta));
        sines[at * half + i] = round_to<T>(std::sin(theta));
      }
    }
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; r++) {
      const int64_t b = r / per_batch, t = r % t_len;
      const float* row_cosines = cosines.data() + ((per_example ? b * t_len : 0) + t) * half;
      const float* row_sines = sines.data() + ((per_example ? b * t_len : 0) + t) * half;
      const T* xr = x.data<T>() + row_start(x, r);
      T* orow = o + r * d;
      for (int i = 0; i < half; i++) {
        const int64_t i1 = p.traditional ? 2 * i : i, i2 = p.traditional ? 2 * i + 1 : i + half;
        const float x1 = static_cast<float>(xr[i1 * xs]), x2 = static_cast<float>(xr[i2 * xs]);
        const float c = row_cosines[i], s = row_sines[i];
        orow[i1] = static_cast<T>(round_to<T>(x1 * c) - round_to<T>(x2 * s));
        orow[i2] = static_cast<T>(round_to<T>(x1 * s) + round_to<T>(x2 * c));
      }
      for (int64_t i = p.dims; i < d; i++) orow[i] = xr[i * xs];
    }
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("RopeCpu runs on the CPU only"); }
  const char* name() const override { return "RopeCpu"; }
  bool is_equivalent(const mx::Primitive& other) const override { return params_ == static_cast<const RopeCpu&>(other).params_; }

 private:
  Params params_;
};

/** MLX's CPU exp (mlx/backend/cpu/simd/math.h: 2^(x log2 e) as a bit-shifted integer power times
 * Cephes' polynomial, fused multiply-adds), written to vectorize: the same float for every input. */
inline float exp_like_mlx(float in) {
  const float x = in * 1.442695f;
  const float ipart = std::floor(x + 0.5f), fpart = x - ipart;
  float p = 1.535336188319500e-4f;
  p = __builtin_fmaf(p, fpart, 1.339887440266574e-3f);
  p = __builtin_fmaf(p, fpart, 9.618437357674640e-3f);
  p = __builtin_fmaf(p, fpart, 5.550332471162809e-2f);
  p = __builtin_fmaf(p, fpart, 2.402264791363012e-1f);
  p = __builtin_fmaf(p, fpart, 6.931472028550421e-1f);
  p = __builtin_fmaf(p, fpart, 1.000000000000000f);
  const float power = __builtin_bit_cast(float, (static_cast<int>(ipart) + 127) << 23);
  float result = std::isnan(in) ? in : power * p;
  result = in > 88.0f ? std::numeric_limits<float>::infinity() : result;
  return in < -88.0f ? 0.0f : result;
}

/** The dot product of a and b (n values), summed in any order (vectorized). */
template <typename T>
float dot(const float* a, const T* b, int n) {
#pragma clang fp reassociate(on)
  float s = 0;
  for (int i = 0; i < n; i++) s += a[i] * static_cast<float>(b[i]);
  return s;
}

/** 16 consecutive values of p as float lanes. */
template <typename T>
__attribute__((target("avx512f"))) inline __m512 load16(const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return _mm512_loadu_ps(p);
  } else if constexpr (std::is_same_v<T, mx::bfloat16_t>) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  } else {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
}

/** Lane l: the sum of a[l]'s 16 lanes (a tree of shuffles and adds over the 16 vectors at once, in
 * place of a horizontal sum each). */
__attribute__((target("avx512f"))) inline __m512 sums16(const __m512* a) {
  __m512 b[8], c[4], d[2];
  // Each step halves the vectors and the lanes each key still spreads over.
  for (int i = 0; i < 8; i++) b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; i++) c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; i++) d[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44), _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
  const __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
  // e's lane 4k + m holds key 4m + k.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, e);
}

/** The scores (unrounded dot products) of 16 keys from k (rows `stride` apart, D = 16 * CD values
 * each, contiguous) with the query q (float): out[0..16). */
template <int CD, typename T>
__attribute__((target("avx512f"))) void scores16(const float* q, const T* k, int64_t stride, float* out) {
  __m512 acc[16];
  for (int l = 0; l < 16; l++) acc[l] = _mm512_setzero_ps();
  for (int c = 0; c < CD; c++) {
    const __m512 qc = _mm512_loadu_ps(q + 16 * c);
    for (int l = 0; l < 16; l++) acc[l] = _mm512_fmadd_ps(qc, load16(k + l * stride + 16 * c), acc[l]);
  }
  _mm512_storeu_ps(out, sums16(acc));
}

/** acc[0 .. 16 * CV) += p_j v_j over the keys j < visible whose weight e_j is not 0 (a masked key's
 * value may be anything), p_j = e_j / total rounded to T; values' rows `stride` apart, contiguous. */
template <int CV, typename T>
__attribute__((target("avx512f"))) void weighted_sum16(const float* e, int visible, float total, const T* v, int64_t stride, float* out) {
  __m512 acc[CV];
  for (int c = 0; c < CV; c++) acc[c] = _mm512_setzero_ps();
  for (int j = 0; j < visible; j++) {
    if (e[j] == 0.0f) continue;
    const __m512 p = _mm512_set1_ps(round_to<T>(e[j] / total));
    const T* vr = v + j * stride;
    for (int c = 0; c < CV; c++) acc[c] = _mm512_fmadd_ps(p, load16(vr + 16 * c), acc[c]);
  }
  for (int c = 0; c < CV; c++) _mm512_storeu_ps(out + 16 * c, acc[c]);
}

/** softmax(scale q k^T (causal: bottom-right aligned)) v for q [B, Hq, Tq, D], k [B, H, S, D], v [B, H,
 * S, Dv] (GQA: Hq a multiple of H), with an optional key mask [B, >= S] (int32, nonzero: attend; a
 * batch's left padding). As MLX's fallback: q scaled and scores rounded to the dtype,
 * softmax in float32, its weights rounded, the weighted sum accumulated in float32. */
class AttentionCpu : public mx::UnaryPrimitive {
  /** Multiply-adds (scores and weighted sums) from which the heads are split between two cores. */
  static constexpr int64_t SPLIT_WORK = 1 << 20;

 public:
  AttentionCpu(mx::Stream stream, float scale, bool causal) : mx::UnaryPrimitive(stream), scale_(scale), causal_(causal) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out), scale = scale_, causal = causal_]() mutable {
      const auto key_mask = in.size() > 3 ? std::optional<mx::array>(in[3]) : std::nullopt;
      by_dtype(out.dtype(), [&]<typename T>() { run<T>(in[0], in[1], in[2], key_mask, out, scale, causal); });
    });
  }

  template <typename T>
  static void run(const mx::array& q, const mx::array& k, const mx::array& v, const std::optional<mx::array>& key_mask, mx::array& out, float scale,
                  bool causal) {
    const int batch = q.shape(0), q_heads = q.shape(1), queries = q.shape(2), dim = q.shape(3);
    const int kv_heads = k.shape(1), keys = k.shape(2), v_dim = v.shape(3);
    const int repeats = q_heads / kv_heads;
    const auto &qs = q.strides(), &ks = k.strides(), &vs = v.strides();
    const T* qp = q.data<T>();
    const T* kp = k.data<T>();
    const T* vp = v.data<T>();
    T* o = out.data<T>();
    const float scale_t = round_to<T>(scale);
    // The 16-lane paths: AVX-512, contiguous rows of 64 or 128 values.
    static const bool wide = avx512_available(/* vnni */ false);
    const bool wide_keys = wide && ks[3] == 1 && (dim == 64 || dim == 128);
    const bool wide_values = wide && vs[3] == 1 && (v_dim == 64 || v_dim == 128);
    // One unit of work: a batch row's key/value head and the query heads that share it (GQA), so each
    // key and value row is read once for all of them.
    auto part = [&](int begin, int end) {
      std::vector<float> query(static_cast<size_t>(repeats) * dim), weights(static_cast<size_t>(repeats) * keys), acc(static_cast<size_t>(repeats) * v_dim),
          total(repeats);
      for (int unit = begin; unit < end; unit++) {
        const int b = unit / kv_heads, kvh = unit % kv_heads;
        const T* kb = kp + b * ks[0] + kvh * ks[1];
        const T* vb = vp + b * vs[0] + kvh * vs[1];
        // The batch row's key mask (nonzero: attend): a masked key's score is -inf, as MLX's where.
        const int32_t* mask = key_mask ? key_mask->data<int32_t>() + b * key_mask->strides(0) : nullptr;
        const int64_t mask_stride = key_mask ? key_mask->strides(1) : 0;
        for (int t = 0; t < queries; t++) {
          for (int r = 0; r < repeats; r++) {
            const T* qr = qp + b * qs[0] + (kvh * repeats + r) * qs[1] + t * qs[2];
            for (int i = 0; i < dim; i++) query[r * dim + i] = round_to<T>(scale_t * static_cast<float>(qr[i * qs[3]]));
          }
          const int visible = causal ? keys - queries + t + 1 : keys;
          // Blocks of 16 keys at once where the 16-lane path runs (contiguous rows of 64 or 128).
          int first = 0;
          if (wide_keys) {
            for (; first + 16 <= visible; first += 16) {
              for (int r = 0; r < repeats; r++) {
                float* w = weights.data() + static_cast<size_t>(r) * keys + first;
                if (dim == 64)
                  scores16<4>(query.data() + r * dim, kb + first * ks[2], ks[2], w);
                else
                  scores16<8>(query.data() + r * dim, kb + first * ks[2], ks[2], w);
                for (int l = 0; l < 16; l++) w[l] = round_to<T>(w[l]);
              }
              if (mask)
                for (int l = 0; l < 16; l++)
                  if (mask[(first + l) * mask_stride] == 0)
                    for (int r = 0; r < repeats; r++) weights[static_cast<size_t>(r) * keys + first + l] = -std::numeric_limits<float>::infinity();
            }
          }
          for (int j = first; j < visible; j++) {
            const T* kr = kb + j * ks[2];
            const bool attends = !mask || mask[j * mask_stride] != 0;
            for (int r = 0; r < repeats; r++) {
              float s = 0;
              if (!attends)
                s = -std::numeric_limits<float>::infinity();
              else if (ks[3] == 1)
                s = round_to<T>(dot(query.data() + r * dim, kr, dim));
              else {
                for (int i = 0; i < dim; i++) s += query[r * dim + i] * static_cast<float>(kr[i * ks[3]]);
                s = round_to<T>(s);
              }
              weights[static_cast<size_t>(r) * keys + j] = s;
            }
          }
          for (int r = 0; r < repeats; r++) {
            float* w = weights.data() + static_cast<size_t>(r) * keys;
            float peak = -std::numeric_limits<float>::infinity();
            for (int j = 0; j < visible; j++) peak = std::max(peak, w[j]);
            for (int j = 0; j < visible; j++) w[j] = exp_like_mlx(w[j] - peak);
            float sum = 0;
            for (int j = 0; j < visible; j++) sum += w[j];
            total[r] = sum;
          }
          std::fill(acc.begin(), acc.end(), 0.0f);
          if (wide_values) {
            for (int r = 0; r < repeats; r++) {
              const float* e = weights.data() + static_cast<size_t>(r) * keys;
              if (v_dim == 64)
                weighted_sum16<4>(e, visible, total[r], vb, vs[2], acc.data() + r * v_dim);
              else
                weighted_sum16<8>(e, visible, total[r], vb, vs[2], acc.data() + r * v_dim);
            }
          }
          for (int j = 0; j < (wide_values ? 0 : visible); j++) {
            const T* vr = vb + j * vs[2];
            for (int r = 0; r < repeats; r++) {
              const float e = weights[static_cast<size_t>(r) * keys + j];
              if (e == 0.0f) continue; // a masked key (its value may be anything)
              const float p = round_to<T>(e / total[r]);
              float* a = acc.data() + r * v_dim;
              if (vs[3] == 1)
                for (int i = 0; i < v_dim; i++) a[i] += p * static_cast<float>(vr[i]);
              else
                for (int i = 0; i < v_dim; i++) a[i] += p * static_cast<float>(vr[i * vs[3]]);
            }
          }
          for (int r = 0; r < repeats; r++) {
            T* orow = o + ((static_cast<int64_t>(b) * q_heads + kvh * repeats + r) * queries + t) * v_dim;
            for (int i = 0; i < v_dim; i++) orow[i] = static_cast<T>(acc[r * v_dim + i]);
          }
        }
      }
    };
    const int units = batch * kv_heads;
    const int64_t work = static_cast<int64_t>(batch) * q_heads * queries * keys * (dim + v_dim);
    if (work >= SPLIT_WORK)
      in_chunks(units, std::max(1, units / 8), [&](int64_t begin, int64_t end) { part(begin, end); });
    else
      part(0, units);
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("AttentionCpu runs on the CPU only"); }
  const char* name() const override { return "AttentionCpu"; }
  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const AttentionCpu&>(other);
    return scale_ == o.scale_ && causal_ == o.causal_;
  }

 private:
  float scale_;
  bool causal_;
};

/** silu(gate) * up, elementwise (gate and up of one shape and dtype; strided views allowed), as
 * MLX's compiled swiglu computes it: sigmoid(g) = g < 0 ? y : 1 - y with y = 1 / (1 + exp(|g|))
 * (exp's and sigmoid's results rounded to the dtype), then each product rounded. */
class SwigluCpu : public mx::UnaryPrimitive {
 public:
  explicit SwigluCpu(mx::Stream stream) : mx::UnaryPrimitive(stream) {}

  void eval_cpu(const std::vector<mx::array>& inputs, mx::array& out) override {
    prepare(stream(), inputs, out).dispatch([in = weak(inputs), out = mx::array::unsafe_weak_copy(out)]() mutable {
      by_dtype(out.dtype(), [&]<typename T>() { run<T>(in[0], in[1], out); });
    });
  }

  template <typename T>
  static void run(const mx::array& gate, const mx::array& up, mx::array& out) {
    const int64_t d = gate.shape(-1), rows = gate.size() / d, gs = gate.strides().back(), us = up.strides().back();
    T* o = out.data<T>();
    for (int64_t r = 0; r < rows; r++) {
      const T* g = gate.data<T>() + row_start(gate, r);
      const T* u = up.data<T>() + row_start(up, r);
      T* orow = o + r * d;
      auto one = [](float gv, float uv) {
        const float y = 1.0f / (1.0f + round_to<T>(exp_like_mlx(std::fabs(gv))));
        const float sigmoid = round_to<T>(gv < 0 ? y : 1.0f - y);
        return static_cast<T>(round_to<T>(gv * sigmoid) * uv);
      };
      if (gs == 1 && us == 1)
        for (int64_t i = 0; i < d; i++) orow[i] = one(static_cast<float>(g[i]), static_cast<float>(u[i]));
      else
        for (int64_t i = 0; i < d; i++) orow[i] = one(static_cast<float>(g[i * gs]), static_cast<float>(u[i * us]));
    }
  }

  void eval_gpu(const std::vector<mx::array>&, mx::array&) override { throw std::runtime_error("SwigluCpu runs on the CPU only"); }
  const char* name() const override { return "SwigluCpu"; }
  bool is_equivalent(const mx::Primitive&) const override { return true; }
};

/** q, k and v as AttentionCpu takes them (causal: no more queries than keys). */
bool attention_fits(const mx::array& q, const mx::array& k, const mx::array& v, bool causal) {
  const auto t = q.dtype();
  return floating(t) && q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 && k.dtype() == t && v.dtype() == t && q.size() > 0 && k.size() > 0 &&
         k.shape(0) == q.shape(0) && v.shape(0) == q.shape(0) && k.shape(1) == v.shape(1) && q.shape(1) % k.shape(1) == 0 && k.shape(3) == q.shape(3) &&
         v.shape(2) == k.shape(2) && (!causal || q.shape(2) <= k.shape(2));
}

} // namespace

mx::array mlxb::rms_norm(const mx::array& x, const mx::array& weight, float eps) {
  const auto t = x.dtype();
  if (on_cpu() && floating(t) && x.ndim() >= 1 && x.size() > 0 && weight.dtype() == t && weight.ndim() == 1 && weight.shape(0) == x.shape(-1))
    return mx::array(x.shape(), t, std::make_shared<RmsNormCpu>(cpu_stream(), eps), {x, weight});
  return mx::fast::rms_norm(x, weight, eps);
}

mx::array mlxb::rope(const mx::array& x, int dims, bool traditional, std::optional<float> base, float scale, const mx::array& offset,
                     const std::optional<mx::array>& periods) {
  const auto t = x.dtype();
  const bool fits = on_cpu() && floating(t) && x.ndim() >= 3 && x.size() > 0 && dims > 0 && dims % 2 == 0 && dims <= x.shape(-1) &&
                    offset.dtype() == mx::int32 && offset.ndim() <= 1 && (offset.size() == 1 || offset.size() == static_cast<size_t>(x.shape(0))) &&
                    (periods ? periods->dtype() == mx::float32 && periods->ndim() == 1 && periods->shape(0) == dims / 2 : base.has_value());
  if (!fits) return mx::fast::rope(x, dims, traditional, base, scale, offset, periods);
  std::vector<mx::array> inputs{x, offset};
  if (periods) inputs.push_back(*periods);
  return mx::array(x.shape(), t, std::make_shared<RopeCpu>(cpu_stream(), dims, traditional, base.value_or(0.0f), scale), std::move(inputs));
}

mx::array mlxb::swiglu(const mx::array& gate, const mx::array& up, const std::function<mx::array()>& otherwise) {
  const auto t = gate.dtype();
  if (on_cpu() && floating(t) && up.dtype() == t && gate.shape() == up.shape() && gate.ndim() >= 1 && gate.size() > 0)
    return mx::array(gate.shape(), t, std::make_shared<SwigluCpu>(cpu_stream()), {gate, up});
  return otherwise();
}

std::optional<mx::array> mlxb::attention_key_mask(const mx::array& q, const mx::array& k, const mx::array& v, float scale, const mx::array& key_mask) {
  const bool fits = on_cpu() && key_mask.dtype() == mx::int32 && key_mask.ndim() == 2 && q.ndim() == 4 && key_mask.shape(0) == q.shape(0) &&
                    key_mask.shape(1) >= k.shape(2) && attention_fits(q, k, v, true);
  if (!fits) return std::nullopt;
  mx::Shape shape{q.shape(0), q.shape(1), q.shape(2), v.shape(3)};
  return mx::array(std::move(shape), q.dtype(), std::make_shared<AttentionCpu>(cpu_stream(), scale, true), {q, k, v, key_mask});
}

mx::array mlxb::attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, const std::string& mode,
                          const std::optional<mx::array>& mask) {
#ifdef MLXB_CUDA
  if (!mask && mode.empty() && q.ndim() == 4 && q.shape(2) == 1)
    if (auto ours = decode_attention_cuda(q, k, v, scale)) return *ours;
#endif
  const bool fits = on_cpu() && !mask && (mode.empty() || mode == "causal") && attention_fits(q, k, v, mode == "causal");
  if (!fits) return mx::fast::scaled_dot_product_attention(q, k, v, scale, mode, mask);
  mx::Shape shape{q.shape(0), q.shape(1), q.shape(2), v.shape(3)};
  return mx::array(std::move(shape), q.dtype(), std::make_shared<AttentionCpu>(cpu_stream(), scale, mode == "causal"), {q, k, v});
}
