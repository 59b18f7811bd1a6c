// Whole models on the CPU reference kernels against the same graphs on MLX: prefill logits at every
// position, then greedy decoding through a host-side KV cache, plain and rewritten graphs.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { CpuTensor } from "../src/backend/cpu.ts";
import { cpuKernels } from "../src/backend/cpu-kernels.ts";
import type { Graph } from "../src/graph/graph.ts";
import { runGraph, type Value } from "../src/graph/run.ts";
import { Tensor } from "../src/index.ts";
import { cacheHeadsFor, createCache, forward, loadModel, type Model, rewrittenGraph } from "../src/models/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const STEPS = 8;
const TOLERANCE = 1e-4;
const cases = fixture<Record<string, { prompt: EncodedArray }>>("models.json");

function cpuGreedy(model: Model, graph: Graph, prompt: number[]): { logits: Float32Array[]; tokens: number[] } {
  const { layers, headDim } = model.config;
  const maxLength = prompt.length + STEPS + 1;
  const heads = cacheHeadsFor(model, graph);
  const zeros = () => new CpuTensor(new Float32Array(heads * maxLength * headDim), [1, heads, maxLength, headDim]);
  let cache: Value = Array.from({ length: layers }, () => [zeros(), zeros()]);
  let offset = 0;
  let ids = prompt;
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  for (let s = 0; s <= STEPS; s++) {
    const positions = Tensor.from(Int32Array.from(ids, (_, i) => offset + i), [1, ids.length]);
    const out = runGraph(graph, {
      weights: model.weights,
      quantization: model.checkpoint.quantization,
      feeds: { ids: Tensor.from(Int32Array.from(ids), [1, ids.length]), positions, cache, offset, keyMask: null },
    }, cpuKernels);
    cache = out.cache!;
    offset += ids.length;
    const row = (out.logits as CpuTensor).data;
    logits.push(row);
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    tokens.push(best);
    ids = [best];
  }
  return { logits, tokens };
}

function mlxGreedy(model: Model, graph: Graph | undefined, prompt: number[]) {
  const cache = createCache(model, 1, prompt.length + STEPS + 1, graph);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let ids = prompt;
  for (let s = 0; s <= STEPS; s++) {
    using input = Tensor.from(Int32Array.from(ids), [1, ids.length]);
    using out = forward(model, input, cache, "last", graph);
    const row = out.toFloat32Array();
    logits.push(row);
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    tokens.push(best);
    ids = [best];
  }
  cache.dispose();
  return { logits, tokens };
}

for (const name of Object.keys(cases)) {
  describe(`CPU backend: ${name}`, () => {
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name));
    const prompt = Array.from(decode(cases[name]!.prompt).toInt32Array());
    for (const [label, graph] of [["plain", model.graph("last")], ["rewritten", rewrittenGraph(model, "last")]] as const) {
      test(`${label}: ${STEPS} greedy steps match MLX`, () => {
        const mine = cpuGreedy(model, graph, prompt);
        const reference = mlxGreedy(model, graph, prompt);
        for (let s = 0; s <= STEPS; s++) {
          const err = maxAbsDiff(mine.logits[s]!, reference.logits[s]!);
          if (err > TOLERANCE) throw new Error(`step ${s}: max abs err ${err}`);
        }
        expect(mine.tokens).toEqual(reference.tokens);
      });
    }
  });
}
