// Qwen3's per-head RMS norm of q and k followed by RoPE, as one CUDA kernel: what MLX runs as four
// primitives (rms_norm and rope on q, then on k: four kernels and four nodes per layer and step).
// The arithmetic is MLX's: the normalized value is rounded to the dtype, multiplied by the weight
// and rounded again (MLX's rms_norm), then rotated in float32 with MLX's angle (scale * position
// times 2^(-i / (dims/2) * log2 base), or one over the given period) and rounded once (MLX's rope).
// The sum of squares is reduced in another order than MLX's kernel, so the normalizer may differ in
// its last bit. An MLX primitive (QKNormRopeCuda) with one kernel node on MLX's command encoder; the
// kernel is compiled by NVRTC on first use (cuda.h) and MLX's ops are used if that fails.
//
// CUDA build only (zig build -Dcuda=true).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>

#include "cuda.h"
#include "norm_rope_row.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

// One block per row (example b, head h, position t) of q, then of k (after cuda.h's dtype_source and
// norm_rope_row.h's row): the row's normalized values kept in shared memory (dynamic: D floats).
constexpr const char* SOURCE = R"CUDA(
struct Params {
  long long q_strides[4], k_strides[4];
  long long w_stride_q, w_stride_k, offset_stride, freq_stride;
  int batch, q_heads, k_heads, length, dims_d, dims, traditional, has_freqs;
  float eps, scale, log2_base;
};

extern "C" __global__ void mlxb_qk_norm_rope(const T* q, const T* k, const T* wq, const T* wk, const int* offset, const float* freqs,
                                             T* q_out, T* k_out, Params p) {
  extern __shared__ float normed[];
  __shared__ float partial[32];
  WAIT_FOR_UPSTREAM();
  LAUNCH_DOWNSTREAM();
  // Rows are a grid's blocks (fewer than 2^31): 32-bit index arithmetic (64-bit division is a long
  // routine, before the first load).
  unsigned row = blockIdx.x;
  const unsigned q_rows = (unsigned)p.batch * p.q_heads * p.length;
  const bool is_q = row < q_rows;
  if (!is_q) row -= q_rows;
  const unsigned heads = is_q ? p.q_heads : p.k_heads;
  const long long* s = is_q ? p.q_strides : p.k_strides;
  const T* w = is_q ? wq : wk;
  const long long ws = is_q ? p.w_stride_q : p.w_stride_k;
  T* out = (is_q ? q_out : k_out) + (long long)row * p.dims_d;
  const int t = (int)(row % (unsigned)p.length);
  const int h = (int)((row / (unsigned)p.length) % heads);
  const int b = (int)(row / ((unsigned)p.length * heads));
  const T* in = (is_q ? q : k) + b * s[0] + h * s[1] + t * s[2];
  RopeParams rope;
  rope.freq_stride = p.freq_stride, rope.dims = p.dims, rope.traditional = p.traditional, rope.has_freqs = p.has_freqs;
  rope.scale = p.scale, rope.log2_base = p.log2_base;
  norm_rope_row(in, s[3], w, ws, p.dims_d, p.eps, offset + b * p.offset_stride, t, rope, freqs, out, normed, partial, blockDim.x);
}
)CUDA";

struct Params {
  long long q_strides[4], k_strides[4];
  long long w_stride_q, w_stride_k, offset_stride, freq_stride;
  int batch, q_heads, k_heads, length, dims_d, dims, traditional, has_freqs;
  float eps, scale, log2_base;
};

/** The kernel for the dtype on the device, compiled on first use; null when that fails (reported
 * once on stderr; the caller then uses MLX's ops). */
CUfunc_st* kernel_for(int device_index, mx::Dtype dtype) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, CUfunc_st*> kernels;
  static bool warned = false;
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_pair(device_index, dtype_code(dtype));
  if (auto it = kernels.find(key); it != kernels.end()) return it->second;
  CUfunc_st* f = nullptr;
  try {
    f = compile_kernel(device_index, dtype_source(dtype) + NORM_ROPE_ROW_SOURCE + SOURCE, "mlxb_qk_norm_rope.cu", "mlxb_qk_norm_rope");
  } catch (const std::exception& e) {
    if (!warned) std::fprintf(stderr, "mlx-bun: the CUDA q/k norm + rope kernel is unavailable (%s); using MLX's rms_norm and rope\n", e.what());
    warned = true;
  }
  kernels[key] = f;
  return f;
}

/** Inputs q, k [B, H, T, D] (any strides), their norm weights [D], the offsets (int32, one or [B]) and,
 * with periods, the periods [dims / 2] (float32); outputs q and k normed and rotated, row-contiguous. */
