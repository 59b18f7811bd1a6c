// CUDA C++ source of the decode-time quantized matmul kernel of qmv_cuda.cpp, compiled at run time
// by NVRTC (the machine's, which libmlx.so already loads), one variant per (dtype, group, rows); MMA
// 1 selects the tensor-core kernel (bfloat16/float16), else the one described here.
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
// PAIR 1 (bfloat16, one row of x, sm_90 for mul.rn.bf16; not with ADD): w holds 2n rows, a gate's n
// then an up's n (a fused gate/up projection); out[j] = silu(gate_j) * up_j, each product rounded to bfloat16 as the product
// kernel writes it, then MLX's compiled swiglu's instructions for bfloat16 (its Sigmoid and Multiply
// functors and half-type operators: every step rounded to bfloat16 as there): bit for bit the
// product, split, and MLX's swiglu. A warp's rows are half gate rows, half the same rows of the up
// half (the tensor-core tile: rows g and g + 8 of a lane; the float32 kernel: its first R / 2 rows
// and its last), each summed in the product kernel's order; the launch is the whole product's.
// NORM 1 (with ADD): also normed = MLX's rms_norm of each row of out with weight norm_w and eps, by the
// last block to finish (a done-counter): the sum of squares in float32, the normalizer
// rsqrt(mean + eps), x * normalizer rounded to DTYPE, times the weight, rounded again (MLX's
// roundings; its sum of squares adds in another order, so the normalizer may differ in its last bit).
// QK_NORM_ROPE 1 (one row of x; not with ADD, NORM or PAIR; after cuda.h's dtype_source and
// norm_rope_row.h's row): w is a fused q/k/v projection, its rows q_heads + 2 k_heads heads of
// head_dim; the kernel mlxb_qmv_qk_norm_rope also writes q and k normed and rotated (the q/k norm +
// rope kernel's norm_rope_row, so its bits): the last block to finish a q or k head's rows (a counter
// a head) does that head.
#pragma once

