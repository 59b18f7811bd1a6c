// One query position's attention over a KV cache on the GPU, split over the keys (flash-decoding):
// MLX's decode kernel (sdpav_1pass) gives each query head one block, so a step keeps a few dozen of
// an H200's 132 SMs busy (qwen3-8b shape at 576 keys: 19.5 us a layer; this kernel 14.6 us, the
// step's wall time 4146 -> 3973 us, one A/B run on one H200). Here a block takes a chunk of the keys
// of one KV head for all the query heads that share it (GQA), so the keys and values are read once,
// by hundreds of blocks; the last block of a KV head to finish merges its chunks (one kernel node,
// as MLX's: a step's host cost grows with its nodes), its loads of the chunks' parts issued together
// (14.7 -> 11.8 us a layer on the 8B, CUPTI, thirteenth session), those of the first chunks before the
// chunk weights (10.1 / 9.8 -> 9.5 / 9.4 us, eighteenth session).
// A decode step's KV cache write can go inside it (decode_attention_write_cuda, used by kv.cpp): the
// warp that meets the new position reads its key and value from the step's k and v and stores them
// into the cache, which saves the write's two copy kernels a layer.
// Arithmetic as MLX's kernel: float32, q pre-scaled by scale * log2(e), exp2, an online softmax per
// warp; chunks merged by their maxima; the output rounded once to the dtype. Only the summation
// order differs from MLX's.
// An MLX primitive (DecodeAttentionCuda) with one kernel node on MLX's command encoder; the kernel
// compiled by NVRTC on first use (cuda.h); MLX's attention where it does not fit or does not compile.
//
// CUDA build only (zig build -Dcuda=true).
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "cuda.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

// After cuda.h's dtype_source. D: head dim (64 or 128); G: query heads per KV head; VECTOR: a
// lane's D / 32 values loaded at once (the inputs aligned for it).
// Grid (chunks, KV heads, batch), 4 warps; a warp takes every 4th key of the chunk, each lane D / 32
// consecutive dims; keys whose key_mask entry (int32 [B, >= keys], when given) is 0 are skipped. Each
// block writes per query head of its chunk the unnormalized sum of weighted values [D] and (max, sum
// of weights), float32; then counts itself done in its KV head's counter, and the block that counts
// last merges the head's chunks into out [B, Hq, 1, D] and sets the counter back to 0.
constexpr const char* SOURCE = R"CUDA(

#define WARPS 4
#define MAX_CHUNKS 128
#ifndef MERGE
#define MERGE 1  // 0: a timing trial of scripts/gpu/attention_lab.py only (the chunks' parts, no merge: out unwritten)
#endif
#define E (D / 32)

struct Params {
  long long q_strides[2], k_strides[3], v_strides[3], mask_strides[2], k_new_strides[2], v_new_strides[2];
  int kv_heads, keys, chunk_keys, chunks, at;
  float scale_log2;
};

/** A lane's E consecutive values of a row, as stored. */
struct __align__(E * sizeof(T)) Row {
  T v[E];
};
/** The row at p: in one load when VECTOR (p aligned to its size). */
__device__ __forceinline__ Row load_raw(const T* p) {
#if !VECTOR
  Row r;
#pragma unroll
  for (int e = 0; e < E; e++) r.v[e] = p[e];
  return r;
#else
  return *reinterpret_cast<const Row*>(p);
#endif
}
__device__ __forceinline__ void store_raw(T* p, const Row& r) {
#if !VECTOR
#pragma unroll
  for (int e = 0; e < E; e++) p[e] = r.v[e];
#else
  *reinterpret_cast<Row*>(p) = r;
#endif
}
__device__ __forceinline__ void to_float(const Row& r, float* out) {
#pragma unroll
  for (int e = 0; e < E; e++) out[e] = load(r.v[e]);
}

// Keys a warp loads at once (all their loads in flight together: a key's round trip to memory, not
// its arithmetic, is what a warp's loop waits on); fewer where the scores would need many registers.
#define BATCH (G * E <= 16 ? 8 : 4)

