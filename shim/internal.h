// Helpers shared by the shim's translation units: handle conversion and the exception fence.
#pragma once

#include <cmath>
#include <cstdlib>

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "mlx/mlx.h"
#include "mlxb.h"

namespace mlxb {

namespace mx = mlx::core;

void set_error(const std::string& message);

// MLX C++ exceptions must never cross the C boundary: every entry point runs inside this.
template <typename F>
int guard(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception");
  }
  return 1;
}

struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/** Whether the environment variable `name` is set to `value` (the shim's switches for comparisons
 * and triage, docs/gpu.md; each caller reads it once into a static). */
inline bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::string(v) == value;
}

inline const mx::array& arr(mlx_array h, const char* name) {
  if (h == nullptr) throw ArgumentError(std::string("array argument '") + name + "' is null");
  return *static_cast<mx::array*>(h);
}

inline std::optional<mx::array> optional_arr(mlx_array h) {
  if (h == nullptr) return std::nullopt;
  return *static_cast<mx::array*>(h);
}

// ---- recording (tape.cpp): a tape records the ops of one step so the shim can replay them ----

using Arrays = std::vector<mx::array>;
using OpFn = std::function<Arrays(const Arrays&)>;

struct Tape;
// The tape recording on this thread, or null.
extern thread_local Tape* recording;
// Appends an op to the recording tape: its inputs (handles and arrays), outputs (new handles and
// arrays) and how to run it. A pure op (its graph a function of its inputs' shapes and dtypes) is
// also recorded as the MLX nodes it made, which replays rebuild directly while the input shapes
// stay the same; an op on state (the KV cache) runs `fn` again on every replay.
void record(const std::vector<mlx_array>& inputs, const Arrays& xs, const std::vector<mlx_array>& outputs, const Arrays& results, OpFn fn, bool pure);
// Marks the recording tape unusable, saying why (an op without replay support, a host read, ...).
void record_unsupported(const std::string& why);
// A handle freed while recording may be reused by a later array: the tape forgets it.
void forget_handle(mlx_array h);

// Writes a new handle without recording anything (results of emit, and host-made constants).
inline void store(mlx_array* out, mx::array value) {
  if (out == nullptr) throw ArgumentError("out-pointer is null");
  *out = new mx::array(std::move(value));
}

// Writes a result of an op that cannot be replayed (a recording tape becomes unusable).
inline int put(mlx_array* out, mx::array value) {
  if (recording != nullptr) record_unsupported("an op without replay support ran during the recorded step");
  store(out, std::move(value));
  return 0;
}

// Runs an op on the arrays behind `inputs` (non-null handles, in order), writes its results to
// `outputs`, and appends it to the recording tape, if any. `fn` must depend only on its inputs and
// on values it captured (attributes), unless `pure` is false (ops on the KV cache); tape replays
// rebuild a pure op's nodes, or call `fn` again with other arrays.
inline void emit(const std::vector<mlx_array*>& outputs, std::vector<mlx_array> inputs, OpFn fn, bool pure = true) {
  Arrays xs;
  xs.reserve(inputs.size());
  for (auto h : inputs) {
    if (h == nullptr) throw ArgumentError("array argument is null");
    xs.push_back(*static_cast<mx::array*>(h));
  }
  Arrays results = fn(xs);
  if (results.size() != outputs.size()) throw std::logic_error("emit: result count differs from outputs");
  std::vector<mlx_array> handles;
  size_t i = 0;
  for (auto out : outputs) {
    store(out, results[i++]);
    handles.push_back(*out);
  }
  if (recording != nullptr) record(inputs, xs, handles, results, std::move(fn), pure);
}

