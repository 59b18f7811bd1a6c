// Batch generation: prompts of different lengths at once give each the tokens it gets alone
// (greedy and seeded sampling), with per-row stops; on MLX and on the CPU reference.
import { describe, expect, test } from "bun:test";
import {
  DEFAULT_MODEL_DIR,
  generateBatch,
  generateBatchText,
  generateText,
  loadModel,
  Tokenizer,
} from "../src/index.ts";

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
const PROMPTS = ["The ship sailed", "Water is", "In the morning, the old man went to the market and"];

for (const backend of ["mlx", "cpu"] as const) {
  describe(`generateBatch (${backend})`, () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    const maxTokens = backend === "cpu" ? 6 : 16;
    const budget = backend === "cpu" ? 240_000 : 60_000; // the CPU reference backend is slow

    test(
      "greedy: each row's tokens equal its generation alone",
      async () => {
        const batch = await generateBatchText(model, tokenizer, PROMPTS, { maxTokens, ignoreEos: true });
        for (const [i, prompt] of PROMPTS.entries()) {
          const alone = await generateText(model, tokenizer, prompt, { maxTokens, ignoreEos: true });
          expect(batch.tokens[i]).toEqual(alone.tokens);
          expect(batch.texts[i]).toBe(alone.text);
        }
        expect(batch.stats.finishReasons).toEqual(["length", "length", "length"]);
        expect(batch.stats.promptTokens).toEqual(PROMPTS.map((p) => tokenizer.encode(p).length));
      },
      budget,
    );

    test(
      "seeded sampling: each row draws as it would alone",
      async () => {
        const options = { maxTokens, temperature: 0.8, topP: 0.95, seed: 3, ignoreEos: true };
        const batch = await generateBatchText(model, tokenizer, PROMPTS, options);
        for (const [i, prompt] of PROMPTS.entries())
          expect(batch.tokens[i]).toEqual((await generateText(model, tokenizer, prompt, options)).tokens);
      },
      budget,
    );

    test(
      "per-row stops: a row that meets its stop token ends, the others go on",
      async () => {
        const alone = await generateText(model, tokenizer, PROMPTS[0]!, { maxTokens, ignoreEos: true });
        const stopAt = alone.tokens[2]!;
        const finished: Record<number, string> = {};
        const counts = [0, 0, 0];
        for await (const chunk of generateBatch(model, tokenizer, PROMPTS, {
          maxTokens,
          ignoreEos: true,
          stopTokens: [stopAt],
        })) {
          if (!chunk.stop) counts[chunk.index]!++;
          if (chunk.finishReason) finished[chunk.index] = chunk.finishReason;
        }
        expect(finished[0]).toBe("stop");
        expect(counts[0]).toBe(alone.tokens.indexOf(stopAt));
        expect(Object.keys(finished).length).toBe(3);
      },
      budget,
    );
  });
}

test("generateBatch: bad input is an Error naming it", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const drain = async (it: AsyncGenerator<unknown>) => {
    for await (const _ of it);
  };
  await expect(drain(generateBatch(model, tokenizer, []))).rejects.toThrow(
    "generateBatch: prompts must be a non-empty list",
  );
  await expect(drain(generateBatch(model, tokenizer, ["ok", [1, 99999]]))).rejects.toThrow(
    "generateBatch: prompts[1]: generate: prompt token[1] is 99999",
  );
  await expect(drain(generateBatch(model, tokenizer, ["ok", ""]))).rejects.toThrow(
    "generateBatch: prompts[1]: generate: the prompt encodes to no tokens",
  );
  await expect(drain(generateBatch(model, tokenizer, ["ok"], { maxTokens: 0 }))).rejects.toThrow(
    "generate: maxTokens must be a positive integer",
  );
  model.dispose();
});