extern "C" __global__ void __launch_bounds__(WARPS * 32)
mlxb_attention(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const int* __restrict__ key_mask, float* part_o,
               float* part_ml, int* counters, T* __restrict__ out, const T* __restrict__ k_new, const T* __restrict__ v_new, T* k_write, T* v_write,
               Params p) {
  WAIT_FOR_UPSTREAM();
  LAUNCH_DOWNSTREAM();
  const int chunk = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int first = chunk * p.chunk_keys, last = min(first + p.chunk_keys, p.keys);
  float qr[G][E], o[G][E], m[G], l[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    const T* qp = q + b * p.q_strides[0] + (long long)(h * G + g) * p.q_strides[1] + lane * E;
    to_float(load_raw(qp), qr[g]);
#pragma unroll
    for (int e = 0; e < E; e++) qr[g][e] *= p.scale_log2, o[g][e] = 0.f;
    m[g] = -INFINITY, l[g] = 0.f;
  }
  const T* kb = k + b * p.k_strides[0] + h * p.k_strides[1] + lane * E;
  const T* vb = v + b * p.v_strides[0] + h * p.v_strides[1] + lane * E;
  const int* mask = key_mask ? key_mask + b * p.mask_strides[0] : nullptr;
  // The step's own key and value (at p.at, when given) come from k_new and v_new, and the warp whose
  // keys hold that position writes them into the cache there: no other block reads it.
  const T* knb = k_new ? k_new + b * p.k_new_strides[0] + h * p.k_new_strides[1] + lane * E : nullptr;
  const T* vnb = v_new ? v_new + b * p.v_new_strides[0] + h * p.v_new_strides[1] + lane * E : nullptr;
  if (p.at >= first && p.at < last && (p.at - first) % WARPS == warp) {
    store_raw(k_write + b * p.k_strides[0] + h * p.k_strides[1] + p.at * p.k_strides[2] + lane * E, load_raw(knb));
    store_raw(v_write + b * p.v_strides[0] + h * p.v_strides[1] + p.at * p.v_strides[2] + lane * E, load_raw(vnb));
  }
  for (int t0 = first + warp; t0 < last; t0 += BATCH * WARPS) {
    Row kraw[BATCH], vraw[BATCH];
    bool use[BATCH];
#pragma unroll
    for (int j = 0; j < BATCH; j++) {
      const int t = t0 + j * WARPS;
      use[j] = t < last && !(mask && mask[t * p.mask_strides[1]] == 0); // a padding key: weight 0
      if (t < last) {
        kraw[j] = load_raw(t == p.at ? knb : kb + t * p.k_strides[2]);
        vraw[j] = load_raw(t == p.at ? vnb : vb + t * p.v_strides[2]);
      }
    }
    // The batch's scores, then one online-softmax update per head.
    float s[BATCH][G];
#pragma unroll
    for (int j = 0; j < BATCH; j++) {
      float kr[E];
      to_float(kraw[j], kr);
#pragma unroll
      for (int g = 0; g < G; g++) {
        float x = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) x = fmaf(qr[g][e], kr[e], x);
        s[j][g] = x;
      }
    }
#pragma unroll
    for (int j = 0; j < BATCH; j++) {
#pragma unroll
      for (int g = 0; g < G; g++) {
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s[j][g] += __shfl_xor_sync(0xffffffffu, s[j][g], off);
        if (!use[j]) s[j][g] = -INFINITY;
      }
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
      float mn = m[g];
#pragma unroll
      for (int j = 0; j < BATCH; j++) mn = fmaxf(mn, s[j][g]);
      if (mn == -INFINITY) continue; // no key of this batch counts (and none before it)
      const float alpha = exp2f(m[g] - mn);
      l[g] *= alpha;
#pragma unroll
      for (int e = 0; e < E; e++) o[g][e] *= alpha;
#pragma unroll
      for (int j = 0; j < BATCH; j++) {
        if (!use[j]) continue; // (its values may not have been loaded)
        const float w = exp2f(s[j][g] - mn);
        float vr[E];
        to_float(vraw[j], vr);
        l[g] += w;
#pragma unroll
        for (int e = 0; e < E; e++) o[g][e] = fmaf(w, vr[e], o[g][e]);
      }
      m[g] = mn;
    }
  }
  // The warps' parts merged through shared memory: per warp and head its max, sum and values.
  __shared__ float sm_o[WARPS][G][D];
  __shared__ float sm_m[WARPS][G], sm_l[WARPS][G];
