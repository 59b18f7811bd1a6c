// Each architecture's graph against mlx-lm on tiny random checkpoints (scripts/fixtures/models.py):
// prefill logits at every position and 16 greedy decode steps through the KV cache.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { generateText } from "../src/engine/generate.ts";
import { createCache, forward, loadModel, rewrittenGraph } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { ops, Tensor } from "../src/index.ts";
import { decode, decodeIds, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

interface Case {
  quantized: boolean;
  prompt: EncodedArray;
  prefill: EncodedArray;
  tokens: number[];
  steps: EncodedArray[];
}

const cases = fixture<Record<string, Case>>("models.json");
const TOLERANCE = 1e-4;

for (const [name, c] of Object.entries(cases)) {
  describe(`${name}${c.quantized ? " (4-bit)" : ""} vs mlx-lm`, () => {
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name), { backend: "mlx" });
    const prompt = decode(c.prompt);

    test(`prefill logits at every position within ${TOLERANCE}`, () => {
      using logits = forward(model, prompt, { logits: "all" });
      const expected = decode(c.prefill);
      expect(logits.shape).toEqual(expected.shape);
      expect(maxAbsDiff(logits.toFloat32Array(), expected.toFloat32Array())).toBeLessThanOrEqual(TOLERANCE);
    });

    test(`${c.tokens.length} greedy decode steps: same tokens, logits within ${TOLERANCE}`, () => {
      const cache = createCache(model, 1, prompt.shape[1]! + c.tokens.length);
      let logits = forward(model, prompt, { cache });
      const tokens: number[] = [];
      for (const [i, step] of c.steps.entries()) {
        using next = ops.argmax(logits, -1);
        const token = next.toInt32Array()[0]!;
        tokens.push(token);
        logits.dispose();
        using ids = Tensor.from(new Int32Array([token]), [1, 1]);
        logits = forward(model, ids, { cache });
        const err = maxAbsDiff(logits.toFloat32Array(), decode(step).toFloat32Array());
        if (err > TOLERANCE) throw new Error(`step ${i}: max abs err ${err}`);
      }
      logits.dispose();
      cache.dispose();
      expect(tokens).toEqual(c.tokens);
    });
  });
}

describe("padded batches", () => {
  // qwen3 checks the key mask; gpt2's learned positions also check that positions skip the padding.
  test.each(["qwen3", "gpt2"])(
    "%s: left-padded prompts in one batch give each prompt's own logits (prefill and decode)",
    (name) => {
      const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name), { backend: "mlx" });
      const prompt = decodeIds(cases[name]!.prompt);
      const prompts = [prompt, prompt.slice(3)];
      const steps = 4;
      const alone = prompts.map((p) => {
        const cache = createCache(model, 1, p.length + steps);
        const out: Float32Array[] = [];
        let ids = Tensor.from(Int32Array.from(p), [1, p.length]);
        for (let s = 0; s <= steps; s++) {
          using logits = forward(model, ids, { cache });
          ids.dispose();
          out.push(logits.toFloat32Array());
          ids = Tensor.from(new Int32Array([s + 1]), [1, 1]);
        }
        ids.dispose();
        cache.dispose();
        return out;
      });
      const width = prompt.length;
      const padding = prompts.map((p) => width - p.length);
      const cache = createCache(model, 2, width + steps);
      cache.setLeftPadding(padding);
      const host = new Int32Array(2 * width);
      for (const [b, p] of prompts.entries()) host.set(p, b * width + padding[b]!);
      let ids = Tensor.from(host, [2, width]);
      const vocab = model.config.vocabSize;
      for (let s = 0; s <= steps; s++) {
        using logits = forward(model, ids, { cache });
        ids.dispose();
        const both = logits.toFloat32Array();
        for (let b = 0; b < 2; b++) {
          const err = maxAbsDiff(both.subarray(b * vocab, (b + 1) * vocab), alone[b]![s]!);
          if (err > TOLERANCE) throw new Error(`example ${b} step ${s}: max abs err ${err}`);
        }
        ids = Tensor.from(new Int32Array([s + 1, s + 1]), [2, 1]);
      }
      ids.dispose();
      cache.dispose();
      model.dispose();
    },
  );
});

