// The model shipped in default-model/ against mlx-lm on the same checkpoint (scripts/fixtures/
// default_model.py): the prompt's logits and 48 greedy tokens.
import { expect, test } from "bun:test";
import { DEFAULT_MODEL_DIR, forward, generateText, loadModel, Tensor, Tokenizer } from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const f = fixture<{ prompt: string; ids: number[]; logits: EncodedArray; greedy: number[] }>("default_model.json");

test("default model: tokenizer, prompt logits (1e-4) and 48 greedy tokens equal mlx-lm's", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
  expect(tokenizer.encode(f.prompt)).toEqual(f.ids);
  using ids = Tensor.from(Int32Array.from(f.ids), [1, f.ids.length]);
  using logits = forward(model, ids, { logits: "all" });
  expect(maxAbsDiff(logits.toFloat32Array(), decode(f.logits).toFloat32Array())).toBeLessThanOrEqual(1e-4);
  const { tokens } = await generateText(model, tokenizer, f.ids, { maxTokens: 48, temperature: 0, ignoreEos: true });
  expect(tokens).toEqual(f.greedy.slice(0, tokens.length));
  expect(tokens.length).toBe(f.greedy.length);
  model.dispose();
});
