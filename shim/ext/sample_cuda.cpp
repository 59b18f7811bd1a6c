// SamplePick's CUDA kernel (the rule: sample.cpp). One block of 1024 threads per row: the row's max
// and first argmax, the radix selections (k-th largest by counts, the top-p threshold by masses in
// float32, summed in a fixed order), then the draw as a scan in id order (warp-wide inclusive scans
// over 32-id tiles, each warp a contiguous segment, segments in order). Every result is
// deterministic. Compiled by NVRTC on first use (cuda.h).
//
// CUDA build only (zig build -Dcuda=true).
#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda.h"
#include "mlx/allocator.h"
#include "mlx/primitives.h"

using namespace mlxb;

namespace {

constexpr const char* SOURCE = R"CUDA(

#define FULL 0xffffffffu
#define THREADS 1024
#define WARPS (THREADS / 32)

struct Params {
  long long vocab, row_stride, col_stride, param_row, param_col, seed_row, seed_col, draw_stride;
};

__device__ __forceinline__ unsigned fmix32(unsigned h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

__device__ __forceinline__ unsigned key_of(float f) {
  unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float float_of(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Histograms are kept per warp (no atomics): lanes whose elements share a digit are grouped
// (__match_any_sync) and the group's lowest lane adds their count, or their masses summed in lane
// order; the warps' histograms are then summed in warp order. Every sum has a fixed order.
struct Shared {
  union {
    unsigned count[WARPS][256];
    float mass[WARPS][256];
  } h;
  float warp_f[WARPS];
  long long warp_i[WARPS];
  unsigned prefix;
  long long rest;
  float below, bound;
  int token;
};

__device__ void clear_histograms(Shared& s) {
  unsigned* h = &s.h.count[0][0];
  for (int j = threadIdx.x; j < WARPS * 256; j += THREADS) h[j] = 0u;
  __syncthreads();
}

// The k-th largest value of the row (1 <= k <= V), counted with repeats.
__device__ float kth_largest(const T* row, const Params& p, long long k, Shared& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    clear_histograms(s);
    for (long long base = 0; base < p.vocab; base += THREADS) {
      const long long i = base + threadIdx.x;
      const unsigned key = i < p.vocab ? key_of(load(row[i * p.col_stride])) : 0u;
      const bool in = i < p.vocab && (key & mask) == prefix;
      if (!__any_sync(FULL, in)) continue;
      const unsigned d = in ? (key >> shift) & 255u : 256u + lane;
      const unsigned peers = __match_any_sync(FULL, d);
      if (in && lane == __ffs(peers) - 1) s.h.count[warp][d] += __popc(peers);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += THREADS) {
      unsigned c = 0;
      for (int w = 0; w < WARPS; w++) c += s.h.count[w][d];
      s.h.count[0][d] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long above = 0;
      int d = 255;
      for (; d > 0; d--) {
        if (above + (long long)s.h.count[0][d] >= k) break;
        above += (long long)s.h.count[0][d];
      }
      s.rest = k - above;
      s.prefix = prefix | ((unsigned)d << shift);
    }
    __syncthreads();
    k = s.rest;
    prefix = s.prefix;
    mask |= 255u << shift;
  }
  return float_of(prefix);
}

// The smallest value whose ascending cumulative mass exp(x - top) passes drop times the total.
__device__ float mass_threshold(const T* row, const Params& p, float top, float drop, Shared& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  unsigned prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    clear_histograms(s);
    for (long long base = 0; base < p.vocab; base += THREADS) {
      const long long i = base + threadIdx.x;
      const float v = i < p.vocab ? load(row[i * p.col_stride]) : 0.f;
      const unsigned key = key_of(v);
      const bool in = i < p.vocab && (key & mask) == prefix;
      if (!__any_sync(FULL, in)) continue;
      const float e = in ? __expf(v - top) : 0.f;
      const unsigned d = in ? (key >> shift) & 255u : 256u + lane;
      const unsigned peers = __match_any_sync(FULL, d);
      float sum = 0.f;
      if (__all_sync(FULL, peers == FULL)) {
        sum = e;
        for (int m = 16; m > 0; m >>= 1) sum += __shfl_xor_sync(FULL, sum, m);
      } else {
        for (int j = 0; j < 32; j++) {
          const float ej = __shfl_sync(FULL, e, j);
          if ((peers >> j) & 1u) sum += ej;
        }
      }
      if (in && lane == __ffs(peers) - 1) s.h.mass[warp][d] += sum;
    }
    __syncthreads();
    for (int d = threadIdx.x; d < 256; d += THREADS) {
      float m = 0.f;
      for (int w = 0; w < WARPS; w++) m += s.h.mass[w][d];
      s.h.mass[0][d] = m;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      if (shift == 24) {
        float total = 0.f;
        for (int d = 0; d < 256; d++) total += s.h.mass[0][d];
        s.below = 0.f;
        s.bound = drop * total;
      }
      float run = s.below;
      int d = 0, last = 0;
      for (; d < 256; d++) {
        if (s.h.mass[0][d] > 0.f) last = d;
        if (run + s.h.mass[0][d] > s.bound) break;
        run += s.h.mass[0][d];
      }
      if (d == 256) d = last;
      else s.below = run;
      s.prefix = prefix | ((unsigned)d << shift);
    }
    __syncthreads();
    prefix = s.prefix;
    mask |= 255u << shift;
  }
  return float_of(prefix);
}

extern "C" __global__ void __launch_bounds__(THREADS) mlxb_sample_pick(const T* logits, const float* params, const unsigned* seeds, const unsigned* draws,
                                                                         unsigned* tokens, float* peaks, float* thresholds, Params p) {
  __shared__ Shared s;
  const long long V = p.vocab;
  const int b = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const T* row = logits + (long long)b * p.row_stride;
  const float* prm = params + (long long)b * p.param_row;
  const float inv_t = prm[0], drop = prm[p.param_col], log_min_p = prm[2 * p.param_col];
  const long long min_keep = (long long)prm[3 * p.param_col], top_k = (long long)prm[4 * p.param_col];

  // The max and its first id; NaN anywhere makes the row's peak NaN.
  float best = -INFINITY;
  long long best_i = 0x7fffffffffffffffll;
  int nan = 0;
  for (long long i = threadIdx.x; i < V; i += THREADS) {
    float v = load(row[i * p.col_stride]);
    if (v != v) nan = 1;
    else if (v > best || (v == best && i < best_i)) best = v, best_i = i;
  }
  for (int m = 16; m > 0; m >>= 1) {
    float ov = __shfl_xor_sync(FULL, best, m);
    long long oi = __shfl_xor_sync(FULL, best_i, m);
    if (ov > best || (ov == best && oi < best_i)) best = ov, best_i = oi;
  }
  if (lane == 0) s.warp_f[warp] = best, s.warp_i[warp] = best_i;
  nan = __syncthreads_or(nan);
  float top = s.warp_f[0];
  long long arg = s.warp_i[0];
  for (int w = 1; w < WARPS; w++) {
    if (s.warp_f[w] > top || (s.warp_f[w] == top && s.warp_i[w] < arg)) top = s.warp_f[w], arg = s.warp_i[w];
  }
  if (arg >= V) arg = 0;
  float threshold = -INFINITY;
  int token = (int)arg;
  if (nan) {
    top = __int_as_float(0x7fc00000);
    threshold = top;
    token = 0;
  } else if (isfinite(top) && inv_t != 0.f) {
    if (log_min_p > -INFINITY) threshold = fminf(top + log_min_p, min_keep > 1 ? kth_largest(row, p, min(min_keep, V), s) : top);
    if (top_k > 0) threshold = fmaxf(threshold, kth_largest(row, p, min(top_k, V), s));
    if (drop >= 0.f) threshold = fmaxf(threshold, mass_threshold(row, p, top, drop, s));

    // The draw: warp w scans ids [w * seg, (w + 1) * seg) in tiles of 32.
    const long long seg = ((V + WARPS - 1) / WARPS + 31) / 32 * 32;
    const long long begin = warp * seg, end = min(V, begin + seg);
    float run = 0.f;
    int last = -1;
    for (long long base = begin; base < end; base += 32) {
      long long i = base + lane;
      float q = 0.f;
      if (i < end) {
        float v = load(row[i * p.col_stride]);
        if (v >= threshold) q = __expf((v - top) * inv_t);
      }
      if (q > 0.f) last = (int)i;
      float sum = q;
      for (int o = 1; o < 32; o <<= 1) {
        float n = __shfl_up_sync(FULL, sum, o);
        if (lane >= o) sum += n;
      }
      run += __shfl_sync(FULL, sum, 31);
    }
    for (int m = 16; m > 0; m >>= 1) last = max(last, __shfl_xor_sync(FULL, last, m));
    __syncthreads();
    if (lane == 0) s.warp_f[warp] = run, s.warp_i[warp] = last;
    if (threadIdx.x == 0) s.token = 0x7fffffff;
    __syncthreads();
    float before = 0.f, total = 0.f;
    int kept_last = -1;
    for (int w = 0; w < WARPS; w++) {
      if (w == warp) before = total;
      total += s.warp_f[w];
      kept_last = max(kept_last, (int)s.warp_i[w]);
    }
    const unsigned* seed = seeds + (long long)b * p.seed_row;
    const unsigned key = fmix32(seed[0] ^ fmix32(seed[p.seed_col] ^ fmix32(draws[(long long)b * p.draw_stride] * 0x9e3779b1u + 0x7f4a7c15u)));
    const float target = (float)(((double)(key >> 8) + 0.5) / 16777216.0) * total;
    run = before;
    for (long long base = begin; base < end; base += 32) {
      long long i = base + lane;
      float q = 0.f;
      if (i < end) {
        float v = load(row[i * p.col_stride]);
        if (v >= threshold) q = __expf((v - top) * inv_t);
      }
      float sum = q;
      for (int o = 1; o < 32; o <<= 1) {
        float n = __shfl_up_sync(FULL, sum, o);
        if (lane >= o) sum += n;
      }
      unsigned crossed = __ballot_sync(FULL, q > 0.f && run + sum > target);
      if (crossed) {
        if (lane == 0) atomicMin(&s.token, (int)(base + __ffs(crossed) - 1));
        break;
      }
      run += __shfl_sync(FULL, sum, 31);
    }
    __syncthreads();
    token = s.token != 0x7fffffff ? s.token : (kept_last >= 0 ? kept_last : (int)arg);
  } else if (!isfinite(top)) {
    threshold = top;
    token = 0;
  }
  if (threadIdx.x == 0) {
    tokens[b] = (unsigned)token;
    peaks[b] = top;
    thresholds[b] = threshold;
  }
}
)CUDA";

struct Params {
  long long vocab, row_stride, col_stride, param_row, param_col, seed_row, seed_col, draw_stride;
};

// Penalize's kernel (the rule: sample.cpp's penalize_row). One block per row: the row copied to
// the float32 output, then a thread per recent slot; the thread of an id's first slot applies that
// id's penalties (the other slots holding it do nothing).
constexpr const char* PENALIZE_SOURCE = R"CUDA(

struct PenalizeParams {
  long long vocab, row_stride, col_stride, width, id_row, id_col, param_row, param_col;
};

extern "C" __global__ void mlxb_penalize(const T* __restrict__ x, const int* __restrict__ ids, const float* __restrict__ params, float* __restrict__ out,
                                         PenalizeParams p) {
  const long long b = blockIdx.x;
  const T* xr = x + b * p.row_stride;
  float* o = out + b * p.vocab;
  for (long long i = threadIdx.x; i < p.vocab; i += blockDim.x) o[i] = load(xr[i * p.col_stride]);
  __syncthreads();
  const int* row = ids + b * p.id_row;
  const float* pr = params + b * p.param_row;
  const long long W = p.width;
  const float repetition = pr[0], presence = pr[2 * p.param_col], frequency = pr[4 * p.param_col];
  // A context as a count of slots in [0, W] (below 1 or NaN: none; past W: all).
  const float contexts[3] = {pr[p.param_col], pr[3 * p.param_col], pr[5 * p.param_col]};
  long long from[3];
  for (int i = 0; i < 3; i++) from[i] = W - (contexts[i] >= 1.f ? (long long)fminf(contexts[i], (float)W) : 0);
  const long long from_rep = from[0], from_pres = from[1], from_freq = from[2];
  for (long long w = threadIdx.x; w < W; w += blockDim.x) {
    const int id = row[w * p.id_col];
    if (id < 0 || id >= p.vocab) continue;
    bool first = true;
    for (long long u = 0; u < w && first; u++) first = row[u * p.id_col] != id;
    if (!first) continue;
    bool in_rep = false, in_pres = false;
    for (long long u = w; u < W; u++)
      if (row[u * p.id_col] == id) in_rep = in_rep || u >= from_rep, in_pres = in_pres || u >= from_pres;
    float v = o[id];
    if (in_rep) v = v < 0.f ? v * repetition : v / repetition;
    if (in_pres) v -= presence;
    for (long long u = max(w, from_freq); u < W; u++)
      if (row[u * p.id_col] == id) v -= frequency;
    o[id] = v;
  }
}
)CUDA";

