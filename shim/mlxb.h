/* mlx-bun: the whole C ABI of the shim, one flat header.
 *
 * Conventions (mlx-c's, so the names read the same):
 * - every function returns an int status: 0 on success, non-zero on error, and then
 *   mlx_last_error() returns the message of the C++ exception that was caught;
 * - results are written through out-pointers (the first argument);
 * - an mlx_array is an opaque handle owned by the caller until mlx_array_free;
 * - "optional" array arguments accept NULL;
 * - shapes, axes and strides are int32 arrays with an explicit length.
 * Everything runs on MLX's default stream (the default device's). */
#ifndef MLXB_H
#define MLXB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The shim builds with hidden visibility; this header is the exported surface. */
#pragma GCC visibility push(default)

typedef void* mlx_array;

/* The one dtype table: X(enum name, mlx-bun name, MLX C++ name, bytes per element), in mlx-c's
 * order (the enum's values). array.cpp maps codes to MLX dtypes from it; src/dtype.ts is checked
 * against it by test/ffi.test.ts. */
#define MLXB_DTYPES(X)                   \
  X(MLX_BOOL, bool, bool_, 1)            \
  X(MLX_UINT8, uint8, uint8, 1)          \
  X(MLX_UINT16, uint16, uint16, 2)       \
  X(MLX_UINT32, uint32, uint32, 4)       \
  X(MLX_UINT64, uint64, uint64, 8)       \
  X(MLX_INT8, int8, int8, 1)             \
  X(MLX_INT16, int16, int16, 2)          \
  X(MLX_INT32, int32, int32, 4)          \
  X(MLX_INT64, int64, int64, 8)          \
  X(MLX_FLOAT16, float16, float16, 2)    \
  X(MLX_FLOAT32, float32, float32, 4)    \
  X(MLX_FLOAT64, float64, float64, 8)    \
  X(MLX_BFLOAT16, bfloat16, bfloat16, 2) \
  X(MLX_COMPLEX64, complex64, complex64, 8)

#define MLXB_DTYPE_ENUM(code, name, mlx_name, bytes) code,
typedef enum { MLXB_DTYPES(MLXB_DTYPE_ENUM) } mlx_dtype;
#undef MLXB_DTYPE_ENUM

/* ---- errors, version, device ---- */
const char* mlx_last_error(void);
const char* mlx_version_string(void);
/* 1 when the default device is a GPU, else 0. */
int mlx_default_device_is_gpu(void);
/* Select the GPU (1) or CPU (0) as the default device. */
int mlx_set_default_device_gpu(int use_gpu);
/* The default device's name (NUL-terminated, cut to cap bytes) and its total memory in bytes
 * (0 where MLX does not report one, as for the CPU). */
int mlx_default_device_info(char* name, size_t cap, uint64_t* total_memory);

/* ---- arrays ---- */
/* Copies nbytes of host data (must equal prod(shape) * itemsize(dtype)). */
int mlx_array_new_data(mlx_array* out, const void* data, size_t nbytes, const int32_t* shape, int ndim, int dtype);
int mlx_array_new_float(mlx_array* out, float value, int dtype);
int mlx_array_new_int(mlx_array* out, int32_t value);
int mlx_array_free(mlx_array a);
int mlx_array_ndim(int* out, mlx_array a);
/* Writes ndim entries. */
int mlx_array_shape(int32_t* out, mlx_array a);
int mlx_array_dtype(int* out, mlx_array a);
int mlx_array_size(size_t* out, mlx_array a);
int mlx_array_nbytes(size_t* out, mlx_array a);
int mlx_array_eval(mlx_array a);
int mlx_eval(const mlx_array* arrays, int count);
/* Starts evaluating the arrays and returns at once; reading one (to_host, eval) waits for it. */
int mlx_async_eval(const mlx_array* arrays, int count);
/* Evaluates, then copies the row-major contents (nbytes must match) into dst. */
int mlx_array_to_host(void* dst, size_t nbytes, mlx_array a);
/* 1 when the array's values exist (made from host data, or evaluated), else 0 (lazy). */
int mlx_array_available(int* out, mlx_array a);
/* The number of primitives not yet evaluated behind the arrays (what an eval of them would run). */
int mlx_graph_primitives(int* out, const mlx_array* arrays, int count);
/* Those primitives' names, one per line; writes the bytes needed (with the NUL) to *needed and the
 * names to out when cap is enough (out may be null to ask the size). */