#pragma unroll
  for (int g = 0; g < G; g++) {
#pragma unroll
    for (int e = 0; e < E; e++) sm_o[warp][g][lane * E + e] = o[g][e];
    if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
  }
  __syncthreads();
  for (int i = threadIdx.x; i < G * D; i += WARPS * 32) {
    const int g = i / D, d = i % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++) mx = fmaxf(mx, sm_m[w][g]);
    float sum = 0.f, acc = 0.f;
    // (A chunk of padding keys only keeps max -inf and sum 0: it weighs 0 in the merge.)
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      // A warp without keys has max -inf and adds nothing.
      const float f = sm_m[w][g] == -INFINITY ? 0.f : exp2f(sm_m[w][g] - mx);
      sum += sm_l[w][g] * f;
      acc += sm_o[w][g][d] * f;
    }
    const long long row = ((long long)b * p.kv_heads * G + h * G + g) * p.chunks + chunk;
    part_o[row * D + d] = acc;
    if (d == 0) part_ml[2 * row] = mx, part_ml[2 * row + 1] = sum;
  }
#if !MERGE
  return;
#endif
  // The last block of this KV head (the counter's count) merges.
  __shared__ int merging;
  // The block's stores ordered before its count by the barrier and one thread's fences (as a
  // cooperative grid's sync does), the other blocks' stores before the merging block's reads likewise.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    merging = atomicAdd(&counters[b * p.kv_heads + h], 1) == p.chunks - 1;
    if (merging) __threadfence();
  }
  __syncthreads();
  if (!merging) return;
  // A thread's R output values' parts of the first MERGE_BATCH chunks, loaded before the chunk weights
  // (they do not depend on them): the two sets of loads in flight together. Then each head's chunk
  // weights (2^(max - largest max) / the sum), a warp per head, each lane holding chunks lane,
  // lane + 32, ... (one load of max and sum each); then every output value's weighted sum, in chunk
  // order, a further batch's loads issued together.
  constexpr int R = (G * D + WARPS * 32 - 1) / (WARPS * 32);
  constexpr int MERGE_BATCH = 128 / R < MAX_CHUNKS ? 128 / R : MAX_CHUNKS;
  const float* po[R];
  float acc[R], held[MERGE_BATCH][R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int i = min((int)threadIdx.x + r * WARPS * 32, G * D - 1), g = i / D, d = i % D;
    po[r] = part_o + ((long long)b * p.kv_heads * G + h * G + g) * p.chunks * D + d;
    acc[r] = 0.f;
  }
  auto load_batch = [&](int c0) {
#pragma unroll
    for (int c = 0; c < MERGE_BATCH; c++)
#pragma unroll
      for (int r = 0; r < R; r++) held[c][r] = c0 + c < p.chunks ? __ldcg(po[r] + (long long)(c0 + c) * D) : 0.f;
  };
  load_batch(0);
  __shared__ float weights[G][MAX_CHUNKS];
  for (int g = warp; g < G; g += WARPS) {
    const float2* ml = reinterpret_cast<const float2*>(part_ml) + ((long long)b * p.kv_heads * G + h * G + g) * p.chunks;
    float2 mine[MAX_CHUNKS / 32];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < MAX_CHUNKS / 32; j++) {
      const int c = lane + 32 * j;
      mine[j] = c < p.chunks ? __ldcg(ml + c) : make_float2(-INFINITY, 0.f);
      mx = fmaxf(mx, mine[j].x);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < MAX_CHUNKS / 32; j++) {
      mine[j].x = mine[j].x == -INFINITY ? 0.f : exp2f(mine[j].x - mx);
      sum += mine[j].y * mine[j].x;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
#pragma unroll
    for (int j = 0; j < MAX_CHUNKS / 32; j++) {
      const int c = lane + 32 * j;
      if (c < p.chunks) weights[g][c] = mine[j].x / sum;
    }
  }
  __syncthreads();
  for (int c0 = 0; c0 < p.chunks; c0 += MERGE_BATCH) {
    if (c0 > 0) load_batch(c0);
#pragma unroll
    for (int c = 0; c < MERGE_BATCH; c++) {
      if (c0 + c >= p.chunks) break;
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int g = min((int)threadIdx.x + r * WARPS * 32, G * D - 1) / D;
        acc[r] = fmaf(weights[g][c0 + c], held[c][r], acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; r++) {
    const int i = threadIdx.x + r * WARPS * 32;
    if (i < G * D) out[((long long)b * p.kv_heads * G + h * G + i / D) * D + i % D] = round_to(acc[r]);
  }
  if (threadIdx.x == 0) counters[b * p.kv_heads + h] = 0;
}
)CUDA";

