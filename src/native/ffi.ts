// The dlopen symbol table of the shim (shim/mlxb.h) and where the library is found.
//
// Every shim function returns an int status and writes results through out-pointers; `check`
// turns a non-zero status into an Error carrying the message of the C++ exception the shim caught.
import { dlopen, FFIType, type Pointer } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runtimeLibrary } from "./runtime.ts";

const { ptr: P, i32, f32, f64, u64, cstring } = FFIType;

// Argument lists; every function returns i32 (status) unless listed in `returning`.
export const symbols = {
  mlx_last_error: [],
  mlx_version_string: [],
  mlx_default_device_is_gpu: [],
  mlx_set_default_device_gpu: [i32],
  mlx_default_device_info: [P, u64, P],

  mlx_array_new_data: [P, P, u64, P, i32, i32],
  mlx_array_new_float: [P, f32, i32],
  mlx_array_new_int: [P, i32],
  mlx_array_free: [P],
  mlx_array_ndim: [P, P],
  mlx_array_shape: [P, P],
  mlx_array_dtype: [P, P],
  mlx_array_size: [P, P],
  mlx_array_nbytes: [P, P],
  mlx_array_eval: [P],
  mlx_eval: [P, i32],
  mlx_async_eval: [P, i32],
  mlx_array_to_host: [P, u64, P],
  mlx_array_available: [P, P],
  mlx_graph_primitives: [P, P, i32],
  mlx_graph_primitive_names: [P, u64, P, P, i32],
  mlx_bench_read_bandwidth: [P, u64, i32],
  mlx_bench_add_floor: [P, P, P, i32, i32],

  mlx_add: [P, P, P],
  mlx_subtract: [P, P, P],
  mlx_multiply: [P, P, P],
  mlx_divide: [P, P, P],
  mlx_maximum: [P, P, P],
  mlx_power: [P, P, P],
  mlx_greater: [P, P, P],
  mlx_minimum: [P, P, P],
  mlx_equal: [P, P, P],
  mlx_greater_equal: [P, P, P],
  mlx_less_equal: [P, P, P],
  mlx_bitwise_xor: [P, P, P],
  mlx_right_shift: [P, P, P],
  mlx_where: [P, P, P, P],
  mlx_matmul: [P, P, P],
  mlx_addmm: [P, P, P, P],

  mlx_rsqrt: [P, P],
  mlx_sqrt: [P, P],
  mlx_exp: [P, P],
  mlx_log: [P, P],
  mlx_negative: [P, P],
  mlx_square: [P, P],
  mlx_tanh: [P, P],
  mlx_sigmoid: [P, P],
  mlx_erf: [P, P],
  mlx_cos: [P, P],
  mlx_sin: [P, P],
  mlx_silu: [P, P],
  mlx_gelu: [P, P, i32],

  mlx_astype: [P, P, i32],
  mlx_reshape: [P, P, P, i32],
  mlx_transpose: [P, P, P, i32],
  mlx_slice: [P, P, P, P, P, i32],
  mlx_contiguous: [P, P],
  mlx_slice_update: [P, P, P, P, P, P, i32],
  mlx_concatenate: [P, P, i32, i32],
  mlx_split: [P, i32, P, P, i32],
  mlx_take: [P, P, P, i32, i32],
  mlx_repeat: [P, P, i32, i32],
  mlx_softmax: [P, P, i32, i32],
  mlx_mean: [P, P, P, i32, i32],
  mlx_sum: [P, P, P, i32, i32],
  mlx_max: [P, P, P, i32, i32],
  mlx_argmax: [P, P, i32, i32],
  mlx_sort: [P, P, i32],
  mlx_argsort: [P, P, i32],
  mlx_argpartition: [P, P, i32, i32],
  mlx_take_along_axis: [P, P, P, i32, i32],
  mlx_put_along_axis: [P, P, P, P, i32, i32],
  mlx_scatter_add_axis: [P, P, P, P, i32, i32],
  mlx_cumsum: [P, P, i32, i32, i32],
  mlx_logsumexp: [P, P, P, i32, i32],
  mlx_arange: [P, f64, f64, f64, i32],
  mlx_zeros: [P, P, i32, i32],

  mlx_fast_rms_norm: [P, P, P, f32],
  mlx_fast_layer_norm: [P, P, P, P, f32],
  mlx_fast_rope: [P, P, i32, i32, f32, f32, i32, P],
  mlx_fast_rope_dynamic: [P, P, i32, i32, f32, f32, P, P],
  mlx_fast_qk_norm_rope: [P, P, P, P, P, P, f32, i32, i32, f32, f32, P, P],
  mlx_fast_scaled_dot_product_attention: [P, P, P, P, f32, cstring, P],
  mlx_fast_swiglu: [P, P, P],
  mlx_fast_kv_cache_attention: [P, P, P, P, P, P, P, P, i32, f32, P],
  mlx_sample_pick: [P, P, P, P, P, P, P],
  mlx_greedy_pick: [P, P, P],
  mlx_penalize: [P, P, P, P],

  mlx_kv_cache_new: [P, i32, i32, i32, i32, i32, i32],
  mlx_kv_cache_free: [P],
  mlx_kv_cache_offset: [P, P],
  mlx_kv_cache_advance: [P, i32],
  mlx_kv_cache_seek: [P, i32],
  mlx_kv_cache_rotate: [P, i32],
  mlx_distributed_init: [P, cstring, i32],
  mlx_distributed_free: [P],
  mlx_distributed_rank: [P, P],
  mlx_distributed_size: [P, P],
  mlx_distributed_all_sum: [P, P, P],
  mlx_distributed_all_gather: [P, P, P],
  mlx_kv_cache_quantize: [P, i32, i32],
  mlx_kv_cache_layer: [P, P, P, i32],
  mlx_kv_cache_set: [P, P, P, i32, i32],
  mlx_kv_cache_update_fetch: [P, P, P, i32, P, P],
  mlx_kv_cache_attention: [P, P, i32, P, P, P, f32, P],

  mlx_tape_record_begin: [P],
  mlx_tape_input: [P, P],
  mlx_tape_record_end: [P, P, i32],
  mlx_tape_run: [P, i32, P, P, i32],
  mlx_tape_last_run: [P, P, P],
  mlx_tape_input_pure: [P, P, i32],
  mlx_tape_free: [P],
  mlx_tape_capture: [P, i32, P, P, i32, P],
  mlx_tape_launch: [P, i32, P, P, i32],
  mlx_tape_release_capture: [P],
  mlx_tape_capture_failure: [P],

  mlx_quantize: [P, P, P, P, i32, i32, cstring],
  mlx_dequantize: [P, P, P, P, i32, i32, cstring, i32],
  mlx_quantized_matmul: [P, P, P, P, P, i32, i32, i32, cstring, i32],
  mlx_quantized_matmul_add: [P, P, P, P, P, P, i32, i32, i32, cstring, i32],
  mlx_quantized_matmul_add_norm: [P, P, P, P, P, P, P, f32, i32, i32, i32, cstring, i32],
  mlx_quantized_matmul_swiglu: [P, P, P, P, P, i32, i32, i32, cstring, i32],
  mlx_quantized_matmul_split: [P, i32, P, P, P, P, P, P, i32, i32, i32, cstring, i32],
  mlx_quantized_matmul_qk_norm_rope: [P, P, P, P, P, P, P, P, P, P, f32, i32, i32, f32, f32, i32, i32, cstring, i32],

  mlx_file_map_open: [P, P, cstring],
  mlx_file_map_close: [P],
  mlx_array_new_mapped: [P, P, u64, u64, P, i32, i32],
  mlx_gguf_load: [P, cstring],
  mlx_gguf_take: [P, P, cstring],
  mlx_gguf_free: [P],

  mlx_get_active_memory: [P],
  mlx_get_peak_memory: [P],
  mlx_reset_peak_memory: [],
  mlx_get_cache_memory: [P],
  mlx_set_memory_limit: [P, u64],
  mlx_set_cache_limit: [P, u64],
  mlx_clear_cache: [],
} as const;