struct PenalizeParams {
  long long vocab, row_stride, col_stride, width, id_row, id_col, param_row, param_col;
};

// The greedy pick (GreedyPick, sample.cpp): each row's first argmax and its max as MLX's argmax and
// max give them (a NaN is larger than any number: the first NaN's index and NaN), split over blocks of
// 256 threads, each a contiguous range of the row; the last block of a row to finish (a done-counter
// a row) merges the ranges' results in order. Grid (blocks, rows).
constexpr const char* GREEDY_SOURCE = R"CUDA(

#define THREADS 256

struct GreedyParams {
  long long vocab, row_stride, col_stride;
  int blocks;
};

/** (v, i) replaces (best, at) when larger (a NaN larger than any number), or equal at a lower index. */
__device__ __forceinline__ void take(float& best, int& at, float v, int i) {
  const bool v_nan = v != v, best_nan = best != best;
  const bool better = (v_nan || best_nan) ? v_nan && (!best_nan || i < at) : v > best || (v == best && i < at);
  if (better) best = v, at = i;
}

/** The block's best value and first index over its threads' (best, at), in thread 0. */
__device__ __forceinline__ void block_best(float& best, int& at) {
  __shared__ float values[THREADS / 32];
  __shared__ int indices[THREADS / 32];
  for (int o = 16; o > 0; o >>= 1) take(best, at, __shfl_down_sync(0xffffffffu, best, o), __shfl_down_sync(0xffffffffu, at, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) values[warp] = best, indices[warp] = at;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < THREADS / 32; w++) take(best, at, values[w], indices[w]);
  }
}