namespace mlxb {

inline constexpr const char* QMV_CUDA_SOURCE = R"CUDA(
// The variant's switches not given are off (qmv_cuda.cpp's compile gives them all; a check of the
// source with a few, as pack.sh's, compiles too).
#ifndef MMA
#define MMA 0
#endif
#ifndef ADD
#define ADD 0
#endif
#ifndef NORM
#define NORM 0
#endif
#ifndef PAIR
#define PAIR 0
#endif
#ifndef QK_NORM_ROPE
#define QK_NORM_ROPE 0
#endif
#ifndef ONE_WAVE
#define ONE_WAVE 0
#endif
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

#if PAIR
#if DTYPE != 1 || ROWS != 1 || ADD || NORM
#error "PAIR is for one bfloat16 row of x, without an addend"
#endif
/** A float rounded to bfloat16 (the conversion instruction itself: its NaNs as MLX's). */
__device__ __forceinline__ u16 round_bf16(float f) { u16 h; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float bf16_float(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ u16 mul_bf16(u16 a, u16 b) { u16 d; asm("mul.rn.bf16 %0, %1, %2;" : "=h"(d) : "h"(a), "h"(b)); return d; }

/** silu(g) * u for bfloat16 g and u, as MLX's compiled swiglu: y = 1 / (1 + exp(|g|)) and
 * sigmoid = g < 0 ? y : 1 - y, exp as ex2.approx of |g| log2(e), each of exp, 1 + e, 1 / d and 1 - y
 * rounded to bfloat16, then the products g * sigmoid and that * u (bfloat16 multiplies). */
__device__ __forceinline__ u16 swiglu1(u16 g, u16 u) {
  float scaled, e;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(scaled) : "f"(bf16_float(g & 0x7FFFu)), "f"(__uint_as_float(0x3FB8AA3Cu)));
  asm("ex2.approx.f32 %0, %1;" : "=f"(e) : "f"(scaled));
  float d, y;
  asm("add.rn.f32 %0, %1, 0f3F800000;" : "=f"(d) : "f"(bf16_float(round_bf16(e))));
  asm("rcp.rn.f32 %0, %1;" : "=f"(y) : "f"(bf16_float(round_bf16(d))));
  u16 sigmoid = round_bf16(y);
  if (!(bf16_float(g) < 0.f)) {
    float rest;
    asm("sub.rn.f32 %0, 0f3F800000, %1;" : "=f"(rest) : "f"(bf16_float(sigmoid)));
    sigmoid = round_bf16(rest);
  }
  return mul_bf16(mul_bf16(g, sigmoid), u);
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


#if NORM
// Values of out in one 16-byte vector.
#define NORM_VECTOR (16 / (int)sizeof(T))

/** Element e of a 16-byte vector of T as a float. */
__device__ __forceinline__ float vector_value(const uint4& v, int e) {
  const u32 word = e / (NORM_VECTOR / 4) == 0 ? v.x : e / (NORM_VECTOR / 4) == 1 ? v.y : e / (NORM_VECTOR / 4) == 2 ? v.z : v.w;
#if DTYPE == 0
  return __uint_as_float(word);
#else
  return to_float((T)((e & 1) ? word >> 16 : word & 0xFFFFu));
#endif
}

/** The sum over the block of each thread's v (every thread gets it). */
__device__ __forceinline__ float block_sum(float v, float* partial) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  __syncthreads();  // partial free (a previous row's sum read)
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = v;
  __syncthreads();
  v = 0.f;
  for (int i = 0; i < (int)(blockDim.x >> 5); i++) v += partial[i];
  return v;
}

/** Run by every thread of every block after its stores: counts the block done, and the last block to
 * finish (all others' stores then visible) writes normed (see NORM above) and sets the counter back
 * to 0. Its threads read a row and the weight in 16-byte vectors where n allows (a multiple of
 * NORM_VECTOR: the rows are then 16-byte aligned, as out's buffer is) and the weight is 16-byte
 * aligned (not so a view at an offset), else value by value. */
__device__ __forceinline__ void norm_if_last(const T* out, const T* __restrict__ norm_w, T* __restrict__ normed, int* counter, int n, int rows,
                                             float eps) {
  __shared__ float partial[32];
  __shared__ int last;
  // The block's stores ordered before its count by the barrier and one thread's fences (as a
  // cooperative grid's sync does), the other blocks' stores before the last block's reads likewise.
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(counter, 1) == (int)gridDim.x - 1;
    if (last) __threadfence();
  }
  __syncthreads();
  if (!last) return;
  const bool vectors = n % NORM_VECTOR == 0 && reinterpret_cast<size_t>(norm_w) % 16 == 0;
  for (int m = 0; m < rows; m++) {
    const T* row = out + (size_t)m * n;
    T* normed_row = normed + (size_t)m * n;
    float sum = 0.f;
    if (vectors) {
      for (int i = threadIdx.x * NORM_VECTOR; i < n; i += blockDim.x * NORM_VECTOR) {
        const uint4 v = __ldcg(reinterpret_cast<const uint4*>(row + i));  // other blocks' stores: not through L1
#pragma unroll
        for (int e = 0; e < NORM_VECTOR; e++) sum += vector_value(v, e) * vector_value(v, e);
      }
    } else {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = to_float(__ldcg(row + i));
        sum += v * v;
      }
    }
    const float normalizer = rsqrtf(block_sum(sum, partial) / (float)n + eps);
    if (vectors) {
      for (int i = threadIdx.x * NORM_VECTOR; i < n; i += blockDim.x * NORM_VECTOR) {
        const uint4 v = __ldcg(reinterpret_cast<const uint4*>(row + i)), g = *reinterpret_cast<const uint4*>(norm_w + i);
#pragma unroll
        for (int e = 0; e < NORM_VECTOR; e++)
          normed_row[i + e] = from_float(vector_value(g, e) * to_float(from_float(vector_value(v, e) * normalizer)));
      }
    } else {
      for (int i = threadIdx.x; i < n; i += blockDim.x)
        normed_row[i] = from_float(to_float(norm_w[i]) * to_float(from_float(to_float(__ldcg(row + i)) * normalizer)));
    }
  }
  if (threadIdx.x == 0) *counter = 0;
}
#endif