export const returning: Partial<Record<keyof typeof symbols, FFIType>> = {
  mlx_last_error: cstring,
  mlx_version_string: cstring,
  mlx_tape_capture_failure: cstring,
};

type Table = { [K in keyof typeof symbols]: { args: (typeof symbols)[K]; returns: FFIType } };

function table(): Table {
  const out = {} as Record<string, { args: readonly FFIType[]; returns: FFIType }>;
  for (const [name, args] of Object.entries(symbols)) {
    out[name] = { args, returns: returning[name as keyof typeof symbols] ?? i32 };
  }
  return out as Table;
}

/** Candidate locations of libmlxb.so, first match wins: $MLXB_LIBRARY, a dev checkout's build
 * output, then the runtimes `mlx-bun setup` installs (the CUDA one first). */
export function libraryCandidates(): string[] {
  const fromEnv = process.env["MLXB_LIBRARY"];
  const repoRoot = join(import.meta.dir, "..", "..");
  return [
    ...(fromEnv ? [fromEnv] : []),
    join(repoRoot, "zig-out", "lib", "libmlxb.so"),
    runtimeLibrary("cuda13"),
    runtimeLibrary("cpu"),
  ];
}

// biome-ignore lint: the symbol functions are typed loosely on purpose; ops.ts wraps each one.
type Native = Record<keyof typeof symbols, (...args: any[]) => any>;