extern "C" __global__ void __launch_bounds__(THREADS) mlxb_greedy_pick(const T* logits, float* part_value, int* part_index, int* counters,
                                                                      unsigned* tokens, T* peak, GreedyParams p) {
  WAIT_FOR_UPSTREAM();
  LAUNCH_DOWNSTREAM();
  const int row = blockIdx.y;
  const long long per = (p.vocab + p.blocks - 1) / p.blocks;
  const long long first = blockIdx.x * per, last = min(first + per, p.vocab);
  const T* x = logits + row * p.row_stride;
  float best = -INFINITY;
  int at = 0x7fffffff;
  // Eight loads a thread issued together (a range of 2048 is one such round), then the rest.
  long long i = first + threadIdx.x;
  for (; i + 7 * THREADS < last; i += 8 * THREADS) {
    float v[8];
#pragma unroll
    for (int u = 0; u < 8; u++) v[u] = load(x[(i + u * THREADS) * p.col_stride]);
#pragma unroll
    for (int u = 0; u < 8; u++) take(best, at, v[u], (int)(i + u * THREADS));
  }
  for (; i < last; i += THREADS) take(best, at, load(x[i * p.col_stride]), (int)i);
  block_best(best, at);
  __shared__ bool merges;
  if (threadIdx.x == 0) {
    part_value[row * p.blocks + blockIdx.x] = best;
    part_index[row * p.blocks + blockIdx.x] = at;
    __threadfence();
    merges = atomicAdd(&counters[row], 1) == p.blocks - 1;
  }
  __syncthreads();
  if (!merges) return;
  // The row's last block: the ranges' results (at most THREADS of them), merged.
  __threadfence();
  best = -INFINITY, at = 0x7fffffff;
  if (threadIdx.x < p.blocks) take(best, at, __ldcg(part_value + row * p.blocks + threadIdx.x), __ldcg(part_index + row * p.blocks + threadIdx.x));
  block_best(best, at);
  if (threadIdx.x == 0) {
    tokens[row] = at < p.vocab ? (unsigned)at : 0u;
    peak[row] = round_to(best);
    counters[row] = 0;
  }
}
)CUDA";

