// CUDA C++ source of one row's q/k norm and rope (MLX's rms_norm, then its rope, with MLX's
// roundings), after cuda.h's dtype_source: the q/k norm + rope kernel's body (norm_rope_cuda.cpp) and
// the q/k/v product's epilogue that norms and rotates a head once its rows are written (qmv_cuda.cpp,
// QK_NORM_ROPE). One definition, so that the two give the same bits.
#pragma once

namespace mlxb {

inline constexpr const char* NORM_ROPE_ROW_SOURCE = R"CUDA(
// Values of a row a thread loads before the reduction (the threads are D / 2, at least 32).
#define PER 2

/** A rope's parameters: the rotated dims (even, <= D), rotate-half or traditional pairs, one over
 * the periods (freqs, float32 with its stride) or 2^(-i / (dims/2) * log2_base), the position scale. */
struct RopeParams {
  long long freq_stride;
  int dims, traditional, has_freqs;
  float scale, log2_base;
};

/** The threads norm_rope_row takes for a row of D values: D / 2 rounded up to warps. */
__device__ __forceinline__ int norm_rope_threads(int D) { return min(1024, max(32, (D / 2 + 31) / 32 * 32)); }

/** out[0, D) = rope(rms_norm(in, w, eps)) for the row at in (stride in_stride) at position
 * *offset + t: the normalized value rounded to T, times the weight, rounded again (MLX's rms_norm),
 * then rotated in float32 with MLX's angle and rounded once (MLX's rope). The block's first `threads`
 * threads (norm_rope_threads(D)) do the work; every thread of the block calls it (it has barriers).
 * normed: D floats of shared memory; partial: 32. The sum of squares adds in another order than
 * MLX's kernel, so the normalizer may differ in its last bit. The row is read through L2 (__ldcg):
 * it may be another block's stores. */
__device__ __forceinline__ void norm_rope_row(const T* in, long long in_stride, const T* w, long long w_stride, int D, float eps, const int* offset,
                                              int t, const RopeParams& rope, const float* freqs, T* out, float* normed, float* partial,
                                              int threads) {
  const int tid = threadIdx.x;
  const bool mine = tid < threads;
  // A thread's first PER values of the row and of the weight, and the position's offset, loaded
  // together before the reduction (one memory round trip, not three in turn); the rest, if the row
  // is longer, in the loops after.
  float xv[PER], wv[PER];
#pragma unroll
  for (int j = 0; j < PER; j++) {
    const int d = tid + j * threads;
    xv[j] = mine && d < D ? load(__ldcg(in + d * in_stride)) : 0.f;
    wv[j] = mine && d < D ? load(w[d * w_stride]) : 0.f;
  }
  const int offset_b = *offset;
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < PER; j++) sum += xv[j] * xv[j];
  if (mine)
    for (int d = tid + PER * threads; d < D; d += threads) {
      float v = load(__ldcg(in + d * in_stride));
      sum += v * v;
    }
  for (int m = 16; m > 0; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
  if ((tid & 31) == 0) partial[tid >> 5] = sum;
  __syncthreads();
  if (tid < 32) {
    float v = tid < (threads + 31) / 32 ? partial[tid] : 0.f;
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    if (tid == 0) partial[0] = v;
  }
  __syncthreads();
  const float normalizer = rsqrtf(partial[0] / (float)D + eps);
  if (mine) {
#pragma unroll
    for (int j = 0; j < PER; j++) {
      const int d = tid + j * threads;
      if (d < D) normed[d] = load(round_to(wv[j] * load(round_to(xv[j] * normalizer))));
    }
    for (int d = tid + PER * threads; d < D; d += threads) {
      float y = load(round_to(load(__ldcg(in + d * in_stride)) * normalizer));
      normed[d] = load(round_to(load(w[d * w_stride]) * y));
    }
  }
  __syncthreads();

  const int half = rope.dims / 2;
  const float position = rope.scale * (float)(offset_b + t);
  if (mine) {
    for (int i = tid; i < half; i += threads) {
      float inv_freq = rope.has_freqs ? (float)(1.0 / (double)freqs[i * rope.freq_stride]) : exp2f(-((float)i / (float)half) * rope.log2_base);
      float theta = position * inv_freq;
      float c = cosf(theta), sn = sinf(theta);
      int i1 = rope.traditional ? 2 * i : i;
      int i2 = rope.traditional ? i1 + 1 : i + half;
      float x1 = normed[i1], x2 = normed[i2];
      out[i1] = round_to(x1 * c - x2 * sn);
      out[i2] = round_to(x1 * sn + x2 * c);
    }
    for (int d = rope.dims + tid; d < D; d += threads) out[d] = round_to(normed[d]);
  }
}
)CUDA";

} // namespace mlxb
