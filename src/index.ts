// Public API (re-exports only).
export { Tensor, DTYPES, type DType, liveTensorCount, itemSize } from "./tensor.ts";
export * as ops from "./ops/core.ts";
export * as fast from "./ops/fast.ts";
export * as quant from "./ops/quant.ts";
export { memory } from "./ops/memory.ts";
export { nativeStatus } from "./native/ffi.ts";
export { BACKEND_KINDS, type BackendKind, type Support, support } from "./backend/dispatch.ts";
export { type DeviceInfo, type DeviceKind, deviceInfo, mlxVersion, setDevice } from "./native/device.ts";
export { loadCheckpoint, type Checkpoint } from "./io/checkpoint.ts";
export { loadSafetensors, saveSafetensors } from "./io/safetensors.ts";
export { parseQuantConfig, quantizationFor, type QuantConfig } from "./quant/config.ts";
export { dequantizeWeights, quantizeParams, quantizeWeights, type WeightMap } from "./quant/weights.ts";
export { linear } from "./quant/linear.ts";
export { ARCHITECTURES, cacheHeadsFor, createCache, encode, forward, loadModel, type Model } from "./models/index.ts";
export { KVCache } from "./kv-cache.ts";
export { Tokenizer, type ChatMessage } from "./tokenizer.ts";
export { generate, generateText, type GenerateOptions, type GenerationChunk, type GenerationStats } from "./generate.ts";
export { rewrite, REWRITERS, DEFAULT_REWRITERS } from "./rewrite/index.ts";