let loaded: Native | undefined;
let loadError: Error | undefined;

/** Loads the shim once; throws an Error telling how to build it when it cannot be loaded. */
export function native(): Native {
  if (loaded) return loaded;
  if (loadError) throw loadError;
  const fromEnv = process.env["MLXB_LIBRARY"];
  if (fromEnv) {
    // The library asked for, or an Error: never another one in its place.
    if (!existsSync(fromEnv))
      throw (loadError = new Error(
        `MLXB_LIBRARY is ${fromEnv}, which does not exist; unset it or point it at a libmlxb.so`,
      ));
    try {
      loaded = dlopen(fromEnv, table()).symbols as unknown as Native;
      return loaded;
    } catch (e) {
      throw (loadError = new Error(
        `MLXB_LIBRARY is ${fromEnv}, which does not load as the MLX shim: ${(e as Error).message}`,
      ));
    }
  }
  const candidates = libraryCandidates();
  const failures: string[] = [];
  for (const path of candidates.filter((p) => existsSync(p))) {
    try {
      loaded = dlopen(path, table()).symbols as unknown as Native;
      return loaded;
    } catch (e) {
      failures.push(`${path}: ${(e as Error).message}`);
    }
  }
  const tried = failures.length > 0 ? failures.join("; ") : `none of ${candidates.join(", ")} exists`;
  loadError = new Error(
    `cannot load the MLX shim (${tried}); run \`bunx mlx-bun setup\` (in a checkout: \`bash scripts/setup.sh\`), or set MLXB_LIBRARY`,
  );
  throw loadError;
}

/** Loads the library at `path` with the whole symbol table (an Error when it is not a library or a
 * symbol is missing) and returns the MLX version it was built against. For `mlx-bun setup`'s check,
 * in a child process. */
export function probeLibrary(path: string): string {
  const library = dlopen(path, table());
  try {
    return String((library.symbols as unknown as Native).mlx_version_string());
  } finally {
    library.close();
  }
}

/** Whether the shim loads, and why not; `requested` when MLXB_LIBRARY names the library. */
export function nativeStatus(): { available: boolean; reason: string; requested?: boolean } {
  const requested = Boolean(process.env["MLXB_LIBRARY"]);
  try {
    native();
    return { available: true, reason: "shim loaded", requested };
  } catch (e) {
    return { available: false, reason: (e as Error).message, requested };
  }
}

export function lastError(): string {
  return String(native().mlx_last_error());
}

/** Throws an Error naming the operation when a shim call failed. `what` may be a function so that
 * a costly description (shapes, names) is only built on failure. */
export function check(status: number, what: string | (() => string)): void {
  if (status !== 0) throw new Error(`${typeof what === "string" ? what : what()}: ${lastError()}`);
}

// Out-pointer scratch: calls are synchronous and single-threaded, so one buffer serves all of them.
// Read it right after the call that wrote it: any other shim call (a shape query) overwrites it.
const scratch = new ArrayBuffer(64);
export const outWords = new Uint32Array(scratch);
export const outI32 = new Int32Array(scratch);

/** Reads the pointer an out-parameter call wrote into `outWords`. */
export function outPointer(): Pointer {
  return (outWords[0]! + outWords[1]! * 0x100000000) as Pointer;
}

/** A handle written as a 64-bit word into a BigUint64Array out-parameter (several outputs). */
export function pointerFromWord(word: bigint): Pointer {
  return Number(word) as Pointer;
}

/** Reads a size_t an out-parameter call wrote into `outWords`. */
export function outSize(): number {
  return outWords[0]! + outWords[1]! * 0x100000000;
}
