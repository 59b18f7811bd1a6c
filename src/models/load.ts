// Loading a model from a checkpoint directory: the architecture's graph builder, the weights (checked,
// sharded, projections fused), and the backend, chosen here once.
import { checkOptionNames } from "../options.ts";
import { selectBackend, type BackendKind } from "../backend/dispatch.ts";
import { join } from "node:path";
import type { DType, TensorData } from "../dtype.ts";
import type { Graph } from "../graph/graph.ts";
import { inverseFrequencies } from "../graph/rotary.ts";
import { type Checkpoint, checkpointBytes, loadCheckpoint } from "../io/checkpoint.ts";
import { HostTensor } from "../io/host.ts";
import { fuseLinears } from "../quant/linear.ts";
import type { Group } from "../ops/distributed.ts";
import { ACTIVATIONS, type Activations } from "../ops/quant.ts";
import { rewrite } from "../rewrite/index.ts";
import { Tensor } from "../tensor.ts";
import { buildBert } from "./bert.ts";
import { type ModelConfig, parseModelConfig } from "./config.ts";
import { buildDecoder, type DecoderSpec } from "./decoder.ts";
import { gemmaSpec } from "./gemma.ts";
import { gpt2Spec } from "./gpt2.ts";
import { llamaSpec, qwen3Spec } from "./llama.ts";
import { phiSpec } from "./phi.ts";
import { shardedConfig, shardWeights } from "./shard.ts";
import { checkShapes, checkShapesOnHost, checkWeights, encoderNames } from "./validate.ts";

const SPECS: Record<string, (config: ModelConfig) => DecoderSpec> = {
  llama: (c) => llamaSpec(c.tieEmbeddings),
  mistral: (c) => llamaSpec(c.tieEmbeddings),
  qwen2: (c) => llamaSpec(c.tieEmbeddings),
  qwen3: (c) => qwen3Spec(c.tieEmbeddings),
  gemma: gemmaSpec,
  phi: phiSpec,
  gpt2: gpt2Spec,
};

const ENCODERS: Record<string, (config: ModelConfig) => Graph> = { bert: buildBert };

/** The model shipped with the package (default-model/README.md): a 29M-parameter 4-bit Llama
 * trained on English prose, what `mlx-bun generate` runs without --model. */
export const DEFAULT_MODEL_DIR = join(import.meta.dir, "..", "..", "default-model");

export const ARCHITECTURES = [...Object.keys(SPECS), ...Object.keys(ENCODERS)];

interface ModelBase {
  /** Decoders generate through a KV cache (forward); encoders (BERT) return hidden states (encode). */
  kind: "decoder" | "encoder";
  config: ModelConfig;
  /** The activations' dtype on MLX, and the KV cache's: the floating dtype that most of the
   * checkpoint's values have (bfloat16 for most released MLX checkpoints). */
  dtype: DType;
  /** The model's graph (built once per variant); encoders ignore `logits`. */
  graph(logits: "last" | "all"): Graph;
  /** What was made for this model and lives as long as it (its decode engines): disposed first by dispose(). */
  readonly dependents: Set<{ dispose(): void }>;
  dispose(): void;
}

/** Disposes a model's dependents, then runs `free`. */
function disposer(dependents: Set<{ dispose(): void }>, free: () => void): () => void {
  return () => {
    for (const d of [...dependents]) d.dispose();
    dependents.clear();
    free();
  };
}

/** Weights mapped into MLX arrays; runs on MLX (ops that fail there fall back to the CPU one by one). */
export interface MlxModel extends ModelBase {
  backend: "mlx";
  checkpoint: Checkpoint<Tensor>;
  /** The checkpoint's weights plus derived tables (rotary frequencies); a tensor-parallel rank's
   * share of the sharded projections. */
  weights: ReadonlyMap<string, Tensor>;
  /** The process group of a tensor-parallel model (LoadOptions.group). */
  group: Group | null;
}

/** Weights read into host memory; runs on the pure-TypeScript CPU reference (no native library). */
export interface CpuModel extends ModelBase {
  backend: "cpu";
  checkpoint: Checkpoint<HostTensor>;
  weights: ReadonlyMap<string, TensorData>;
}