struct Params {
  long long q_strides[2], k_strides[3], v_strides[3], mask_strides[2], k_new_strides[2], v_new_strides[2];
  int kv_heads, keys, chunk_keys, chunks, at;
  float scale_log2;
};

/** The kernel for (dtype, head dim, query heads per KV head) on the device, compiled on first use;
 * null when that fails (reported once on stderr; the caller then uses MLX's attention). */
CUfunc_st* kernel_for(int device_index, mx::Dtype dtype, int d, int g, bool vector) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, int, bool>, CUfunc_st*> cache;
  static bool warned = false;
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_tuple(device_index, dtype_code(dtype), d, g, vector);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  CUfunc_st* f = nullptr;
  try {
    const std::string source = "#define D " + std::to_string(d) + "\n#define G " + std::to_string(g) + "\n#define VECTOR " + std::to_string(vector ? 1 : 0) +
                               "\n" + dtype_source(dtype) + SOURCE;
    f = compile_kernel(device_index, source, "mlxb_attention.cu", "mlxb_attention");
  } catch (const std::exception& e) {
    if (!warned) std::fprintf(stderr, "mlx-bun: the CUDA decode attention kernel is unavailable (%s); using MLX's attention\n", e.what());
    warned = true;
  }
  cache[key] = f;
  return f;
}

// Blocks aimed at per step (a few per SM of an H100/H200), the fewest keys a chunk takes, the most
// chunks a head has (the kernel's MAX_CHUNKS: its merge keeps a weight per chunk in shared memory).
constexpr int TARGET_BLOCKS = 512;
constexpr int MIN_CHUNK = 32;

/** (fewest keys a chunk, blocks aimed at): MLXB_ATTENTION_CHUNKS=MIN,TARGET for trying others (bench
 * attention), else the constants above. */
std::pair<int, int> chunking() {
  static const std::pair<int, int> chosen = [] {
    const char* v = std::getenv("MLXB_ATTENTION_CHUNKS");
    int min_chunk = MIN_CHUNK, target = TARGET_BLOCKS;
    if (v && std::sscanf(v, "%d,%d", &min_chunk, &target) != 2) min_chunk = MIN_CHUNK, target = TARGET_BLOCKS;
    return std::make_pair(std::max(1, min_chunk), std::max(1, target));
  }();
  return chosen;
}
constexpr int MAX_CHUNKS = 128;

/** The most chunks a KV head's keys are split into for a batch of `batch` rows. */
int most_chunks(int batch, int kv_heads) {
  return std::clamp(chunking().second / (batch * kv_heads), 1, MAX_CHUNKS);
}

/** p's keys, write position and chunks for attending `keys` keys while writing at `at`. */
void set_keys(Params& p, int keys, int at, int batch) {
  p.keys = keys, p.at = at;
  p.chunks = std::max(1, std::min(most_chunks(batch, p.kv_heads), (keys + chunking().first - 1) / chunking().first));
  p.chunk_keys = (keys + p.chunks - 1) / p.chunks;
  p.chunks = (keys + p.chunk_keys - 1) / p.chunk_keys; // no empty chunk
}

/** The kernel's arguments but its Params: q, k, v, key_mask, part_o, part_ml, counters, out, k_new,
 * v_new, and the buffers after the write (k, v again). */
using Pointers = std::array<void*, 12>;

/** The attention node of a captured step (step graphs): launched at each later step at the cache
 * position its CacheSlots give, over the same buffers (its parts sized for the most chunks). */
class CapturedAttention : public NodeUpdater {
 public:
  CapturedAttention(CUfunc_st* kernel, const Pointers& pointers, const Params& p, int batch, std::shared_ptr<CacheSlots> slots)
      : kernel_(kernel), pointers_(pointers), params_(p), batch_(batch), slots_(std::move(slots)) {}

