// Public API (re-exports only).
export { DTYPES, type DType, itemSize, type TensorData } from "./dtype.ts";
export { Tensor, liveTensorCount, setFinalizerBound, tidy } from "./tensor.ts";
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
export {
  ARCHITECTURES,
  createCache,
  DEFAULT_MODEL_DIR,
  type CpuModel,
  encode,
  type EncodeOptions,
  forward,
  type ForwardOptions,
  type LoadOptions,
  loadModel,
  type MlxModel,
  type Model,
} from "./models/index.ts";
export { type CacheShape, HostKVCache, KVCache } from "./kv-cache.ts";
export { CpuTensor } from "./ops/cpu.ts";
export { Tokenizer, type ChatMessage, type ChatTool } from "./tokenizer/tokenizer.ts";
export {
  cosineSimilarity,
  embed,
  type EmbedOptions,
  type Embeddings,
  POOLINGS,
  type Pooling,
  sentenceTransformersConfig,
  type SentenceTransformersConfig,
} from "./embed.ts";
export {
  generate,
  generateText,
  type GenerateOptions,
  type GenerationChunk,
  type GenerationStats,
  type ResponseFormat,
} from "./engine/generate.ts";
export { jsonSchemaGrammar } from "./grammar/json-schema.ts";
export { rewrite, REWRITERS, DEFAULT_REWRITERS, type RewriterName } from "./rewrite/index.ts";
export { type Graph, GraphBuilder, type Node, opCounts } from "./graph/graph.ts";
export { OPS, type OpName } from "./graph/ops.ts";
export { HttpError, serve, type Server, type ServeOptions } from "./serve/server.ts";
export { PROMPT_CACHE_FORMAT, PromptCache } from "./engine/prompt-cache.ts";
export { type BatchChunk, type BatchStats, generateBatch, generateBatchText } from "./engine/batch.ts";
export { type SpeculativeOptions, type SpeculativeStats, speculativeGenerate } from "./engine/speculative.ts";
export { DISTRIBUTED_BACKENDS, type DistributedBackend, Group } from "./ops/distributed.ts";
export { launch } from "./cli/launch.ts";