int mlx_graph_primitive_names(char* out, size_t cap, size_t* needed, const mlx_array* arrays, int count);
/* Read bandwidth of the default device: the best of `repeats` timed sums of one float32 buffer of
 * nbytes (4 GiB and more on a GPU: launch and sync are then a small share), each timed from the
 * host around eval (on the GPU of a CUDA build by a kernel of the shim's that only streams the
 * buffer, else MLX's sum); writes bytes read per second. */
int mlx_bench_read_bandwidth(double* out, size_t nbytes, int repeats);
/* MLX's own cost of one eager op, in C++ with no binding: ns per mx::add(a, b) whose result is
 * destroyed at once, best of `repeats` runs of `count` (the floor under any binding's add + free). */
int mlx_bench_add_floor(double* out, mlx_array a, mlx_array b, int count, int repeats);

/* ---- core ops ---- */
int mlx_add(mlx_array* out, mlx_array a, mlx_array b);
int mlx_subtract(mlx_array* out, mlx_array a, mlx_array b);
int mlx_multiply(mlx_array* out, mlx_array a, mlx_array b);
int mlx_divide(mlx_array* out, mlx_array a, mlx_array b);
int mlx_maximum(mlx_array* out, mlx_array a, mlx_array b);
int mlx_power(mlx_array* out, mlx_array a, mlx_array b);
int mlx_greater(mlx_array* out, mlx_array a, mlx_array b);
int mlx_minimum(mlx_array* out, mlx_array a, mlx_array b);
int mlx_equal(mlx_array* out, mlx_array a, mlx_array b);
int mlx_greater_equal(mlx_array* out, mlx_array a, mlx_array b);
int mlx_less_equal(mlx_array* out, mlx_array a, mlx_array b);
// Integer bits (uint32 and friends: multiplication wraps, the shift is logical for unsigned types).
int mlx_bitwise_xor(mlx_array* out, mlx_array a, mlx_array b);
int mlx_right_shift(mlx_array* out, mlx_array a, mlx_array b);
int mlx_where(mlx_array* out, mlx_array condition, mlx_array a, mlx_array b);
int mlx_matmul(mlx_array* out, mlx_array a, mlx_array b);
/* out = c + a @ b (c broadcast), MLX's addmm with alpha = beta = 1. */
int mlx_addmm(mlx_array* out, mlx_array c, mlx_array a, mlx_array b);

int mlx_rsqrt(mlx_array* out, mlx_array a);
int mlx_sqrt(mlx_array* out, mlx_array a);
int mlx_exp(mlx_array* out, mlx_array a);
int mlx_log(mlx_array* out, mlx_array a);
int mlx_negative(mlx_array* out, mlx_array a);
int mlx_square(mlx_array* out, mlx_array a);
int mlx_tanh(mlx_array* out, mlx_array a);
int mlx_sigmoid(mlx_array* out, mlx_array a);
int mlx_erf(mlx_array* out, mlx_array a);
int mlx_cos(mlx_array* out, mlx_array a);
int mlx_sin(mlx_array* out, mlx_array a);
/* x * sigmoid(x) */
int mlx_silu(mlx_array* out, mlx_array a);
/* approximate = 0: exact erf form; 1: tanh approximation ("gelu_new"). */
int mlx_gelu(mlx_array* out, mlx_array a, int approximate);

int mlx_astype(mlx_array* out, mlx_array a, int dtype);
int mlx_reshape(mlx_array* out, mlx_array a, const int32_t* shape, int ndim);
int mlx_transpose(mlx_array* out, mlx_array a, const int32_t* axes, int naxes);
int mlx_slice(mlx_array* out, mlx_array a, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim);
/* a row-major copy of a (a view's own buffer); a itself when it already is row-major. */
int mlx_contiguous(mlx_array* out, mlx_array a);
int mlx_slice_update(mlx_array* out, mlx_array src, mlx_array update, const int32_t* start, const int32_t* stop, const int32_t* strides, int ndim);
int mlx_concatenate(mlx_array* out, const mlx_array* arrays, int count, int axis);
/* `count` parts of a along axis, cut before each of the count - 1 ascending indices (one primitive). */
int mlx_split(mlx_array* outs, int count, mlx_array a, const int32_t* indices, int axis);
/* Gathers and scatters bound-check indices whose values are on the host (an Error), and clamp the
 * others on the device into [-size, size - 1] (JAX's default), unless `in_range` is nonzero: the
 * caller's promise that they are in range by construction (an argmax over the axis, for one). */