#if MMA && DTYPE != 0
// The tensor-core variant (bfloat16/float16, 1-32 rows of x, sm_80 and later). A warp computes a tile
// of 16 output rows with mma.m16n8k16 (float32 accumulation): A = the tile's weights as the values
// 1 + q/16 (exact in DTYPE), B = x, its 8 columns being GPS groups of each of x's rows: column c holds
// x row c / GPS at the k positions of group c % GPS of the step and zeros elsewhere, so one
// accumulator holds each group's dot product apart (a step covers GPS groups of every row).
// Lane (g, t) (g = lane / 4, t = lane % 4) holds A's rows g and g + 8 and B's column g, at the k
// positions the fragment layout gives thread t; a dot product does not care in which order its k
// positions come, so thread t's positions are VPL consecutive values of the step per load (the four
// threads of a row read 4 VPL contiguous values). A word's values pair as (v, v + 4) (one shift and
// one mask-or a pair), and x's pairs are permuted to match (one byte permute a pair). A second mma
// with A = 1 gives each group's sum of x in the product's layout; a group then adds
// 16 s a + (b - 16 s) xs, as above, and x's row sums its GPS columns at the end.
#if DTYPE == 1
#define ONE_PAIR 0x3F803F80u
#define PAIR_MASK 0x00780078u
#define PAIR_LOW 3
#define MMA_TYPE "bf16"
#else
#define ONE_PAIR 0x3C003C00u
#define PAIR_MASK 0x03C003C0u
#define PAIR_LOW 6
#define MMA_TYPE "f16"
#endif
#if ROWS == 1
#define GPS 8
#elif ROWS == 2
#define GPS 4
#elif ROWS <= 4
#define GPS 2
#else
#define GPS 1
#endif
// Blocks of 8 B columns: more than 8 rows of x take ROWS / 8 mmas per fragment of A.
#define NB (ROWS > 8 ? (ROWS + 7) / 8 : 1)
#define LANE_VALUES (GPS * GROUP / 4)                  // a lane's values of one row in a step
#define VPL (LANE_VALUES < 32 ? LANE_VALUES : 32)     // ... in one load (8, 16 or 32)
#define LOADS (LANE_VALUES / VPL)
#define WPL (VPL / 8)                                  // words a load

/** Values s and s + 4 of a packed word as the pair (1 + q/16) in DTYPE (low half: value s). */
template <int s>
__device__ __forceinline__ u32 weight_pair(u32 word) {
  const u32 bits = (4 * s >= PAIR_LOW) ? (word >> (4 * s - PAIR_LOW)) : (word << (PAIR_LOW - 4 * s));
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(bits), "r"(PAIR_MASK), "r"(ONE_PAIR));  // (a & b) | c
  return r;
}