  std::shared_ptr<NodeLaunch> next() override {
    auto slot = slots_->next();
    if (!slot) return nullptr;
    auto launch = std::make_shared<Launch>();
    launch->values = pointers_;
    launch->p = params_;
    set_keys(launch->p, slot->second, slot->first, batch_);
    launch->function = kernel_;
    launch->grid = dim3{static_cast<unsigned>(launch->p.chunks), static_cast<unsigned>(launch->p.kv_heads), static_cast<unsigned>(batch_)};
    launch->block = dim3{128, 1, 1};
    return launch;
  }

  void taken() override { slots_->taken(); }

 private:
  struct Launch : NodeLaunch {
    Pointers values;
    Params p;
    void* addresses[13];
    void** params() override {
      for (size_t i = 0; i < values.size(); i++) addresses[i] = &values[i];
      addresses[12] = &p;
      return addresses;
    }
  };
  CUfunc_st* kernel_;
  Pointers pointers_;
  Params params_;
  int batch_;
  std::shared_ptr<CacheSlots> slots_;
};

/** Inputs q [B, Hq, 1, D], keys and values [B, Hkv, S, D] (any strides but a unit one for the last
 * axis), when writing (at >= 0) the step's key and value [B, Hkv, 1, D], and optionally a key mask
 * [B, >= keys] (int32, nonzero: attend; a batch's left padding). Attends the first `keys` positions
 * when writing, else all of them.
 * Outputs [B, Hq, 1, D], row-contiguous, and when writing the keys' and values' buffers after the
 * write at position `at`: the input buffers' memory (a KV cache's write in place, as kv_write.cpp's
 * CacheWrite: the caller vouches that nothing reads the old values there). */
class DecodeAttentionCuda : public mx::Primitive {
 public:
  DecodeAttentionCuda(mx::Stream stream, CUfunc_st* kernel, float scale, int keys, int at, bool masked, std::shared_ptr<CacheSlots> slots = nullptr)
      : mx::Primitive(stream), kernel_(kernel), scale_(scale), keys_(keys), at_(at), masked_(masked), slots_(std::move(slots)) {}

  void eval_cpu(const std::vector<mx::array>&, std::vector<mx::array>&) override { throw std::runtime_error("DecodeAttentionCuda runs on the GPU only"); }

  void eval_gpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    const bool writes = at_ >= 0;
    const auto& q = inputs[0];
    const mx::array* k_new = writes ? &inputs[3] : nullptr;
    const mx::array* v_new = writes ? &inputs[4] : nullptr;
    const mx::array* mask = masked_ ? &inputs.back() : nullptr;
    auto& out = outputs[0];
    const int device = stream().device.index;
    auto& encoder = cu::get_command_encoder(stream());
    if (writes) {
      // The buffers after the write are the input buffers' memory (copied first if not laid out in
      // full: never so for a KV cache's buffers in practice).
      for (int j = 0; j < 2; j++) {
        const auto& buffer = inputs[1 + j];
        auto& all = outputs[1 + j];
        if (buffer.flags().row_contiguous && buffer.size() == buffer.data_size()) {
          all.copy_shared_buffer(buffer);
        } else {
          all.set_data(device_buffer(device, all.nbytes()));
          strided_copy_cuda(stream(), buffer, all, 0);
        }
      }
    }
    const auto& k = writes ? outputs[1] : inputs[1];
    const auto& v = writes ? outputs[2] : inputs[2];
    const int batch = q.shape(0), q_heads = q.shape(1), d = q.shape(3), kv_heads = k.shape(1);
    Params p{};
    p.q_strides[0] = q.strides(0), p.q_strides[1] = q.strides(1);
    for (int i = 0; i < 3; i++) p.k_strides[i] = k.strides(i), p.v_strides[i] = v.strides(i);
    if (mask) p.mask_strides[0] = mask->strides(0), p.mask_strides[1] = mask->strides(1);
    if (writes) {
      for (int i = 0; i < 2; i++) p.k_new_strides[i] = k_new->strides(i), p.v_new_strides[i] = v_new->strides(i);
    }
    // Without a write, every key of k (kv.cpp's DecodeAttention reuses this primitive for steps of
    // more keys); with one, the first keys_.
    const int keys = writes ? keys_ : k.shape(2);
    p.kv_heads = kv_heads;
    set_keys(p, keys, at_, batch);
    p.scale_log2 = scale_ * 1.4426950408889634f;