int mlx_take(mlx_array* out, mlx_array a, mlx_array indices, int axis, int in_range);
int mlx_repeat(mlx_array* out, mlx_array a, int repeats, int axis);
int mlx_softmax(mlx_array* out, mlx_array a, int axis, int precise);
int mlx_mean(mlx_array* out, mlx_array a, const int32_t* axes, int naxes, int keepdims);
int mlx_sum(mlx_array* out, mlx_array a, const int32_t* axes, int naxes, int keepdims);
int mlx_max(mlx_array* out, mlx_array a, const int32_t* axes, int naxes, int keepdims);
int mlx_argmax(mlx_array* out, mlx_array a, int axis, int keepdims);
// `a` sorted along `axis`, ascending.
int mlx_sort(mlx_array* out, mlx_array a, int axis);
// Indices that sort `a` along `axis`, ascending (uint32).
int mlx_argsort(mlx_array* out, mlx_array a, int axis);
// Indices (uint32) that partition `a` along `axis` around its kth smallest element: that one in its
// sorted place, the smaller ones before it and the others after, each side in no set order.
int mlx_argpartition(mlx_array* out, mlx_array a, int kth, int axis);
// a's values at `indices` along `axis` (indices broadcast against a elsewhere); indices as mlx_take's.
int mlx_take_along_axis(mlx_array* out, mlx_array a, mlx_array indices, int axis, int in_range);
// a with `values` added at `indices` along `axis` (repeated indices add up); indices as mlx_take's.
int mlx_scatter_add_axis(mlx_array* out, mlx_array a, mlx_array indices, mlx_array values, int axis, int in_range);
// a with `values` written at `indices` along `axis` (a repeated index: one of its values); indices as mlx_take's.
int mlx_put_along_axis(mlx_array* out, mlx_array a, mlx_array indices, mlx_array values, int axis, int in_range);
int mlx_cumsum(mlx_array* out, mlx_array a, int axis, int reverse, int inclusive);
int mlx_logsumexp(mlx_array* out, mlx_array a, const int32_t* axes, int naxes, int keepdims);
int mlx_arange(mlx_array* out, double start, double stop, double step, int dtype);
/* Zeros made on the default device (no host data travels). */
int mlx_zeros(mlx_array* out, const int32_t* shape, int ndim, int dtype);

/* ---- fast ops ---- */
int mlx_fast_rms_norm(mlx_array* out, mlx_array x, mlx_array weight, float eps);
int mlx_fast_layer_norm(mlx_array* out, mlx_array x, mlx_array weight, mlx_array bias, float eps);
/* base is ignored when freqs is given (then pass NaN). */
int mlx_fast_rope(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, int offset, mlx_array freqs);
/* offset: an int32 array, a scalar or one position per batch element. */
int mlx_fast_rope_dynamic(mlx_array* out, mlx_array x, int dims, int traditional, float base, float scale, mlx_array offset, mlx_array freqs);
/* rms_norm(q, q_weight) and rms_norm(k, k_weight), each then rotated as mlx_fast_rope_dynamic: one
   kernel of the shim's on a CUDA GPU, else MLX's four ops. Writes two new handles. */
int mlx_fast_qk_norm_rope(mlx_array* q_out, mlx_array* k_out, mlx_array q, mlx_array k, mlx_array q_weight, mlx_array k_weight, float eps, int dims,
                          int traditional, float base, float scale, mlx_array offset, mlx_array freqs);
/* mask_mode: "" (none or mask array), "causal"; mask may be NULL, boolean or additive. */
int mlx_fast_scaled_dot_product_attention(mlx_array* out, mlx_array q, mlx_array k, mlx_array v, float scale, const char* mask_mode, mlx_array mask);
/* silu(gate) * up in one call. */
int mlx_fast_swiglu(mlx_array* out, mlx_array gate, mlx_array up);

/* The sampler's pick in one primitive (shim/ext/sample.cpp): per row of logits [B, V] (float32,
 * bfloat16, float16) with params [B, 5] float32 (1/temperature or 0 for greedy, 1 - topP or -1,
 * log(minP) or -inf, minTokensToKeep, topK or 0), seeds [B, 2] uint32 (low, high) and draw indices
 * [B] uint32: tokens [B, 1] uint32, each row's max [B] (NaN if it holds one) and the filters'
 * threshold [B] (kept: x >= threshold). */