/** d += A B for one m16n8k16 fragment (float32 accumulators). */
__device__ __forceinline__ void mma(float* d, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32." MMA_TYPE "." MMA_TYPE ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/** A lane's WPL packed words of one row in one load. */
struct Words { u32 v[WPL]; };
__device__ __forceinline__ Words load_words(const u32* p) {
  Words r;
#if WPL == 1
  r.v[0] = __ldg(p);
#elif WPL == 2
  uint2 a = __ldg(reinterpret_cast<const uint2*>(p));
  r.v[0] = a.x; r.v[1] = a.y;
#else
  uint4 a = __ldg(reinterpret_cast<const uint4*>(p));
  r.v[0] = a.x; r.v[1] = a.y; r.v[2] = a.z; r.v[3] = a.w;
#endif
  return r;
}

/** What a lane needs to add one step's product: its B columns' x rows (one per block of 8 columns)
 * and group, the groups of its accumulators' columns, its two weight rows. */
struct Lane {
  const T* xr[NB];
  int column_group, group0, group1, ra, rb, t, groups, steps;
};

/** Adds step s's product to acc, given the lane's LOADS loads of packed words of rows ra and rb. */
__device__ __forceinline__ void add_step(const Lane& l, const Words* qa, const Words* qb, int s, const T* __restrict__ scales,
                                         const T* __restrict__ biases, float (*acc)[4]) {
  float dot[NB][4], xs[NB][4];
#pragma unroll
  for (int c = 0; c < NB; c++)
#pragma unroll
    for (int i = 0; i < 4; i++) dot[c][i] = xs[c][i] = 0.f;
#pragma unroll
  for (int j = 0; j < LOADS; j++) {
    const int at = s * GPS * GROUP + 4 * VPL * j + VPL * l.t;
    const int group = (4 * VPL * j + VPL * l.t) / GROUP;  // of the step
    const bool mine = group == l.column_group && s * GPS + group < l.groups;
#pragma unroll
    for (int i = 0; i < WPL; i++) {
      const u32 a = qa[j].v[i], b = qb[j].v[i];
      const u32 a0 = weight_pair<0>(a), b0 = weight_pair<0>(b), a1 = weight_pair<1>(a), b1 = weight_pair<1>(b);
      const u32 a2 = weight_pair<2>(a), b2 = weight_pair<2>(b), a3 = weight_pair<3>(a), b3 = weight_pair<3>(b);
#pragma unroll
      for (int c = 0; c < NB; c++) {
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (mine) v = *reinterpret_cast<const uint4*>(l.xr[c] + at + 8 * i);
        // x pairs (0,1) (2,3) (4,5) (6,7) -> (0,4) (1,5) (2,6) (3,7)
        const u32 p0 = __byte_perm(v.x, v.z, 0x5410), p1 = __byte_perm(v.x, v.z, 0x7632);
        const u32 p2 = __byte_perm(v.y, v.w, 0x5410), p3 = __byte_perm(v.y, v.w, 0x7632);
        mma(dot[c], a0, b0, a1, b1, p0, p1);
        mma(dot[c], a2, b2, a3, b3, p2, p3);
        mma(xs[c], ONE_PAIR, ONE_PAIR, ONE_PAIR, ONE_PAIR, p0, p1);
        mma(xs[c], ONE_PAIR, ONE_PAIR, ONE_PAIR, ONE_PAIR, p2, p3);
      }
    }
  }
  // dot/xs: (row g, column 2t), (row g, column 2t + 1), (row g + 8, column 2t), (row g + 8, column 2t + 1).
  const int G0 = min(s * GPS + l.group0, l.groups - 1), G1 = min(s * GPS + l.group1, l.groups - 1);
  const size_t a0 = (size_t)l.ra * l.groups, b0 = (size_t)l.rb * l.groups;
  const float sa0 = 16.f * to_float(scales[a0 + G0]), sa1 = 16.f * to_float(scales[a0 + G1]);
  const float sb0 = 16.f * to_float(scales[b0 + G0]), sb1 = 16.f * to_float(scales[b0 + G1]);
  const float ba0 = to_float(biases[a0 + G0]) - sa0, ba1 = to_float(biases[a0 + G1]) - sa1;
  const float bb0 = to_float(biases[b0 + G0]) - sb0, bb1 = to_float(biases[b0 + G1]) - sb1;
#pragma unroll
  for (int c = 0; c < NB; c++) {
    acc[c][0] += sa0 * dot[c][0] + ba0 * xs[c][0];
    acc[c][1] += sa1 * dot[c][1] + ba1 * xs[c][1];
    acc[c][2] += sb0 * dot[c][2] + bb0 * xs[c][2];
    acc[c][3] += sb1 * dot[c][3] + bb1 * xs[c][3];
  }
}

/** The product (and addend) into out; the kernel mlxb_qmv below. */
__device__ __forceinline__ void product(const T* __restrict__ x, const u32* __restrict__ w, const T* __restrict__ scales, const T* __restrict__ biases,
                                        const T* __restrict__ addend, T* __restrict__ out, int n, int k, int rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int part = warp % SPLIT;
  // PAIR: a tile's 8 outputs (its rows: 8 gate rows, then their up rows n further).
  const int row0 = (blockIdx.x * (WARPS / SPLIT) + warp / SPLIT) * (PAIR ? 8 : 16);
#if SPLIT == 1
  if (row0 >= n) return;
#endif
  Lane l;
  l.groups = k / GROUP;
  l.steps = (l.groups + GPS - 1) / GPS;
#if PAIR
  l.ra = min(row0 + g, n - 1);
  l.rb = n + l.ra;
#else
  l.ra = min(row0 + g, n - 1);
  l.rb = min(row0 + g + 8, n - 1);
#endif
  // This lane's B columns: x rows 8 c + g / GPS, group g % GPS of each step.
#pragma unroll
  for (int c = 0; c < NB; c++) l.xr[c] = x + (size_t)min(8 * c + g / GPS, rows - 1) * k;
  l.column_group = g % GPS;
  // The groups of this lane's accumulators: columns 2t and 2t + 1.
  l.group0 = (2 * t) % GPS;
  l.group1 = (2 * t + 1) % GPS;
  l.t = t;
  float acc[NB][4];
#pragma unroll
  for (int c = 0; c < NB; c++)
#pragma unroll
    for (int i = 0; i < 4; i++) acc[c][i] = 0.f;

  const u32* wa = w + (size_t)l.ra * (k >> 3);
  const u32* wb = w + (size_t)l.rb * (k >> 3);
  for (int step = part; step < l.steps; step += U * SPLIT) {
    Words qa[U][LOADS], qb[U][LOADS];
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int j = 0; j < LOADS; j++) {
        // Load j of this step: values 4 VPL j + VPL t of the step's span, clamped into the row.
        const int at = min((step + u * SPLIT) * GPS * GROUP + 4 * VPL * j + VPL * t, k - VPL);
        qa[u][j] = load_words(wa + at / 8);
        qb[u][j] = load_words(wb + at / 8);
      }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int s = step + u * SPLIT;
      if (s >= l.steps) break;  // the same for every lane: the mmas stay converged
      add_step(l, qa[u], qb[u], s, scales, biases, acc);
    }
  }