// One output. Outside a recording it builds the op directly: no handle lists, no std::function, no
// result vector (an eager op's cost is mostly MLX's own node construction, plus these allocations).
template <typename Handles, typename F>
inline void emit_one(mlx_array* out, const Handles& inputs, F& fn) {
  if (recording != nullptr) {
    emit({out}, std::vector<mlx_array>(inputs.begin(), inputs.end()), [fn](const Arrays& x) { return Arrays{fn(x)}; });
    return;
  }
  if (out == nullptr) throw ArgumentError("out-pointer is null");
  Arrays xs;
  xs.reserve(inputs.size());
  for (auto h : inputs) {
    if (h == nullptr) throw ArgumentError("array argument is null");
    xs.push_back(*static_cast<mx::array*>(h));
  }
  *out = new mx::array(fn(xs));
}

template <typename F>
inline void emit1(mlx_array* out, std::initializer_list<mlx_array> inputs, F fn) {
  emit_one(out, inputs, fn);
}

template <typename F>
inline void emit1(mlx_array* out, const std::vector<mlx_array>& inputs, F fn) {
  emit_one(out, inputs, fn);
}

mx::Dtype to_dtype(int dtype);
int from_dtype(mx::Dtype dtype);

inline mx::Shape shape_of(const int32_t* values, int n) {
  if (n < 0 || (n > 0 && values == nullptr)) throw ArgumentError("shape/axes pointer is null");
  return mx::Shape(values, values + n);
}

// A rope's base as the C API gives it: none where periods (freqs) are given or base is NaN.
inline std::optional<float> rope_base(float base, mlx_array freqs) {
  if (freqs != nullptr || std::isnan(base)) return std::nullopt;
  return base;
}

// The shape of a new array: no negative dimension.
inline mx::Shape dims_of(const int32_t* values, int n) {
  auto s = shape_of(values, n);
  for (auto d : s) {
    if (d < 0) throw ArgumentError("negative dimension in shape");
  }
  return s;
}

inline std::vector<mx::array> arrays_of(const mlx_array* handles, int count) {
  if (count < 0 || (count > 0 && handles == nullptr)) throw ArgumentError("arrays pointer is null");
  std::vector<mx::array> xs;
  xs.reserve(count);
  for (int i = 0; i < count; i++) xs.push_back(arr(handles[i], "arrays[i]"));
  return xs;
}

inline std::vector<int> ints_of(const int32_t* values, int n) {
  if (n < 0 || (n > 0 && values == nullptr)) throw ArgumentError("axes pointer is null");
  return std::vector<int>(values, values + n);
}

/** MLXB_QMV=mlx: the shim's own matvec kernels (CPU and CUDA) are not used, MLX's quantized_matmul
 * is (comparisons: bench matvec). Read once. */
bool own_matvec_off();

/** What both of the shim's matvec kernels take, besides their own dtype, group and device checks:
 * x [..., K] with 1..max_rows rows, w [N, K/8] uint32, scales and biases [N, K/group] (biases
 * present), transposed, 4-bit affine; and MLXB_QMV not set to mlx. */
inline bool matvec_fits(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose, int group,
                        std::optional<int> bits, const std::string& mode, int max_rows) {
  return !own_matvec_off() && biases && transpose && bits.value_or(4) == 4 && mode == "affine" && group > 0 && w.dtype() == mx::uint32 && x.ndim() >= 1 &&
         w.ndim() == 2 && scales.ndim() == 2 && biases->shape() == scales.shape() && x.shape(-1) > 0 && x.shape(-1) == w.shape(1) * 8 &&
         x.shape(-1) % group == 0 && w.shape(0) > 0 && scales.shape(0) == w.shape(0) && scales.shape(1) == x.shape(-1) / group && x.size() > 0 &&
         x.size() / x.shape(-1) <= static_cast<size_t>(max_rows);
}

/** x @ dequantize(w)^T (+ addend, rounded as a separate add would be: the product is rounded to
 * x's dtype first) by the CPU kernel of ours (qmv_cpu.cpp) when the inputs fit it: a few rows
 * (float32, bfloat16, float16) against 4-bit affine weights; else nullopt. `addend`, when given, has
 * the product's shape and dtype. int8: x quantized to int8 per block of 64 (qmv_cpu_int8.cpp) where
 * the CPU has AVX-512 VNNI and the group is a multiple of 64; then any number of rows fits. */