/** The kernel `name` of `source` for the dtype on the device, compiled on first use; null when that
 * fails (reported once on stderr; the primitive then runs on the CPU). */
CUfunc_st* kernel_for(int device_index, mx::Dtype dtype, const char* source, const std::string& name) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, std::string>, CUfunc_st*> kernels;
  static bool warned = false;
  std::lock_guard<std::mutex> lock(mutex);
  auto key = std::make_tuple(device_index, dtype_code(dtype), name);
  if (auto it = kernels.find(key); it != kernels.end()) return it->second;
  CUfunc_st* f = nullptr;
  try {
    f = compile_kernel(device_index, dtype_source(dtype) + source, (name + ".cu").c_str(), name.c_str());
  } catch (const std::exception& e) {
    if (!warned) std::fprintf(stderr, "mlx-bun: a CUDA sampling kernel (%s) is unavailable (%s); it runs on the CPU\n", name.c_str(), e.what());
    warned = true;
  }
  kernels[key] = f;
  return f;
}

CUfunc_st* pick_kernel(int device_index, mx::Dtype dtype) {
  return kernel_for(device_index, dtype, SOURCE, "mlxb_sample_pick");
}

CUfunc_st* penalize_kernel(int device_index, mx::Dtype dtype) {
  return kernel_for(device_index, dtype, PENALIZE_SOURCE, "mlxb_penalize");
}