    // The chunks' partial results: kept until the GPU is done with them. Sized for the most chunks
    // in a step being captured, whose later launches attend more keys.
    const bool captured = slots_ && step_capture_active();
    const size_t rows = static_cast<size_t>(batch) * q_heads * (captured ? most_chunks(batch, kv_heads) : p.chunks);
    mx::array part_o({static_cast<int>(rows * d)}, mx::float32, nullptr, {});
    mx::array part_ml({static_cast<int>(rows * 2)}, mx::float32, nullptr, {});
    part_o.set_data(device_buffer(device, part_o.nbytes()));
    part_ml.set_data(device_buffer(device, part_ml.nbytes()));
    out.set_data(device_buffer(device, out.nbytes()));

    for (const auto& a : inputs) encoder.set_input_array(a);
    for (const auto& o : outputs) encoder.set_output_array(o);
    void* qp = device_pointer(q);
    void* kp = device_pointer(k);
    void* vp = device_pointer(v);
    void* knp = writes ? device_pointer(*k_new) : nullptr;
    void* vnp = writes ? device_pointer(*v_new) : nullptr;
    // The vector loads need each lane's values aligned to their size; else the kernel that loads
    // them one by one (compiled now, on first need).
    const int e = d / 32;
    const auto aligned = [&](const void* ptr, std::initializer_list<int64_t> strides) {
      bool ok = reinterpret_cast<uintptr_t>(ptr) % (e * q.itemsize()) == 0;
      for (auto s : strides) ok = ok && s % e == 0;
      return ok;
    };
    CUfunc_st* kernel = kernel_;
    if (!aligned(qp, {q.strides(0), q.strides(1)}) || !aligned(kp, {k.strides(0), k.strides(1), k.strides(2)}) ||
        !aligned(vp, {v.strides(0), v.strides(1), v.strides(2)}) || (writes && !aligned(knp, {k_new->strides(0), k_new->strides(1)})) ||
        (writes && !aligned(vnp, {v_new->strides(0), v_new->strides(1)}))) {
      kernel = kernel_for(device, q.dtype(), d, q_heads / kv_heads, false);
      if (!kernel) throw std::runtime_error("the CUDA decode attention kernel for unaligned inputs did not compile");
    }
    void* maskp = mask ? device_pointer(*mask) : nullptr;
    void* op = device_pointer(part_o);
    void* mp = device_pointer(part_ml);
    void* cp = counters_for(device, batch * kv_heads);
    void* outp = device_pointer(out);
    void* params[] = {&qp, &kp, &vp, &maskp, &op, &mp, &cp, &outp, &knp, &vnp, &kp, &vp, &p};
    encoder.add_kernel_node_raw(kernel, dim3{static_cast<unsigned>(p.chunks), static_cast<unsigned>(kv_heads), static_cast<unsigned>(batch)}, dim3{128, 1, 1},
                                dim3{1, 1, 1}, 0, params);
    keep_until_done(encoder, part_o), keep_until_done(encoder, part_ml);
    if (captured) {
      step_capture_node(std::make_shared<CapturedAttention>(kernel, Pointers{qp, kp, vp, maskp, op, mp, cp, outp, knp, vnp, kp, vp}, p, batch, slots_));
    }
  }

  const char* name() const override { return "DecodeAttentionCuda"; }

  bool is_equivalent(const mx::Primitive& other) const override {
    const auto& o = static_cast<const DecodeAttentionCuda&>(other);
    return kernel_ == o.kernel_ && scale_ == o.scale_ && keys_ == o.keys_ && at_ == o.at_ && masked_ == o.masked_;
  }

 private:
  CUfunc_st* kernel_;
  float scale_;
  int keys_, at_;
  bool masked_;
  std::shared_ptr<CacheSlots> slots_; // while a step is captured: where its later launches write
};

/** Whether the kernel takes q [B, Hq, 1, D] over the first `keys` positions of k and v [B, Hkv, S, D]
 * with the key mask: on this build's GPU, float32/bfloat16/float16, D 64 or 128, up to 8 query heads
 * per KV head, unit strides on the last axis. */