class QKNormRopeCuda : public mx::Primitive {
 public:
  QKNormRopeCuda(mx::Stream stream, CUfunc_st* kernel, float eps, int dims, bool traditional, float base, float scale)
      : mx::Primitive(stream), kernel_(kernel), eps_(eps), dims_(dims), traditional_(traditional), base_(base), scale_(scale) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("QKNormRopeCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const auto &q = inputs[0], &k = inputs[1], &wq = inputs[2], &wk = inputs[3], &offset = inputs[4];
    const bool has_freqs = inputs.size() > 5;
    auto& encoder = cu::get_command_encoder(stream());
    for (auto& o : outputs) o.set_data(device_buffer(stream().device.index, o.nbytes()));
    for (const auto& a : inputs) encoder.set_input_array(a);
    for (const auto& o : outputs) encoder.set_output_array(o);
    Params p{};
    for (int i = 0; i < 4; i++) p.q_strides[i] = q.strides(i), p.k_strides[i] = k.strides(i);
    p.w_stride_q = wq.strides(0);
    p.w_stride_k = wk.strides(0);
    p.offset_stride = offset.ndim() == 0 || offset.size() == 1 ? 0 : offset.strides(0);
    p.freq_stride = has_freqs ? inputs[5].strides(0) : 0;
    p.batch = q.shape(0), p.q_heads = q.shape(1), p.k_heads = k.shape(1), p.length = q.shape(2), p.dims_d = q.shape(3);
    p.dims = dims_, p.traditional = traditional_ ? 1 : 0, p.has_freqs = has_freqs ? 1 : 0;
    p.eps = eps_, p.scale = scale_, p.log2_base = std::log2(base_);
    void* qp = device_pointer(q);
    void* kp = device_pointer(k);
    void* wqp = device_pointer(wq);
    void* wkp = device_pointer(wk);
    void* op = device_pointer(offset);
    void* fp = has_freqs ? device_pointer(inputs[5]) : nullptr;
    void* qo = device_pointer(outputs[0]);
    void* ko = device_pointer(outputs[1]);
    void* params[] = {&qp, &kp, &wqp, &wkp, &op, &fp, &qo, &ko, &p};
    const unsigned rows = static_cast<unsigned>(static_cast<long long>(p.batch) * (p.q_heads + p.k_heads) * p.length);
    const unsigned threads = static_cast<unsigned>(std::min(1024, std::max(32, (p.dims_d / 2 + 31) / 32 * 32)));
    encoder.add_kernel_node_raw(kernel_, dim3{rows, 1, 1}, dim3{threads, 1, 1}, dim3{1, 1, 1}, static_cast<uint32_t>(p.dims_d * sizeof(float)), params);
  }

  const char* name() const override { return "QKNormRopeCuda"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const QKNormRopeCuda&>(other);
    return kernel_ == o.kernel_ && eps_ == o.eps_ && dims_ == o.dims_ && traditional_ == o.traditional_ && base_ == o.base_ && scale_ == o.scale_;
  }

 private:
  CUfunc_st* kernel_;
  float eps_;
  int dims_;
  bool traditional_;
  float base_, scale_;
};

} // namespace

std::optional<Arrays> mlxb::qk_norm_rope_cuda(const mx::array& q, const mx::array& k, const mx::array& q_weight, const mx::array& k_weight, float eps, int dims,
                                              bool traditional, std::optional<float> base, float scale, const mx::array& offset,
                                              const std::optional<mx::array>& periods) {
  auto stream = mx::default_stream(mx::default_device());
  const auto t = q.dtype();
  const int D = q.ndim() == 4 ? q.shape(3) : 0;
  // Shared memory holds a row (D floats); MLX's checks (shapes, dtypes) are left to its ops.
  const bool fits = stream.device == mx::Device::gpu && (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && q.ndim() == 4 && k.ndim() == 4 &&
                    k.dtype() == t && q_weight.dtype() == t && k_weight.dtype() == t && q.shape(0) == k.shape(0) && q.shape(2) == k.shape(2) &&
                    k.shape(3) == D && D > 0 && D <= 8192 && q.size() > 0 && k.size() > 0 && q_weight.ndim() == 1 && k_weight.ndim() == 1 &&
                    q_weight.shape(0) == D && k_weight.shape(0) == D && dims > 0 && dims % 2 == 0 && dims <= D && offset.dtype() == mx::int32 &&
                    (offset.ndim() == 0 || (offset.ndim() == 1 && (offset.size() == 1 || offset.shape(0) == q.shape(0)))) &&
                    (base.has_value() != periods.has_value()) &&
                    (!periods || (periods->dtype() == mx::float32 && periods->ndim() == 1 && periods->shape(0) == dims / 2));
  if (!fits) return std::nullopt;
  CUfunc_st* kernel = kernel_for(stream.device.index, t);
  if (!kernel) return std::nullopt;
  std::vector<mx::array> inputs{q, k, q_weight, k_weight, offset};
  if (periods) inputs.push_back(*periods);
  auto primitive = std::make_shared<QKNormRopeCuda>(stream, kernel, eps, dims, traditional, base.value_or(1.f), scale);
  return mx::array::make_arrays({q.shape(), k.shape()}, {t, t}, std::move(primitive), std::move(inputs));
}