describe("bfloat16 4-bit qwen3 (the dtype of released MLX checkpoints) vs mlx-lm", () => {
  const c =
    fixture<Record<string, { prompt: EncodedArray; tokens: number[]; steps: EncodedArray[]; cache_dtype: string }>>(
      "models-bf16.json",
    )["qwen3-bf16"]!;
  const dir = join(import.meta.dir, "fixtures", "data", "models", "qwen3-bf16");

  test("activations and the KV cache stay bfloat16; mlx-lm's greedy tokens; logits within 4 bf16 ulps at magnitude 4", async () => {
    const model = loadModel(dir, { backend: "mlx" });
    expect(model.dtype).toBe("bfloat16");
    expect(c.cache_dtype).toBe("mlx.core.bfloat16");
    const graph = rewrittenGraph(model, "last");
    const cache = createCache(model, 1, 7 + c.tokens.length);
    let logits = forward(model, decode(c.prompt), { cache, graph });
    expect(cache.tensors().every((t) => t.dtype === "bfloat16")).toBe(true);
    const tokens: number[] = [];
    for (const [i, step] of c.steps.entries()) {
      expect(logits.dtype).toBe("bfloat16");
      // bf16 rounding differs between MLX's CPU and GPU kernels (the fixture is mlx-lm on the CPU):
      // 0.0625 at most here, 0.072 by step 13 on an H100, so 4 ulps (0.125) at magnitude 4.
      const err = maxAbsDiff(logits.toFloat32Array(), decode(step).toFloat32Array());
      if (err > 0.125) throw new Error(`step ${i}: max abs err ${err}`);
      if (i === c.tokens.length) break;
      using next = ops.argmax(logits, -1);
      tokens.push(next.toInt32Array()[0]!);
      logits.dispose();
      using ids = Tensor.from(new Int32Array([tokens[i]!]), [1, 1]);
      logits = forward(model, ids, { cache, graph });
    }
    logits.dispose();
    cache.dispose();
    expect(tokens).toEqual(c.tokens);
    const { tokens: generated } = await generateText(model, Tokenizer.fromDir(dir), decodeIds(c.prompt), {
      maxTokens: c.tokens.length,
    });
    expect(generated).toEqual(c.tokens);
    model.dispose();
  });

  test("the plain graph keeps bfloat16 too (mlx-lm's dtype): logits and cache; logits within 4 bf16 ulps fed mlx-lm's tokens", () => {
    const model = loadModel(dir, { backend: "mlx" });
    const cache = createCache(model, 1, 7 + c.tokens.length);
    let logits = forward(model, decode(c.prompt), { cache });
    const agree: boolean[] = [];
    for (const [i, step] of c.steps.entries()) {
      expect(logits.dtype).toBe("bfloat16");
      const err = maxAbsDiff(logits.toFloat32Array(), decode(step).toFloat32Array());
      if (err > 0.125) throw new Error(`step ${i}: max abs err ${err}`);
      if (i === c.tokens.length) break;
      using next = ops.argmax(logits, -1);
      agree.push(next.toInt32Array()[0] === c.tokens[i]);
      logits.dispose();
      // Teacher-forced: mlx-lm's token, so one near-tie in bf16 cannot send the comparison off course.
      using ids = Tensor.from(new Int32Array([c.tokens[i]!]), [1, 1]);
      logits = forward(model, ids, { cache });
    }
    logits.dispose();
    expect(cache.tensors().every((t) => t.dtype === "bfloat16")).toBe(true);
    cache.dispose();
    console.log(
      `  bf16 plain graph: greedy choice equals mlx-lm's at ${agree.filter(Boolean).length}/${agree.length} steps`,
    );
    model.dispose();
  });
});