std::optional<mx::array> qmv_cpu(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                 std::optional<int> group_size, std::optional<int> bits, const std::string& mode, bool int8,
                                 const std::optional<mx::array>& addend);

/** mx::fast::rms_norm (weight given), mx::fast::rope (array offset) and
 * mx::fast::scaled_dot_product_attention: one node of ours each on the CPU where the inputs fit
 * (shim/ext/fast_cpu.cpp; MLX's CPU backend builds them from many small ops), else MLX's op. */
mx::array rms_norm(const mx::array& x, const mx::array& weight, float eps);
mx::array rope(const mx::array& x, int dims, bool traditional, std::optional<float> base, float scale, const mx::array& offset,
               const std::optional<mx::array>& periods);
mx::array attention(const mx::array& q, const mx::array& k, const mx::array& v, float scale, const std::string& mode, const std::optional<mx::array>& mask);
/** Causal (bottom-right aligned) attention that also skips the keys key_mask [B, >= keys] (int32)
 * holds 0 for: one node of ours on the CPU (a batch's decode step), else nullopt. */
std::optional<mx::array> attention_key_mask(const mx::array& q, const mx::array& k, const mx::array& v, float scale, const mx::array& key_mask);
/** mx::dequantize: one node of ours on the CPU for the affine mode (2, 4 or 8 bits; the output in the
 * scales' dtype), where MLX's CPU backend builds ~50 (shim/ext/dequantize_cpu.cpp); else MLX's. */
mx::array dequantize(const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, std::optional<int> group_size,
                     std::optional<int> bits, const std::string& mode, std::optional<mx::Dtype> dtype);
/** silu(gate) * up: one vectorized node of ours on the CPU (same results as MLX's compiled swiglu),
 * else `otherwise()`. */
mx::array swiglu(const mx::array& gate, const mx::array& up, const std::function<mx::array()>& otherwise);

/** The same on the GPU of a CUDA build (qmv_cuda.cpp; only built with -Dcuda=true). */
std::optional<mx::array> qmv_cuda(const mx::array& x, const mx::array& w, const mx::array& scales, const std::optional<mx::array>& biases, bool transpose,
                                  std::optional<int> group_size, std::optional<int> bits, const std::string& mode, const std::optional<mx::array>& addend);
/** x @ dequantize(w)^T + addend, and MLX's rms_norm of that (weight norm_weight, eps), as one node of
 * two outputs on the GPU of a CUDA build (qmv_cuda.cpp: the kernel's last warp to finish writes the
 * norm) where the inputs fit; else nullopt. */
std::optional<Arrays> qmv_cuda_add_norm(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases, std::optional<int> group_size,
                                        std::optional<int> bits, const std::string& mode, const mx::array& addend, const mx::array& norm_weight, float eps);
/** silu(gate) * up of x @ dequantize(w)^T's halves (w a fused gate/up weight: a gate's rows, then an
 * up's), as one node of the shim's matvec on the GPU of a CUDA build where it fits (one bfloat16 row,
 * the tensor-core kernel's PAIR: each value rounded as the product writes it, then MLX's swiglu);
 * else nullopt. */
std::optional<mx::array> qmv_cuda_swiglu(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                                         std::optional<int> group_size, std::optional<int> bits, const std::string& mode);
/** A fused q/k/v projection of one row (w: q_heads + 2 k_heads heads of D rows) as q, k and v in
 * `shapes` ([1, q_heads, 1, D], [1, k_heads, 1, D] twice) with q and k normed and rotated as
 * qk_norm_rope makes them, as one node of the shim's matvec on the GPU of a CUDA build where it fits
 * (qmv_cuda.cpp: the kernel's QK_NORM_ROPE epilogue); else nullopt. */
