// Whole models on the CPU reference kernels against the same graphs on MLX: the model loaded for each
// backend, greedy decoding through each backend's KV cache, plain and rewritten graphs.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Graph } from "../src/graph/graph.ts";
import { createCache, forward, loadModel, type Model, rewrittenGraph, tokenIds } from "../src/models/index.ts";
import { decodeIds, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const STEPS = 8;
const TOLERANCE = 1e-4;
const cases = fixture<Record<string, { prompt: EncodedArray }>>("models.json");

function greedy(model: Model, graph: Graph, prompt: number[]): { logits: Float32Array[]; tokens: number[] } {
  const cache = createCache(model, 1, prompt.length + STEPS + 1);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let ids = prompt;
  for (let s = 0; s <= STEPS; s++) {
    using input = tokenIds(model, ids, [1, ids.length]);
    using out = forward(model, input, { cache, graph });
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
    const dir = join(import.meta.dir, "fixtures", "data", "models", name);
    const onCpu = loadModel(dir, { backend: "cpu" });
    const onMlx = loadModel(dir, { backend: "mlx" });
    const prompt = decodeIds(cases[name]!.prompt);
    for (const label of ["plain", "rewritten"] as const) {
      test(`${label}: ${STEPS} greedy steps match MLX`, () => {
        const graphOf = (m: Model) => (label === "plain" ? m.graph("last") : rewrittenGraph(m, "last"));
        const mine = greedy(onCpu, graphOf(onCpu), prompt);
        const reference = greedy(onMlx, graphOf(onMlx), prompt);
        for (let s = 0; s <= STEPS; s++) {
          const err = maxAbsDiff(mine.logits[s]!, reference.logits[s]!);
          if (err > TOLERANCE) throw new Error(`step ${s}: max abs err ${err}`);
        }
        expect(mine.tokens).toEqual(reference.tokens);
      });
    }
  });
}