CUfunc_st* greedy_kernel(int device_index, mx::Dtype dtype) {
  return kernel_for(device_index, dtype, GREEDY_SOURCE, "mlxb_greedy_pick");
}

struct GreedyParams {
  long long vocab, row_stride, col_stride;
  int blocks;
};

// A block a range of this many logits (at most 256 blocks a row: the merge's one value a thread).
constexpr long long GREEDY_RANGE = 2048;

} // namespace

bool mlxb::sample_kernel_ready(int device_index, mx::Dtype dtype) {
  return pick_kernel(device_index, dtype) != nullptr;
}

bool mlxb::penalize_kernel_ready(int device_index, mx::Dtype dtype) {
  return penalize_kernel(device_index, dtype) != nullptr;
}

void mlxb::penalize_cuda(const mx::Stream& stream, const std::vector<mx::array>& inputs, mx::array& out) {
  const auto &logits = inputs[0], &ids = inputs[1], &params = inputs[2];
  CUfunc_st* kernel = penalize_kernel(stream.device.index, logits.dtype());
  if (!kernel) throw std::runtime_error("Penalize: the CUDA kernel is unavailable");
  auto& encoder = cu::get_command_encoder(stream);
  out.set_data(mx::allocator::malloc(out.nbytes()));
  for (const auto& a : inputs) encoder.set_input_array(a);
  encoder.set_output_array(out);
  PenalizeParams p{logits.shape(1), logits.strides(0), logits.strides(1), ids.shape(1), ids.strides(0), ids.strides(1), params.strides(0), params.strides(1)};
  void* lp = device_pointer(logits);
  void* ip = device_pointer(ids);
  void* pp = device_pointer(params);
  void* op = device_pointer(out);
  void* args[] = {&lp, &ip, &pp, &op, &p};
  encoder.add_kernel_node_raw(kernel, dim3{static_cast<unsigned>(logits.shape(0)), 1, 1}, dim3{256, 1, 1}, dim3{1, 1, 1}, 0, args);
}