int mlx_sample_pick(mlx_array* tokens, mlx_array* peak, mlx_array* threshold, mlx_array logits, mlx_array params, mlx_array seeds, mlx_array draws);
/* The greedy pick (shim/ext/sample.cpp): per row of logits [B, V] (float32, bfloat16, float16) its
 * first argmax (tokens [B, 1] uint32) and its max ([B], the logits' dtype): one node of the shim's on
 * a CUDA GPU (MLXB_GREEDY_PICK=mlx: MLX's argmax and max, as elsewhere). */
int mlx_greedy_pick(mlx_array* tokens, mlx_array* peak, mlx_array logits);
/* The sampler's penalties over each row's recent ids (shim/ext/sample.cpp): logits [B, V] (float32,
 * bfloat16 or float16), ids [B, W] int32 (-1: an empty slot), params [B, 6] float32 (repetition
 * penalty, its context, presence penalty, its context, frequency penalty, its context; a context
 * counts the last slots; 0: off) -> the penalized logits [B, V] float32. */
int mlx_penalize(mlx_array* out, mlx_array logits, mlx_array ids, mlx_array params);

/* KV-cache attention in one call: writes k, v [B,Hkv,T,D] at `offset` into the caches [B,Hkv,S,D],
 * attends q [B,H,T,D] causally over positions [0, offset + T) (GQA when H > Hkv), honouring
 * key_mask [B,S] (nonzero = attend; NULL = none). Writes the output and the updated caches. */
int mlx_fast_kv_cache_attention(mlx_array* out, mlx_array* k_cache_out, mlx_array* v_cache_out, mlx_array q, mlx_array k, mlx_array v, mlx_array k_cache,
                                mlx_array v_cache, int offset, float scale, mlx_array key_mask);

/* ---- KV cache: per layer, key and value buffers [B, H, max_length, D] made on the device, and the
 * number of positions written (the offset; advance it after each forward) ---- */
typedef void* mlx_kv_cache;
int mlx_kv_cache_new(mlx_kv_cache* out, int layers, int batch, int heads, int max_length, int head_dim, int dtype);
int mlx_kv_cache_free(mlx_kv_cache cache);
int mlx_kv_cache_offset(int* out, mlx_kv_cache cache);
int mlx_kv_cache_advance(mlx_kv_cache cache, int positions);
/* Sets the offset (later writes start there). */
int mlx_kv_cache_seek(mlx_kv_cache cache, int offset);
/* Makes the cache rotating, as mlx-lm's RotatingKVCache: once max_length positions are written, each
 * new one (one at a time) overwrites the oldest slot after the first `keep`, and update_fetch returns
 * every slot; the offset keeps counting positions. */
int mlx_kv_cache_rotate(mlx_kv_cache cache, int keep);
/* Makes an empty cache quantized (bits 4 or 8, groups of `group` along head_dim), as mlx-lm's
 * QuantizedKVCache: keys and values are stored quantized and update_fetch returns them dequantized
 * (the first write, a prompt, is attended at full precision). */
int mlx_kv_cache_quantize(mlx_kv_cache cache, int bits, int group);
/* The layer's current buffers (whole length). */
int mlx_kv_cache_layer(mlx_array* keys, mlx_array* values, mlx_kv_cache cache, int layer);
/* Replaces every layer's buffers (keys[l], values[l] [B, H, S, D] with the cache's heads, head_dim and
 * dtype; one B and S for all) and sets the offset (<= S): the batch and length become B and S. A
 * running batch of sequences gains and loses rows this way while the cache (and the decode steps
 * recorded against it) stays the same object. Not for rotating or quantized caches. */
int mlx_kv_cache_set(mlx_kv_cache cache, const mlx_array* keys, const mlx_array* values, int layers, int offset);
/* Writes k, v [B, H, T, D] at the offset and returns every key and value so far, [B, H, offset + T, D]. */
int mlx_kv_cache_update_fetch(mlx_array* keys, mlx_array* values, mlx_kv_cache cache, int layer, mlx_array k, mlx_array v);
/* update_fetch and causal attention of q [B, Hq, T, D] over the result (GQA when Hq > H), honouring
 * key_mask [B, >= offset + T] (nonzero = attend; NULL = none). */
