// Each architecture's graph against mlx-lm on tiny random checkpoints (scripts/fixtures/models.py):
// prefill logits at every position and 16 greedy decode steps through the KV cache.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { createCache, forward, loadModel } from "../src/models/index.ts";
import { ops, Tensor } from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

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
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name));
    const prompt = decode(c.prompt);

    test(`prefill logits at every position within ${TOLERANCE}`, () => {
      using logits = forward(model, prompt, null, "all");
      const expected = decode(c.prefill);
      expect(logits.shape).toEqual(expected.shape);
      expect(maxAbsDiff(logits.toFloat32Array(), expected.toFloat32Array())).toBeLessThanOrEqual(TOLERANCE);
    });

    test(`${c.tokens.length} greedy decode steps: same tokens, logits within ${TOLERANCE}`, () => {
      const cache = createCache(model, 1, prompt.shape[1]! + c.tokens.length);
      let logits = forward(model, prompt, cache);
      const tokens: number[] = [];
      for (const [i, step] of c.steps.entries()) {
        using next = ops.argmax(logits, -1);
        const token = next.toInt32Array()[0]!;
        tokens.push(token);
        logits.dispose();
        using ids = Tensor.from(new Int32Array([token]), [1, 1]);
        logits = forward(model, ids, cache);
        const err = maxAbsDiff(logits.toFloat32Array(), decode(step).toFloat32Array());
        if (err > TOLERANCE) throw new Error(`step ${i}: max abs err ${err}`);
      }
      logits.dispose();
      cache.dispose();
      expect(tokens).toEqual(c.tokens);
    });
  });
}
