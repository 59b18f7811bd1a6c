import { generate, type GenerationStats } from "../src/engine/generate.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { summarize, table } from "./stats.ts";

export async function run(): Promise<Record<string, unknown>> {
  const dir = DEFAULT_MODEL_DIR;
  const tokenizer = Tokenizer.fromDir(dir);
  const prompt = Array.from({ length: 16 }, (_, i) => (i * 37) % 1000);
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const backend of ["mlx", "cpu"]) {
    const model = loadModel(dir, { backend });
    const prefill: number[] = [];
    const decode: number[] = [];
    for (let r = 0; r <= 3; r++) {
      const stats: Partial<GenerationStats> = {};
      for await (const _ of generate(model, tokenizer, prompt, { maxTokens: 16, ignoreEos: true }, stats)) {
      }
      if (r === 0) continue;
      prefill.push(stats.promptTokens! / stats.prefillSeconds!);
      decode.push((stats.generatedTokens! - 1) / stats.decodeSeconds!);
    }
    const p = summarize(prefill);
    const d = summarize(decode);
    rows.push([backend, p.median, d.median, p.spread, d.spread]);
    results[backend] = { prefill: p, decode: d };
    model.dispose();
  }
  table(
    "Backends on the default model (tokens/s; 16-token prompt, 16 tokens, rewritten graph)",
    ["backend", "prefill", "decode", "spread p", "spread d"],
    rows,
  );
  return results;
}