int mlx_kv_cache_attention(mlx_array* out, mlx_kv_cache cache, int layer, mlx_array q, mlx_array k, mlx_array v, float scale, mlx_array key_mask);

/* ---- distributed: a process group and its collectives ---- */
typedef void* mlx_group;
/* MLX's distributed init: backend "ring", "nccl", "mpi" or "any"; strict = fail rather than return a
 * group of one when no backend can start (the ring reads MLX_RANK and MLX_HOSTFILE). */
int mlx_distributed_init(mlx_group* out, const char* backend, int strict);
int mlx_distributed_free(mlx_group group);
int mlx_distributed_rank(int* out, mlx_group group);
int mlx_distributed_size(int* out, mlx_group group);
/* The sum of x over the group's processes (every process gets it). */
int mlx_distributed_all_sum(mlx_array* out, mlx_array x, mlx_group group);
/* x of every process, concatenated along the first axis in rank order. */
int mlx_distributed_all_gather(mlx_array* out, mlx_array x, mlx_group group);

/* ---- record and replay: the ops of one step, replayed with new inputs in one call ---- */
typedef void* mlx_tape;
/* Starts recording every op this thread runs (one tape at a time). */
int mlx_tape_record_begin(mlx_tape* out);
/* Declares `a` the next input: replays take their own array in its place. */
int mlx_tape_input(mlx_tape tape, mlx_array a);
/* Stops recording, naming the outputs; an error (the tape stays unusable) when the step ran an op the
 * tape cannot replay or read an array to the host. */
int mlx_tape_record_end(mlx_tape tape, const mlx_array* outputs, int count);
/* Runs the recorded ops on new inputs; writes new handles for the outputs. Ops on a KV cache act on
 * the cache as it stands (its offset now). */
int mlx_tape_run(mlx_array* outputs, int count, mlx_tape tape, const mlx_array* inputs, int input_count);
/* Of the last run: ops rebuilt from the nodes they made when recorded (pure ops whose inputs kept
 * their shapes and dtypes) and ops that ran their function again (the KV cache's, or new shapes). */
int mlx_tape_last_run(int* rebuilt, int* called, mlx_tape tape);
/* Whether the recorded step's input `index` is read by a pure op (one replays rebuild while the
 * input's shape holds), rather than only by ops on the KV cache. */
int mlx_tape_input_pure(int* out, mlx_tape tape, int index);
int mlx_tape_free(mlx_tape tape);
/* Step graphs (MLX's CUDA backend only; an error elsewhere): runs the recorded ops as mlx_tape_run
 * does, evaluating them, and keeps the step as one CUDA graph of its own when it can be launched again
 * from it (*captured = 1; else 0, and mlx_tape_capture_failure says why). */
int mlx_tape_capture(mlx_array* outputs, int count, mlx_tape tape, const mlx_array* inputs, int input_count, int* captured);
/* Launches the captured step on new inputs (the captured shapes and dtypes): new handles for its
 * outputs, lazy. An error, changing nothing, when the tape holds no captured step or the KV cache no
 * longer takes its writes in place (the captured step is then of no use: release it). */
int mlx_tape_launch(mlx_array* outputs, int count, mlx_tape tape, const mlx_array* inputs, int input_count);
/* Lets the captured step go (waits for its last launch). */
int mlx_tape_release_capture(mlx_tape tape);
/* Why the last capture kept no graph ("" when it did). */
const char* mlx_tape_capture_failure(mlx_tape tape);

/* ---- quantization (mode: "affine", "mxfp4", "mxfp8", "nvfp4") ---- */
/* Writes the packed weights, the scales and, for affine, the biases (else *biases = NULL).
 * group_size / bits <= 0 take MLX's default for the mode. */
int mlx_quantize(mlx_array* wq, mlx_array* scales, mlx_array* biases, mlx_array w, int group_size, int bits, const char* mode);
/* dtype < 0: MLX's default output dtype (the scales' dtype). */
int mlx_dequantize(mlx_array* out, mlx_array wq, mlx_array scales, mlx_array biases, int group_size, int bits, const char* mode, int dtype);
/* int8_activations != 0: on the CPU, the shim's matvec kernel may quantize x to int8 per block of 64
 * values (AVX-512 VNNI; 4-bit affine, group a multiple of 64; any number of rows): faster, approximate.
 * Else (and wherever that kernel does not run) x stays as it is. */
int mlx_quantized_matmul(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits,
                         const char* mode, int int8_activations);