bool mlxb::greedy_kernel_ready(const mx::Stream& stream, mx::Dtype dtype) {
  if (greedy_kernel(stream.device.index, dtype) == nullptr) return false;
  make_counter_ring(stream.device.index, stream);
  return true;
}

void mlxb::greedy_pick_cuda(const mx::Stream& stream, const mx::array& logits, std::vector<mx::array>& outputs) {
  CUfunc_st* kernel = greedy_kernel(stream.device.index, logits.dtype());
  if (!kernel) throw std::runtime_error("GreedyPick: the CUDA kernel is unavailable");
  auto& encoder = cu::get_command_encoder(stream);
  const int rows = logits.shape(0);
  const long long vocab = logits.shape(1);
  GreedyParams p{vocab, logits.strides(0), logits.strides(1), static_cast<int>(std::min<long long>(256, (vocab + GREEDY_RANGE - 1) / GREEDY_RANGE))};
  // Read by the host every step: managed memory (see sample_pick_cuda).
  for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
  mx::array part_value({rows * p.blocks}, mx::float32, nullptr, {});
  mx::array part_index({rows * p.blocks}, mx::int32, nullptr, {});
  part_value.set_data(device_buffer(stream.device.index, part_value.nbytes()));
  part_index.set_data(device_buffer(stream.device.index, part_index.nbytes()));
  encoder.set_input_array(logits);
  for (const auto& o : outputs) encoder.set_output_array(o);
  void* lp = device_pointer(logits);
  void* vp = device_pointer(part_value);
  void* ip = device_pointer(part_index);
  void* cp = counters_for(stream.device.index, rows);
  void* to = device_pointer(outputs[0]);
  void* po = device_pointer(outputs[1]);
  void* args[] = {&lp, &vp, &ip, &cp, &to, &po, &p};
  encoder.add_kernel_node_raw(kernel, dim3{static_cast<unsigned>(p.blocks), static_cast<unsigned>(rows), 1}, dim3{256, 1, 1}, dim3{1, 1, 1}, 0, args);
  keep_until_done(encoder, part_value), keep_until_done(encoder, part_index);
}

void mlxb::sample_pick_cuda(const mx::Stream& stream, const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  const auto &logits = inputs[0], &params = inputs[1], &seeds = inputs[2], &draws = inputs[3];
  CUfunc_st* kernel = pick_kernel(stream.device.index, logits.dtype());
  if (!kernel) throw std::runtime_error("SamplePick: the CUDA kernel is unavailable");
  auto& encoder = cu::get_command_encoder(stream);
  // The outputs are read by the host every step (the tokens; the peak): MLX's allocator gives managed
  // memory, which the host reads in place. A device buffer of the shim's pool (device_buffer) would
  // be moved to managed memory by that read and freed, and the next step's allocation would
  // synchronize the device: ~0.45 ms a step on an H200, the sampled rate 0.66x greedy's.
  for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
  for (const auto& a : inputs) encoder.set_input_array(a);
  for (const auto& o : outputs) encoder.set_output_array(o);
  Params p{logits.shape(1), logits.strides(0), logits.strides(1), params.strides(0), params.strides(1), seeds.strides(0), seeds.strides(1), draws.strides(0)};
  void* lp = device_pointer(logits);
  void* pp = device_pointer(params);
  void* sp = device_pointer(seeds);
  void* dp = device_pointer(draws);
  void* to = device_pointer(outputs[0]);
  void* po = device_pointer(outputs[1]);
  void* th = device_pointer(outputs[2]);
  void* args[] = {&lp, &pp, &sp, &dp, &to, &po, &th, &p};
  encoder.add_kernel_node_raw(kernel, dim3{static_cast<unsigned>(logits.shape(0)), 1, 1}, dim3{1024, 1, 1}, dim3{1, 1, 1}, 0, args);
}