std::optional<Arrays> qmv_cuda_qk_norm_rope(const mx::array& x, const mx::array& w, const mx::array& scales, const mx::array& biases,
                                            std::optional<int> group_size, std::optional<int> bits, const std::string& mode,
                                            const std::vector<mx::Shape>& shapes, const mx::array& q_weight, const mx::array& k_weight, float eps, int dims,
                                            bool traditional, std::optional<float> base, float scale, const mx::array& offset,
                                            const std::optional<mx::array>& periods);
/** The partial sums (float32, a few a multiprocessor) of an evaluated, row-contiguous, 16-byte aligned
 * float32 buffer read `passes` times by a kernel of ours that only streams it, on the GPU of a CUDA
 * build (read_cuda.cpp: the read-bandwidth probe of `bench decode`). */
mx::array read_sum_cuda(const mx::array& src, int passes);
/** MLX's compiled swiglu of gate and up (fast.cpp; what mx::compile makes of silu(gate) * up). */
mx::array compiled_swiglu(const mx::array& gate, const mx::array& up);
/** rms_norm of q and of k [B, H, T, D] (weights [D]), then rope on both (dims, traditional, base or
 * periods, scale, offset as mx::fast::rope takes them): qk_norm_rope_cuda where it fits, else MLX's
 * four ops (fast.cpp). */
Arrays qk_norm_rope(const mx::array& q, const mx::array& k, const mx::array& q_weight, const mx::array& k_weight, float eps, int dims, bool traditional,
                    std::optional<float> base, float scale, const mx::array& offset, const std::optional<mx::array>& periods);
/** rms_norm of q and of k [B, H, T, D] (weights [D]), then rope on both (dims, traditional, base or
 * periods, scale, offset as mx::fast::rope takes them), as one primitive of ours on the GPU of a CUDA
 * build when the inputs fit it (norm_rope_cuda.cpp); else nullopt. */
std::optional<Arrays> qk_norm_rope_cuda(const mx::array& q, const mx::array& k, const mx::array& q_weight, const mx::array& k_weight, float eps, int dims,
                                        bool traditional, std::optional<float> base, float scale, const mx::array& offset,
                                        const std::optional<mx::array>& periods);
/** Attention of one query position (q [B, Hq, 1, D]) over keys and values [B, Hkv, L, D], honouring
 * key_mask [B, >= L] (int32, nonzero: attend) when given (a batch's left padding), split over the keys, as one primitive of ours on the GPU of a CUDA build
 * when the inputs fit it (attention_cuda.cpp: D 64 or 128, up to 8 query heads per KV head); else nullopt. */
std::optional<mx::array> decode_attention_cuda(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                                               const std::optional<mx::array>& key_mask = std::nullopt);
/** The same over the first `keys` positions of a layer's KV buffers [B, Hkv, S, D] while writing the
 * step's key and value (k_new, v_new [B, Hkv, 1, D], the buffers' dtype) into them at position
 * `at` < keys, in place (the caller vouches that nothing reads the old values there: a KV cache's
 * in-place write, kv.cpp), as one primitive: (out, the buffers after the write); else nullopt. */
/** Where a decode step's KV cache write goes when a captured step is launched again (step graphs):
 * the position written and the number of keys attended at the next step, or nullopt where that write
 * would not go in place into the captured buffers; `taken()` records the write as the cache's. Made
 * by kv.cpp for decode_attention_write_cuda while a step is captured. */
struct CacheSlots {
  virtual ~CacheSlots() = default;
  virtual std::optional<std::pair<int, int>> next() const = 0;
  virtual void taken() = 0;
};
std::optional<Arrays> decode_attention_write_cuda(const mx::array& q, const mx::array& k_buffer, const mx::array& v_buffer, const mx::array& k_new,
                                                  const mx::array& v_new, int at, int keys, float scale, const std::optional<mx::array>& key_mask,
                                                  std::shared_ptr<CacheSlots> slots = nullptr);