bool fits(const mx::Stream& stream, const mx::array& q, const mx::array& k, const mx::array& v, int keys, const std::optional<mx::array>& key_mask) {
  const auto t = q.dtype();
  return stream.device == mx::Device::gpu && (t == mx::float32 || t == mx::bfloat16 || t == mx::float16) && q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4 &&
         k.dtype() == t && v.dtype() == t && q.shape(2) == 1 && (q.shape(3) == 64 || q.shape(3) == 128) && k.shape(3) == q.shape(3) &&
         v.shape(3) == q.shape(3) && q.shape(0) == k.shape(0) && v.shape(0) == k.shape(0) && v.shape(1) == k.shape(1) && v.shape(2) == k.shape(2) &&
         k.shape(1) > 0 && keys > 0 && keys <= k.shape(2) && q.shape(1) % k.shape(1) == 0 && q.shape(1) / k.shape(1) <= 8 && q.strides(3) == 1 &&
         k.strides(3) == 1 && v.strides(3) == 1 &&
         (!key_mask || (key_mask->dtype() == mx::int32 && key_mask->ndim() == 2 && key_mask->shape(0) == q.shape(0) && key_mask->shape(1) >= keys));
}

/** The kernel for q's dtype and shape, made ready (its ring of counters too); null where
 * MLXB_CUDA_ATTENTION=mlx keeps MLX's kernel (for comparison) or it did not compile. */
CUfunc_st* ready_kernel(const mx::Stream& stream, const mx::array& q, const mx::array& k) {
  static const bool wanted = !env_is("MLXB_CUDA_ATTENTION", "mlx");
  if (!wanted) return nullptr;
  CUfunc_st* kernel = kernel_for(stream.device.index, q.dtype(), q.shape(3), q.shape(1) / k.shape(1), true);
  if (kernel) make_counter_ring(stream.device.index, stream);
  return kernel;
}

} // namespace

std::optional<mx::array> mlxb::decode_attention_cuda(const mx::array& q, const mx::array& k, const mx::array& v, float scale,
                                                     const std::optional<mx::array>& key_mask) {
  auto stream = mx::default_stream(mx::default_device());
  if (!fits(stream, q, k, v, k.ndim() == 4 ? k.shape(2) : 0, key_mask)) return std::nullopt;
  CUfunc_st* kernel = ready_kernel(stream, q, k);
  if (!kernel) return std::nullopt;
  std::vector<mx::array> inputs{q, k, v};
  if (key_mask) inputs.push_back(*key_mask);
  return mx::array(q.shape(), q.dtype(), std::make_shared<DecodeAttentionCuda>(stream, kernel, scale, -1, -1, key_mask.has_value()), std::move(inputs));
}

std::optional<Arrays> mlxb::decode_attention_write_cuda(const mx::array& q, const mx::array& k_buffer, const mx::array& v_buffer, const mx::array& k_new,
                                                        const mx::array& v_new, int at, int keys, float scale, const std::optional<mx::array>& key_mask,
                                                        std::shared_ptr<CacheSlots> slots) {
  auto stream = mx::default_stream(mx::default_device());
  const auto fits_new = [&](const mx::array& x, const mx::array& buffer) {
    return x.ndim() == 4 && x.dtype() == q.dtype() && x.shape(0) == buffer.shape(0) && x.shape(1) == buffer.shape(1) && x.shape(2) == 1 &&
           x.shape(3) == buffer.shape(3) && x.strides(3) == 1;
  };
  if (!fits(stream, q, k_buffer, v_buffer, keys, key_mask) || !fits_new(k_new, k_buffer) || !fits_new(v_new, v_buffer) || at < 0 || at >= keys)
    return std::nullopt;
  CUfunc_st* kernel = ready_kernel(stream, q, k_buffer);
  if (!kernel) return std::nullopt;
  std::vector<mx::array> inputs{q, k_buffer, v_buffer, k_new, v_new};
  if (key_mask) inputs.push_back(*key_mask);
  auto primitive = std::make_shared<DecodeAttentionCuda>(stream, kernel, scale, keys, at, key_mask.has_value(), std::move(slots));
  return mx::array::make_arrays({q.shape(), k_buffer.shape(), v_buffer.shape()}, {q.dtype(), q.dtype(), q.dtype()}, std::move(primitive), std::move(inputs));
}