#if SPLIT > 1
  __shared__ float parts[WARPS][NB * 4][32];
#pragma unroll
  for (int c = 0; c < NB; c++)
#pragma unroll
    for (int i = 0; i < 4; i++) parts[warp][4 * c + i][lane] = acc[c][i];
  __syncthreads();
  if (part != 0 || row0 >= n) return;
#pragma unroll
  for (int c = 0; c < NB; c++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < SPLIT; p++) v += parts[warp + p][4 * c + i][lane];
      acc[c][i] = v;
    }
#endif
#pragma unroll
  for (int c = 0; c < NB; c++) {
    // An x row's GPS columns: columns 2t and 2t + 1 of this lane, then lanes t ^ 1, t ^ 2 as needed.
#if GPS > 1
    float ra_sum = acc[c][0] + acc[c][1], rb_sum = acc[c][2] + acc[c][3];
#if GPS >= 4
    ra_sum += __shfl_xor_sync(0xFFFFFFFFu, ra_sum, 1);
    rb_sum += __shfl_xor_sync(0xFFFFFFFFu, rb_sum, 1);
#endif
#if GPS == 8
    ra_sum += __shfl_xor_sync(0xFFFFFFFFu, ra_sum, 2);
    rb_sum += __shfl_xor_sync(0xFFFFFFFFu, rb_sum, 2);
#endif
#endif
#if PAIR  // (GPS 8: one row of x) the gate row's value and its up row's, in the first lane of the columns
    if (t == 0 && row0 + g < n) out[row0 + g] = swiglu1(from_float(ra_sum), from_float(rb_sum));
#else
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int row = row0 + g + 8 * (i >> 1);
#if GPS == 1
      // Columns 2t and 2t + 1 are x rows 8 c + 2t and 8 c + 2t + 1.
      const int m = 8 * c + 2 * t + (i & 1);
      float v = acc[c][i];
#else
      // x row (2t) / GPS, written by the first lane of its columns, once per output row.
      const int m = (2 * t) / GPS;
      if ((i & 1) || (2 * t) % GPS != 0) continue;
      float v = i == 0 ? ra_sum : rb_sum;
#endif
      if (row < n && m < rows) {
        const size_t at = (size_t)m * n + row;
#if ADD
        v = to_float(from_float(v)) + to_float(addend[at]);
#endif
        out[at] = from_float(v);
      }
    }