export type Model = MlxModel | CpuModel;

export interface LoadOptions {
  /** "auto" (default): MLX when the shim loads and 1.5 x the model fits memory, else "cpu". */
  backend?: BackendKind | string | undefined;
  onProgress?: ((loaded: number, total: number) => void) | undefined;
  /** Tensor parallelism over this process group (MLX; decoders with separate q/k/v): each rank keeps
   * its share of the heads and MLP features, as mlx-lm's shard_linear; outputs are summed with
   * all_sum. Start the ranks with `mlx-bun launch`. */
  group?: Group | undefined;
  /** The MLX backend's 4-bit products on a CPU: "float" (default: exact, greedy tokens as mlx-lm's)
   * or "int8": each input row quantized to int8 per block of 64 values (one scale per block, as
   * llama.cpp's Q8 activations) and dotted with the weights by AVX-512 VNNI, prefill included; about
   * 1.5x faster decode on the default model, with a logit error test/int8-activations.test.ts
   * states. Where the CPU lacks AVX-512 VNNI or a group size is not a multiple of 64, that product
   * stays float. No effect on a GPU or the CPU backend. */
  cpuActivations?: Activations | undefined;
}

function architecture(
  dir: string,
  config: ModelConfig,
): { spec?: DecoderSpec; encoder?: (config: ModelConfig) => Graph } {
  const specOf = SPECS[config.modelType];
  const encoder = ENCODERS[config.modelType];
  if (!specOf && !encoder)
    throw new Error(
      `${dir}: model_type '${config.modelType}' is not supported (supported: ${ARCHITECTURES.join(", ")})`,
    );
  return specOf ? { spec: specOf(config) } : { encoder: encoder! };
}

function graphs(
  config: ModelConfig,
  arch: ReturnType<typeof architecture>,
  sharded = false,
): (logits: "last" | "all") => Graph {
  const built = new Map<string, Graph>();
  return (logits) => {
    const key = arch.encoder ? "encoder" : logits;
    if (!built.has(key))
      built.set(key, arch.encoder ? arch.encoder(config) : buildDecoder(config, arch.spec!, { logits, sharded }));
    return built.get(key)!;
  };
}

