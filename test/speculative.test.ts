// Speculative decoding: with any draft sharing the tokenizer the output is the target's greedy
// decoding; a draft equal to the target has every proposal accepted. Target: the default model;
// draft: its first 2 of 8 layers (made here from its weights).
import { afterAll, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_MODEL_DIR,
  generateText,
  loadModel,
  loadSafetensors,
  saveSafetensors,
  type SpeculativeStats,
  speculativeGenerate,
  Tokenizer,
} from "../src/index.ts";

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
const draftDir = mkdtempSync(join(tmpdir(), "mlxb-draft-"));
afterAll(() => rmSync(draftDir, { recursive: true, force: true }));

/** The default model cut to its first `layers` layers (same embeddings, norm and head). */
function truncated(layers: number): string {
  const config = JSON.parse(readFileSync(join(DEFAULT_MODEL_DIR, "config.json"), "utf8"));
  writeFileSync(join(draftDir, "config.json"), JSON.stringify({ ...config, num_hidden_layers: layers }));
  for (const f of ["tokenizer.json", "tokenizer_config.json"])
    copyFileSync(join(DEFAULT_MODEL_DIR, f), join(draftDir, f));
  const { tensors } = loadSafetensors(join(DEFAULT_MODEL_DIR, "model.safetensors"));
  const kept = new Map(
    [...tensors].filter(([name]) => !/layers\.(\d+)\./.test(name) || Number(/layers\.(\d+)\./.exec(name)![1]) < layers),
  );
  saveSafetensors(join(draftDir, "model.safetensors"), kept);
  for (const t of tensors.values()) t.dispose();
  return draftDir;
}

async function run(
  target: ReturnType<typeof loadModel>,
  draft: ReturnType<typeof loadModel>,
  prompt: string,
  options: Parameters<typeof speculativeGenerate>[4],
) {
  const stats: Partial<SpeculativeStats> = {};
  const tokens: number[] = [];
  let text = "";
  for await (const chunk of speculativeGenerate(target, draft, tokenizer, prompt, options, stats)) {
    if (!chunk.stop) tokens.push(chunk.token);
    text += chunk.text;
  }
  return { tokens, text, stats };
}

for (const backend of ["mlx", "cpu"] as const) {
  test(`speculative decoding gives the target's greedy tokens (${backend})`, async () => {
    const target = loadModel(DEFAULT_MODEL_DIR, { backend });
    const small = loadModel(truncated(2), { backend });
    // The CPU reference backend is slow (and CI machines shared): one prompt, fewer tokens there.
    const maxTokens = backend === "cpu" ? 6 : 24;
    for (const prompt of backend === "cpu"
      ? ["The ship sailed"]
      : ["The ship sailed", "Water is", "A dictionary is used to"]) {
      const greedy = await generateText(target, tokenizer, prompt, { maxTokens, ignoreEos: true });
      const spec = await run(target, small, prompt, { maxTokens, ignoreEos: true, numDraftTokens: 3 });
      expect(spec.tokens).toEqual(greedy.tokens);
      expect(spec.text).toBe(greedy.text);
      expect(spec.stats.acceptedTokens!).toBeLessThanOrEqual(spec.stats.draftTokens!);
      expect(spec.stats.rounds!).toBeLessThan(maxTokens);
    }
    // The target as its own draft: every proposal accepted, k + 1 tokens per round.
    const self = await run(target, target, "The ship sailed", { maxTokens: 9, ignoreEos: true, numDraftTokens: 2 });
    expect(self.stats.acceptedTokens).toBe(self.stats.draftTokens!);
    expect(self.stats.rounds).toBe(3);
    // Stops: the eos ends it as greedy generation does (on MLX: 80 more tokens of the CPU reference take minutes).
    if (backend === "mlx") {
      const stopped = await run(target, small, "The ship sailed", { maxTokens: 40 });
      expect(stopped.tokens).toEqual(
        (await generateText(target, tokenizer, "The ship sailed", { maxTokens: 40 })).tokens,
      );
      expect(stopped.stats.finishReason).toBe("stop");
    }
    small.dispose();
    target.dispose();
  }, 240_000);
}

test("speculative decoding: bad options are Errors", async () => {
  const target = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const other = loadModel(join(import.meta.dir, "fixtures", "data", "models", "llama"), { backend: "mlx" });
  await expect(run(target, target, "x", { temperature: 0.7 })).rejects.toThrow(
    "speculativeGenerate: greedy decoding only",
  );
  await expect(run(target, target, "x", { numDraftTokens: 0 })).rejects.toThrow(
    "numDraftTokens must be an integer in [1, 64]",
  );
  await expect(run(target, other, "x", {})).rejects.toThrow("the draft's vocabulary");
  await expect(run(target, target, "x", { repetitionPenalty: 1.2 })).rejects.toThrow("logits processors");
  other.dispose();
  target.dispose();
});