#endif
  }
}
#else
/** The product (and addend) into out; the kernel mlxb_qmv below. */
__device__ __forceinline__ void product(const T* __restrict__ x, const u32* __restrict__ w, const T* __restrict__ scales, const T* __restrict__ biases,
                                        const T* __restrict__ addend, T* __restrict__ out, int n, int k, int rows) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int part = warp % SPLIT;
  // PAIR: the warp's R / 2 outputs (its rows: R / 2 gate rows, then their up rows n further).
  const int row0 = (blockIdx.x * (WARPS / SPLIT) + warp / SPLIT) * (PAIR ? R / 2 : R);
#if SPLIT == 1
  if (row0 >= n) return;
#endif
  const int words = k >> 3;
  const int groups = k / GROUP;
  const int chunks = k >> 5;
#if PAIR && R % 2 != 0
#error "PAIR takes an even number of rows a warp"
#endif
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
#if PAIR
        const int row = r < R / 2 ? min(row0 + r, n - 1) : n + min(row0 + r - R / 2, n - 1);
#else
        const int row = min(row0 + r, n - 1);
#endif
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

#if PAIR
  // Each row's sum as the product kernel makes it (lanes, then the SPLIT warps in order), then the
  // swiglu of a gate row's and its up row's values rounded to bfloat16.
  float sums[ROWS][R];
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = acc[m][r];
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
      sums[m][r] = v;
    }
#if SPLIT > 1
  __shared__ float parts[WARPS][ROWS][R];
  if (lane == 0)
#pragma unroll
    for (int m = 0; m < ROWS; m++)
#pragma unroll
      for (int r = 0; r < R; r++) parts[warp][m][r] = sums[m][r];
  __syncthreads();
  if (part != 0) return;
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R; r++) {
      float v = 0.f;
#pragma unroll
      for (int p = 0; p < SPLIT; p++) v += parts[warp + p][m][r];
      sums[m][r] = v;
    }
#endif
#pragma unroll
  for (int m = 0; m < ROWS; m++)
#pragma unroll
    for (int r = 0; r < R / 2; r++)
      if (lane == 0 && row0 + r < n && m < rows) out[(size_t)m * n + row0 + r] = swiglu1(from_float(sums[m][r]), from_float(sums[m][R / 2 + r]));
#else
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
#endif
}
#endif

#if QK_NORM_ROPE
#if ADD || NORM || PAIR || ROWS != 1
#error "QK_NORM_ROPE is for one row of x and a plain product"
#endif
// The product's rows a block writes (16 a warp for the tensor-core kernel), and the longest head.
#if MMA && DTYPE != 0
#define BLOCK_ROWS (16 * WARPS / SPLIT)
#else
#define BLOCK_ROWS (R * WARPS / SPLIT)
#endif
#define MAX_HEAD_DIM 512

