// CUDA C++ source of the decode-time quantized matmul kernel of qmv_cuda.cpp, compiled at run time
// by NVRTC (the machine's, which libmlx.so already loads), one variant per (dtype, group, rows).
//
// out[m, j] = sum_i x[m, i] * (scale[j, g(i)] * q[j, i] + bias[j, g(i)]) for 4-bit affine weights
// q packed 8 per uint32 (value i of a word at bits 4i..4i+3, MLX's layout), x row-major [rows, k]
// (rows <= ROWS: a variant serves a range of row counts; the rows past x's repeat its last, unwritten).
//
// Each warp computes R consecutive output rows; its 32 lanes split k in 32-value chunks (one 16-byte
// load of packed weights per row and chunk), so a warp reads 512 contiguous bytes per row and chunk
// step, U steps' loads issued together. SPLIT warps of a block share their R rows, each taking every
// SPLIT-th step of k, and add up through shared memory: more warps in flight for a matrix of few
// rows and long k (a decode step's down projection).
// A weight value is turned into the float 1 + q/16 with one shift and one mask-or (q in the top
// mantissa bits of 1.0f), so a chunk's dot product a = sum (1 + q/16) x and the chunk's sum of x, xs,
// give sum q x = 16 (a - xs); with the chunk's scale s and bias b the chunk adds
// 16 s a + (b - 16 s) xs. All arithmetic is float32; x, scales, biases and out are DTYPE.
// ADD 1: out = the product rounded to DTYPE, plus addend[m, j] (DTYPE, out's shape), rounded again:
// what a separate add of the rounded product would give.
#pragma once

namespace mlxb {

inline constexpr const char* QMV_CUDA_SOURCE = R"CUDA(
typedef unsigned int u32;
typedef unsigned short u16;

#if DTYPE == 0
typedef float T;
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float from_float(float v) { return v; }
/** Eight consecutive x values as float (p 16-byte aligned). */
__device__ __forceinline__ void load8(const T* p, float* v) {
  float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}
#else
typedef u16 T;
#if DTYPE == 1
__device__ __forceinline__ float to_float(u16 v) { return __uint_as_float(((u32)v) << 16); }
/** Round to nearest even, NaN kept quiet (as MLX's bfloat16 conversion). */
__device__ __forceinline__ u16 from_float(float f) {
  u32 b = __float_as_uint(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return (u16)((b >> 16) | 0x40u);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return (u16)(b >> 16);
}
/** Two bfloat16 values packed in a word, as floats. */
__device__ __forceinline__ void unpack2(u32 w, float* v) {
  v[0] = __uint_as_float(w << 16);
  v[1] = __uint_as_float(w & 0xFFFF0000u);
}
#else
__device__ __forceinline__ float to_float(u16 v) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v)); return f; }
__device__ __forceinline__ u16 from_float(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ void unpack2(u32 w, float* v) {
  v[0] = to_float((u16)(w & 0xFFFFu));
  v[1] = to_float((u16)(w >> 16));
}
#endif
__device__ __forceinline__ void load8(const T* p, float* v) {
  uint4 a = *reinterpret_cast<const uint4*>(p);
  unpack2(a.x, v); unpack2(a.y, v + 2); unpack2(a.z, v + 4); unpack2(a.w, v + 6);
}
#endif

/** Value i (0..7) of a packed word as the float 1 + q/16. */
template <int i>
__device__ __forceinline__ float one_plus_sixteenth(u32 word) {
  u32 bits = (i <= 4) ? (word << (19 - 4 * i)) : (word >> (4 * i - 19));
  return __uint_as_float((bits & 0x00780000u) | 0x3F800000u);
}

/** a += sum over the word's 8 values of (1 + q/16) * x. */
__device__ __forceinline__ float dot8(u32 word, const float* x, float a) {
  a = fmaf(one_plus_sixteenth<0>(word), x[0], a);
  a = fmaf(one_plus_sixteenth<1>(word), x[1], a);
  a = fmaf(one_plus_sixteenth<2>(word), x[2], a);
  a = fmaf(one_plus_sixteenth<3>(word), x[3], a);
  a = fmaf(one_plus_sixteenth<4>(word), x[4], a);
  a = fmaf(one_plus_sixteenth<5>(word), x[5], a);
  a = fmaf(one_plus_sixteenth<6>(word), x[6], a);
  a = fmaf(one_plus_sixteenth<7>(word), x[7], a);
  return a;
}

extern "C" __global__ void __launch_bounds__(WARPS * 32)
mlxb_qmv(const T* __restrict__ x, const u32* __restrict__ w, const T* __restrict__ scales, const T* __restrict__ biases,
         const T* __restrict__ addend, T* __restrict__ out, int n, int k, int rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % SPLIT;
  const int row0 = (blockIdx.x * (WARPS / SPLIT) + warp / SPLIT) * R;
#if SPLIT == 1
  if (row0 >= n) return;
#endif
  const int words = k >> 3;
  const int groups = k / GROUP;
  const int chunks = k >> 5;
  float acc[ROWS][R];
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R; r++) acc[m][r] = 0.f;

  // U chunks per lane per step, their loads issued before any arithmetic.
  for (int c0 = lane + 32 * U * part; c0 < chunks; c0 += 32 * U * SPLIT) {
    uint4 q[U][R];
    float s[U][R], b[U][R];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int c = min(c0 + 32 * u, chunks - 1);
      const int g = (c * 32) / GROUP;
#pragma unroll
      for (int r = 0; r < R; r++) {
        const int row = min(row0 + r, n - 1);
        q[u][r] = __ldg(reinterpret_cast<const uint4*>(w + (size_t)row * words) + c);
        s[u][r] = 16.f * to_float(scales[(size_t)row * groups + g]);
        b[u][r] = to_float(biases[(size_t)row * groups + g]);
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int m = 0; m < ROWS; m++) {
        const T* xm = x + (size_t)min(m, rows - 1) * k + c * 32;
        float a[R], xs = 0.f, v[8];
#pragma unroll
        for (int r = 0; r < R; r++) a[r] = 0.f;
#pragma unroll
        for (int j = 0; j < 4; j++) {
          load8(xm + 8 * j, v);
          xs += ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
#pragma unroll
          for (int r = 0; r < R; r++) {
            const u32 word = j == 0 ? q[u][r].x : j == 1 ? q[u][r].y : j == 2 ? q[u][r].z : q[u][r].w;
            a[r] = dot8(word, v, a[r]);
          }
        }
#pragma unroll
        for (int r = 0; r < R; r++) acc[m][r] += s[u][r] * a[r] + (b[u][r] - s[u][r]) * xs;
      }
    }
  }

#if SPLIT > 1
  __shared__ float parts[WARPS][ROWS][R];
#endif
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = acc[m][r];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
#if SPLIT > 1
      if (lane == 0) parts[warp][m][r] = v;
    }
  __syncthreads();
  if (part != 0) return;
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < SPLIT; p++) v += parts[warp + p][m][r];
#endif
      if (lane == 0 && row0 + r < n && m < rows) {
        const size_t at = (size_t)m * n + row0 + r;
#if ADD
        v = to_float(from_float(v)) + to_float(addend[at]);
#endif
        out[at] = from_float(v);
      }
    }
}
)CUDA";

} // namespace mlxb
