// MLX allocator statistics and limits (bytes).
import { check, native, outSize, outWords } from "../native/ffi.ts";

function read(symbol: "mlx_get_active_memory" | "mlx_get_peak_memory" | "mlx_get_cache_memory"): number {
  check(native()[symbol](outWords), symbol);
  return outSize();
}

/** A byte count for the shim (size_t): an Error naming the call unless it is an integer in [0, 2^53). */
function bytesArgument(bytes: number, op: string): number {
  if (typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0)
    throw new Error(`memory.${op}: bytes must be a non-negative integer, got ${String(bytes)}`);
  return bytes;
}

export const memory = {
  active: (): number => read("mlx_get_active_memory"),
  peak: (): number => read("mlx_get_peak_memory"),
  cache: (): number => read("mlx_get_cache_memory"),
  resetPeak: (): void => check(native().mlx_reset_peak_memory(), "resetPeak"),
  clearCache: (): void => check(native().mlx_clear_cache(), "clearCache"),
  /** Returns the previous limit. */
  setLimit: (bytes: number): number => {
    check(native().mlx_set_memory_limit(outWords, bytesArgument(bytes, "setLimit")), "setMemoryLimit");
    return outSize();
  },
  /** Returns the previous limit. */
  setCacheLimit: (bytes: number): number => {
    check(native().mlx_set_cache_limit(outWords, bytesArgument(bytes, "setCacheLimit")), "setCacheLimit");
    return outSize();
  },
};