struct QkParams {
  RopeParams rope;
  int q_heads, k_heads, head_dim;
  float eps;
};

/** Run by every thread of every block after the product's stores (out: [n], the q heads', then the
 * k heads', then the v heads' rows): for each q or k head whose rows this block wrote, counts the
 * block done in the head's counter, and the last of the head's blocks (all their stores then
 * visible) writes the head normed and rotated into q_out or k_out (a head's row each) and sets its
 * counter back to 0. */
__device__ __forceinline__ void qk_norm_rope_if_last(const T* out, int n, const T* __restrict__ wq, const T* __restrict__ wk, const int* offset,
                                                     const float* freqs, T* q_out, T* k_out, int* counters, const QkParams& p) {
  __shared__ float normed[MAX_HEAD_DIM];
  __shared__ float partial[32];
  __shared__ int last;
  const int D = p.head_dim;
  const int first = blockIdx.x * BLOCK_ROWS, end = min(first + BLOCK_ROWS, n);
  __syncthreads();  // the block's stores made
  for (int h = first / D; h * D < end && h < p.q_heads + p.k_heads; h++) {
    const int blocks = (h * D + D - 1) / BLOCK_ROWS - (h * D) / BLOCK_ROWS + 1;  // that write head h's rows
    if (threadIdx.x == 0) {
      __threadfence();
      last = atomicAdd(&counters[h], 1) == blocks - 1;
      if (last) __threadfence();
    }
    __syncthreads();
    if (last) {
      const bool is_q = h < p.q_heads;
      T* row = is_q ? q_out + (size_t)h * D : k_out + (size_t)(h - p.q_heads) * D;
      norm_rope_row(out + (size_t)h * D, 1, is_q ? wq : wk, 1, D, p.eps, offset, 0, p.rope, freqs, row, normed, partial, norm_rope_threads(D));
      if (threadIdx.x == 0) counters[h] = 0;
    }
    __syncthreads();  // `last` read by every thread before the next head's count
  }
}

// Held to the product's own registers (64 for the one-row tensor-core product: two blocks an SM;
// the epilogue alone would take it to 72).
extern "C" __global__ void __launch_bounds__(WARPS * 32, 1024 / (WARPS * 32))
mlxb_qmv_qk_norm_rope(const T* __restrict__ x, const u32* __restrict__ w, const T* __restrict__ scales, const T* __restrict__ biases,
                      T* __restrict__ out, int n, int k, const T* __restrict__ wq, const T* __restrict__ wk, const int* offset, const float* freqs,
                      T* q_out, T* k_out, int* counters, QkParams p) {
  WAIT_FOR_UPSTREAM();
  LAUNCH_DOWNSTREAM();
  product(x, w, scales, biases, nullptr, out, n, k, 1);
  qk_norm_rope_if_last(out, n, wq, wk, offset, freqs, q_out, k_out, counters, p);
}
#else
// ONE_WAVE 1: a grid of at most one block an SM (qmv_cuda.cpp's one_wave): its registers unbounded
// by a second block.
#if ONE_WAVE
#define BOUNDS __launch_bounds__(WARPS * 32, 1)
#else
#define BOUNDS __launch_bounds__(WARPS * 32)
#endif
extern "C" __global__ void BOUNDS
mlxb_qmv(const T* __restrict__ x, const u32* __restrict__ w, const T* __restrict__ scales, const T* __restrict__ biases,
         const T* __restrict__ addend, T* __restrict__ out, int n, int k, int rows, const T* __restrict__ norm_w, T* __restrict__ normed,
         int* counter, float eps) {
  WAIT_FOR_UPSTREAM();
  LAUNCH_DOWNSTREAM();
  product(x, w, scales, biases, addend, out, n, k, rows);
#if NORM
  norm_if_last(out, norm_w, normed, counter, n, rows, eps);
#endif
}
#endif
)CUDA";

} // namespace mlxb