/* x @ dequantize(wq)(^T) + addend as one op: the decode-time matvec kernels add it in their epilogue
 * (the product rounded to x's dtype first, as a separate add), else quantized_matmul, then add. */
int mlx_quantized_matmul_add(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, mlx_array addend, int transpose, int group_size,
                             int bits, const char* mode, int int8_activations);
/* outs[0] = x @ dequantize(wq)^T + addend (as quantized_matmul_add, transposed), outs[1] = rms_norm(outs[0],
 * norm_weight, eps) (as fast_rms_norm): on the GPU one node where the decode-time matvec fits (its last
 * warp to finish writes the norm; the sum of squares may add in another order than MLX's kernel),
 * else the two ops. transpose must be 1. */
int mlx_quantized_matmul_add_norm(mlx_array* outs, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, mlx_array addend, mlx_array norm_weight,
                                  float eps, int transpose, int group_size, int bits, const char* mode, int int8_activations);
/* silu(gate) * up where [gate, up] are the halves of x @ dequantize(wq)^T along its last axis (wq a fused
 * gate/up weight: a gate's rows, then an up's): the same values as the product, split, then
 * mlx_fast_swiglu; on a CUDA GPU one node for one bfloat16 row. transpose must be 1. */
int mlx_quantized_matmul_swiglu(mlx_array* out, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, int transpose, int group_size, int bits,
                                const char* mode, int int8_activations);
/* A fused q/k/v projection (wq: q_heads + 2 k_heads heads of D rows) as q, k and v of shapes
 * dims[0..4), [4..8), [8..12) ([B, q_heads, 1, D], [B, k_heads, 1, D] twice), q and k then normed and
 * rotated as mlx_fast_qk_norm_rope (rope_dims, traditional, base or freqs, scale, offset): the same
 * values as mlx_quantized_matmul_split, then that; on a CUDA GPU one node for one row. Writes three
 * handles. */
int mlx_quantized_matmul_qk_norm_rope(mlx_array* outs, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, const int32_t* dims, mlx_array q_weight,
                                      mlx_array k_weight, mlx_array offset, mlx_array freqs, float eps, int rope_dims, int traditional, float base, float scale,
                                      int group_size, int bits, const char* mode, int int8_activations);
/* x @ dequantize(wq)(^T) as `count` arrays: output i has shape dims[sum(ranks[:i]) ..][:ranks[i]] and
 * takes the next size(i) / rows columns of each row of the product (a split along the last axis,
 * each part reshaped). For one row of x, one node whose outputs are views of the product. */
int mlx_quantized_matmul_split(mlx_array* outs, int count, mlx_array x, mlx_array wq, mlx_array scales, mlx_array biases, const int32_t* ranks,
                               const int32_t* dims, int transpose, int group_size, int bits, const char* mode, int int8_activations);

/* ---- files: a read-only, copy-on-write mapping whose bytes back arrays without a copy ---- */
typedef void* mlx_file_map;
int mlx_file_map_open(mlx_file_map* out, size_t* size, const char* path);
/* Drops the caller's reference; arrays made from the mapping keep it alive until they are freed. */
int mlx_file_map_close(mlx_file_map map);
/* An array over bytes [offset, offset + nbytes) of the mapping (copied only if misaligned). */
int mlx_array_new_mapped(mlx_array* out, mlx_file_map map, size_t offset, size_t nbytes, const int32_t* shape, int ndim, int dtype);

/* ---- GGUF files, read by MLX's load_gguf: F32/F16/BF16 tensors as they are, Q4_0/Q4_1/Q8_0 as
 * affine-quantized triples (name ending .weight: uint32 codes; its prefix + .scales and .biases:
 * float16, group 32) ---- */
typedef void* mlx_gguf;
int mlx_gguf_load(mlx_gguf* out, const char* path);
/* Moves the array `name` out of the loaded set (an error if there is none). */
int mlx_gguf_take(mlx_array* out, mlx_gguf g, const char* name);
int mlx_gguf_free(mlx_gguf g);

/* ---- memory ---- */
int mlx_get_active_memory(size_t* out);
int mlx_get_peak_memory(size_t* out);
int mlx_reset_peak_memory(void);
int mlx_get_cache_memory(size_t* out);
int mlx_set_memory_limit(size_t* previous, size_t limit);
int mlx_set_cache_limit(size_t* previous, size_t limit);
int mlx_clear_cache(void);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif

#endif
