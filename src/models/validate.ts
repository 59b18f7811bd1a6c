// Load-time checks that a checkpoint's weights fit its config and the graph built from it: every
// weight the graph reads exists, every checkpoint tensor is read, and the shapes fit (one token built
// on MLX, or run on the CPU reference).
import type { TensorData } from "../dtype.ts";
import type { Graph } from "../graph/graph.ts";
import { CPU_KERNELS, MLX_KERNELS } from "../graph/ops.ts";
import { runGraph } from "../graph/run.ts";
import type { Checkpoint } from "../io/checkpoint.ts";
import { CpuTensor } from "../ops/cpu.ts";
import type { Group } from "../ops/distributed.ts";
import { Tensor, tidy } from "../tensor.ts";
import type { ModelConfig } from "./config.ts";

/** Checkpoint tensors no graph reads that are known to be harmless (HF buffers, BERT's pooler and
 * its pre-training heads). */
const IGNORABLE = [/\.rotary_emb\.inv_freq$/, /\.attn\.(masked_)?bias$/, /(^|\.)position_ids$/, /^pooler\./, /^cls\./];

/** Hugging Face saves BERT under a `bert.` prefix when a head is attached (BertForMaskedLM, ...):
 * the encoder's weights are named without it. */
export function encoderNames<W>(weights: ReadonlyMap<string, W>): Map<string, W> {
  const prefixed = [...weights.keys()].some((k) => k.startsWith("bert."));
  return new Map([...weights].map(([k, w]) => [prefixed && k.startsWith("bert.") ? k.slice("bert.".length) : k, w]));
}

/** Every weight the graph reads exists, and every checkpoint tensor is read by it (or ignorable):
 * a config whose layer count or names do not match its weights is an Error, not a smaller model.
 * Decoders' dense biases are optional (Qwen2 has them on q/k/v only); an encoder (BERT) has one on
 * every dense layer. */
export function checkWeights(
  dir: string,
  graph: Graph,
  weights: ReadonlyMap<string, TensorData>,
  checkpointKeys: Iterable<string>,
  config: ModelConfig,
  biases: "required" | "optional",
): void {
  const used = new Set<string>();
  const missing: string[] = [];
  const need = (key: string, required: boolean) => {
    used.add(key);
    if (required && !weights.has(key)) missing.push(key);
  };
  for (const node of graph.nodes) {
    if (node.op === "param") need(node.attrs.path, true);
    if (node.op === "dense" || node.op === "embedding") {
      need(`${node.attrs.module}.weight`, true);
      need(`${node.attrs.module}.bias`, biases === "required" && node.op === "dense");
      for (const part of ["scales", "biases"]) need(`${node.attrs.module}.${part}`, false);
    }
    if (node.op === "embedding") {
      const rows = weights.get(`${node.attrs.module}.weight`)?.shape[0];
      const source = graph.nodes[node.inputs[0]!];
      const isVocab = source?.op === "input" && source.attrs.feed === "ids";
      if (isVocab && rows !== undefined && rows < config.vocabSize) {
        throw new Error(
          `${dir}: '${node.attrs.module}.weight' has ${rows} rows but config.json's vocab_size is ${config.vocabSize}`,
        );
      }
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `${dir}: ${missing.length} weight(s) the model needs are missing (num_hidden_layers ${config.layers}): ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}`,
    );
  }
  const unused = [...checkpointKeys].filter((k) => !used.has(k) && !IGNORABLE.some((p) => p.test(k)));
  if (unused.length > 0) {
    throw new Error(
      `${dir}: ${unused.length} checkpoint tensor(s) the model never reads (does num_hidden_layers (${config.layers}) match the weights?): ${unused.slice(0, 5).join(", ")}${unused.length > 5 ? ", ..." : ""}`,
    );
  }
}

/** Builds one forward over a single token on MLX without evaluating it: MLX checks every op's shapes
 * as it is made, so a weight whose shape does not fit the config (or the graph) is an Error here,
 * naming its layer, rather than at the first generate. Costs graph construction only. */
export function checkShapes(
  dir: string,
  graph: Graph,
  weights: ReadonlyMap<string, Tensor>,
  quantization: Checkpoint["quantization"],
  group: Group | null = null,
): void {
  const feeds = tidy(() => ({
    ids: Tensor.from(Int32Array.of(0), [1, 1]),
    positions: Tensor.from(Int32Array.of(0), [1, 1]),
    tokenTypes: Tensor.from(Int32Array.of(0), [1, 1]),
  }));
  try {
    // The outputs are not returned: tidy disposes them with everything else the graph made.
    tidy(() => {
      runGraph(graph, MLX_KERNELS, {
        weights,
        quantization,
        feeds: { ...feeds, offset: 0, keyMask: null },
        cache: null,
        group,
      });
    });
  } catch (e) {
    throw new Error(`${dir}: the weights do not fit config.json: ${(e as Error).message}`);
  } finally {
    for (const t of Object.values(feeds)) t.dispose();
  }
}

/** checkShapes for the CPU backend: its kernels compute as they go, so this runs one token (work the
 * first forward would do: packed weights are dequantized once and kept). */
export function checkShapesOnHost(
  dir: string,
  graph: Graph,
  weights: ReadonlyMap<string, TensorData>,
  quantization: Checkpoint["quantization"],
): void {
  const zero = () => new CpuTensor(new Float32Array(1), [1, 1]);
  const feeds = { ids: zero(), positions: zero(), tokenTypes: zero(), offset: 0, keyMask: null };
  try {
    runGraph(graph, CPU_KERNELS, { weights, quantization, feeds, cache: null });
  } catch (e) {
    throw new Error(`${dir}: the weights do not fit config.json: ${(e as Error).message}`);
  }
}