/** Loads a model, choosing its backend once (see LoadOptions.backend). */
export function loadModel(dir: string, options: LoadOptions & { backend: "mlx" }): MlxModel;
export function loadModel(dir: string, options: LoadOptions & { backend: "cpu" }): CpuModel;
export function loadModel(dir: string, options?: LoadOptions): Model;
export function loadModel(dir: string, options: LoadOptions = {}): Model {
  checkOptionNames("loadModel", options, ["backend", "onProgress", "group", "cpuActivations"]);
  const activations = options.cpuActivations ?? "float";
  if (!ACTIVATIONS.includes(activations))
    throw new Error(`loadModel: cpuActivations must be one of ${ACTIVATIONS.join(", ")}, got '${String(activations)}'`);
  const backend = selectBackend(options.backend ?? "auto", checkpointBytes(dir));
  const group = options.group && options.group.size > 1 ? options.group : null;
  if (group && backend === "cpu") throw new Error(`${dir}: tensor parallelism (options.group) runs on the MLX backend`);
  if (backend === "cpu") {
    const checkpoint = loadCheckpoint(dir, options.onProgress, true);
    const config = parseModelConfig(checkpoint.config);
    const arch = architecture(dir, config);
    const inverse = inverseFrequencies(config.ropeDims, config.ropeTheta, config.ropeScaling);
    const frequencies = new HostTensor(
      new Uint8Array(inverse.buffer),
      [inverse.length],
      "float32",
      "rotary.inverse_frequencies",
    );
    const named = arch.encoder
      ? encoderNames<TensorData>(checkpoint.weights)
      : new Map<string, TensorData>(checkpoint.weights);
    const weights = new Map(named).set("rotary.inverse_frequencies", frequencies);
    const graph = graphs(config, arch);
    checkWeights(dir, graph("all"), weights, named.keys(), config, arch.encoder ? "required" : "optional");
    checkShapesOnHost(dir, graph("last"), weights, checkpoint.quantization);
    const dependents = new Set<{ dispose(): void }>();
    return {
      kind: arch.encoder ? "encoder" : "decoder",
      backend,
      config,
      checkpoint,
      weights,
      dtype: activationDtype(checkpoint.weights),
      graph,
      dependents,
      dispose: disposer(dependents, () => checkpoint.dispose()),
    };
  }
  const checkpoint = loadCheckpoint(dir, options.onProgress);
  if (checkpoint.quantization && activations !== "float") checkpoint.quantization.activations = activations;
  const shards: Tensor[] = [];
  try {
    const full = parseModelConfig(checkpoint.config);
    const arch = architecture(dir, full);
    const config = group ? shardedConfig(dir, full, arch.spec, group) : full;
    const inverse = inverseFrequencies(config.ropeDims, config.ropeTheta, config.ropeScaling);
    const frequencies = Tensor.from(inverse, [inverse.length], "float32");
    const named = arch.encoder ? encoderNames(checkpoint.weights) : new Map(checkpoint.weights);
    // The full projections are not kept: a rank holds its share (the point of sharding a model too
    // large for one device).
    if (group) replaceInCheckpoint(checkpoint, named, shardWeights(dir, named, full, arch.spec!, group, shards));
    const weights = new Map(named).set("rotary.inverse_frequencies", frequencies);
    const graph = graphs(config, arch, group !== null);
    try {
      checkWeights(dir, graph("all"), weights, named.keys(), config, arch.encoder ? "required" : "optional");
      checkShapes(dir, graph("last"), weights, checkpoint.quantization, group);
    } catch (e) {
      frequencies.dispose();
      throw e;
    }
    fuseProjections(weights, graph, checkpoint, shards);
    const dependents = new Set<{ dispose(): void }>();
    return {
      kind: arch.encoder ? "encoder" : "decoder",
      backend,
      config,
      checkpoint,
      weights,
      dtype: activationDtype(checkpoint.weights),
      graph,
      group,
      dependents,
      dispose: disposer(dependents, () => {
        frequencies.dispose();
        for (const t of shards) t.dispose();
        checkpoint.dispose();
      }),
    };
  } catch (e) {
    for (const t of shards) t.dispose();
    checkpoint.dispose();
    throw e;
  }
}

/** The layers the fused_projections rewrite groups (q, k, v; gate and up) get one weight each
 * (fuseLinears); the checkpoint's own tensors for them become views of it and are freed. */
function fuseProjections(
  weights: Map<string, Tensor>,
  graph: (logits: "last" | "all") => Graph,
  checkpoint: Checkpoint<Tensor>,
  made: Tensor[],
): void {
  // Both graphs group the same layers; fuseLinears skips a group fused already.
  const groups = (["last", "all"] as const).flatMap((logits) =>
    rewrite(graph(logits)).nodes.flatMap((n) =>
      n.op === "dense_fused" ? [n.attrs.modules] : n.op === "dense_fused_swiglu" ? [[n.attrs.gate, n.attrs.up]] : [],
    ),
  );
  replaceInCheckpoint(checkpoint, weights, fuseLinears(weights, groups, checkpoint.quantization, made));
}

/** The checkpoint's tensors `replaced` (by key: the originals) become those of `weights`, and the
 * originals are freed. */
function replaceInCheckpoint(
  checkpoint: Checkpoint<Tensor>,
  weights: ReadonlyMap<string, Tensor>,
  replaced: ReadonlyMap<string, Tensor>,
): void {
  for (const [key, original] of replaced) {
    if (checkpoint.weights.get(key) === original) checkpoint.weights.set(key, weights.get(key)!);
    original.dispose();
  }
}

const FLOATING: readonly DType[] = ["float32", "float16", "bfloat16", "float64"];

function activationDtype(weights: ReadonlyMap<string, TensorData>): DType {
  const counts = new Map<DType, number>();
  for (const w of weights.values()) {
    if (FLOATING.includes(w.dtype)) counts.set(w.dtype, (counts.get(w.dtype) ?? 0) + w.size);
  }
  return [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? "float32";
}
