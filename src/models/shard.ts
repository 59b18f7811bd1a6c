// Tensor parallelism at load: a config's per-rank shape and each rank's share of the weights (as
// mlx-lm's shard_linear: columns of the input projections, rows of the output ones).
import type { Group } from "../ops/distributed.ts";
import { contiguous, slice } from "../ops/core.ts";
import type { Tensor } from "../tensor.ts";
import type { ModelConfig } from "./config.ts";
import type { DecoderSpec } from "./decoder.ts";

/** A tensor-parallel rank's config: its share of the heads, kv heads and MLP features. */
export function shardedConfig(
  dir: string,
  config: ModelConfig,
  spec: DecoderSpec | undefined,
  group: Group,
): ModelConfig {
  if (!spec) throw new Error(`${dir}: tensor parallelism shards decoders; ${config.modelType} is an encoder`);
  if ("fused" in spec.qkv)
    throw new Error(`${dir}: tensor parallelism needs separate q/k/v projections (${config.modelType} fuses them)`);
  const n = group.size;
  for (const [key, value] of [
    ["num_attention_heads", config.heads],
    ["num_key_value_heads", config.kvHeads],
    ["intermediate_size", config.intermediateSize],
  ] as const) {
    if (value % n !== 0)
      throw new Error(`${dir}: ${key} (${value}) must be a multiple of the ${n} ranks for tensor parallelism`);
  }
  return {
    ...config,
    heads: config.heads / n,
    kvHeads: config.kvHeads / n,
    intermediateSize: config.intermediateSize / n,
  };
}

/** Replaces, in `weights`, the projections with this rank's share (mlx-lm's shard_linear): q/k/v,
 * gate and up by output rows ("all-to-sharded"); the attention output and down projections by input
 * columns ("sharded-to-all", whole quantization groups per rank; a bias there would be summed once per
 * rank, so it is refused). The shares made (copies) are pushed to `made` (the model frees them); returns
 * the tensors they replaced, by key. */
export function shardWeights(
  dir: string,
  weights: Map<string, Tensor>,
  config: ModelConfig,
  spec: DecoderSpec,
  group: Group,
  made: Tensor[],
): Map<string, Tensor> {
  const replaced = new Map<string, Tensor>();
  const n = group.size;
  const r = group.rank;
  const qkv = spec.qkv as { q: string; k: string; v: string };
  const split = (key: string, axis: 0 | 1) => {
    const t = weights.get(key);
    if (!t) return;
    const size = t.shape[axis]!;
    if (size % n !== 0)
      throw new Error(
        `${dir}: '${key}' has ${size} ${axis === 0 ? "rows" : "columns"}, not a multiple of the ${n} ranks (whole quantization groups per rank)`,
      );
    const start = t.shape.map(() => 0);
    const stop = [...t.shape];
    start[axis] = (r * size) / n;
    stop[axis] = ((r + 1) * size) / n;
    // A copy of its own: MLX's CUDA matmuls take row-contiguous weights only (a column slice is not).
    using view = slice(t, start, stop);
    const part = contiguous(view);
    part.eval();
    made.push(part);
    replaced.set(key, t);
    weights.set(key, part);
  };
  for (let l = 0; l < config.layers; l++) {
    const p = spec.layer(l);
    const byOutput = [qkv.q, qkv.k, qkv.v, spec.mlp.up, ...(spec.mlp.kind === "gated" ? [spec.mlp.gate] : [])];
    for (const m of byOutput) for (const part of ["weight", "scales", "biases", "bias"]) split(`${p}.${m}.${part}`, 0);
    for (const m of [spec.output, spec.mlp.down]) {
      if (weights.has(`${p}.${m}.bias`))
        throw new Error(
          `${dir}: '${p}.${m}.bias' cannot be sharded by input features (it would be added once per rank)`,
        );
      for (const part of ["weight", "scales", "biases"]) split(`${p}.${m}.${part}`, 1);
    }
  }
  return replaced;
}