/** Step graphs (step_graph_cuda.cpp; CUDA build only): a decode step captured as one CUDA graph of
 * its own and launched again without MLX's per-kernel encoding. */
struct StepGraph;
/** The step: its results from its inputs; `cache_ops` counts the ops on the KV cache it called. */
using StepFn = std::function<Arrays(const Arrays& inputs, int& cache_ops)>;
/** Runs `step` over copies of `inputs` (evaluated, row-contiguous) into `results`, evaluating them
 * with MLX's encoder held to one graph, and keeps that graph, with every buffer it touches, as the
 * StepGraph returned; `results` are then copies made after it (lazy). Null, with `why`, where the step
 * cannot be launched again from its graph (`results` are then the step's own, evaluated as usual). */
std::shared_ptr<StepGraph> capture_step(const Arrays& inputs, const StepFn& step, Arrays& results, std::string& why);
/** The captured step's next launch over `inputs` (the shapes and dtypes captured): its results, lazy
 * (one node). Throws, changing nothing, where the KV cache no longer takes its writes in place. */
Arrays launch_step(const std::shared_ptr<StepGraph>& graph, const Arrays& inputs);
/** Whether a step is being captured on this thread. */
bool step_capture_active();
/** While a step is captured: one of its KV cache ops made its write's CacheSlots. */
void step_capture_cache_write();
/** The product's elements [offsets[i], offsets[i] + size of shapes[i]) as arrays of those shapes:
 * views of the one buffer the product's primitive fills, one node (shim/ext/split_product.cpp). */
Arrays split_product(const mx::array& product, const std::vector<mx::Shape>& shapes, std::vector<int64_t> offsets);
/** out (an array of its own shape, without data) as the product's elements [offset, offset + its
 * size), row-major, a view of the product's buffer (SplitProduct's outputs; a one-row product's
 * column ranges). */
void share_elements(const mx::array& product, mx::array& out, int64_t offset);
/** SamplePick on the GPU of a CUDA build (sample_cuda.cpp): whether its kernel for the dtype compiled,
 * and its evaluation (inputs logits, params, uniforms; outputs tokens, peak, threshold). */
bool sample_kernel_ready(int device_index, mx::Dtype dtype);
void sample_pick_cuda(const mx::Stream& stream, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs);
/** GreedyPick on the GPU of a CUDA build (sample_cuda.cpp): whether its kernel for the dtype compiled
 * (and its done-counters made: on the thread building the graph), and its evaluation (input the
 * logits [B, V]; outputs the tokens [B, 1] uint32 and each row's max [B] in the logits' dtype). */
bool greedy_kernel_ready(const mx::Stream& stream, mx::Dtype dtype);
void greedy_pick_cuda(const mx::Stream& stream, const mx::array& logits, std::vector<mx::array>& outputs);
/** Penalize on the GPU of a CUDA build (sample_cuda.cpp): whether its kernel for the dtype compiled,
 * and its evaluation (inputs logits, ids, params; output the penalized logits, float32). */
bool penalize_kernel_ready(int device_index, mx::Dtype dtype);
void penalize_cuda(const mx::Stream& stream, const std::vector<mx::array>& inputs, mx::array& out);
/** Bytes of the device buffers holding the outputs of the shim's GPU primitives (cuda.h's
 * device_buffer) in use (in_use) or idle in their pool; freeing the idle ones. CUDA build only. */
size_t device_buffer_bytes(bool in_use);
void device_buffers_release();
/** Copies src (4-D, any strides, broadcast too) into dst (4-D, of src's itemsize) as dst's elements
 * at + sum c_k dst.strides(k) for each index c of src's shape: one kernel node on the stream's
 * command encoder. CUDA build only (kv_cuda.cpp). */
void strided_copy_cuda(const mx::Stream& stream, const mx::array& src, const mx::array& dst, int64_t at);

} // namespace mlxb
