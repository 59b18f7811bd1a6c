// Public API (re-exports only).
export { Tensor, DTYPES, type DType, liveTensorCount, itemSize } from "./tensor.ts";
export * as ops from "./ops/core.ts";
export * as fast from "./ops/fast.ts";
export * as quant from "./ops/quant.ts";
export { memory } from "./ops/memory.ts";
export { nativeStatus } from "./native/ffi.ts";
export { mlxVersion, deviceInfo } from "./native/device.ts";
