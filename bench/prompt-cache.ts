// Time to first token of a conversation's second turn, with the first turn's prompt cache reused
// and without (a full prefill), on the default model: a 512-token first turn, a 16-token reply, then
// 16 new tokens.
import { generate } from "../src/engine/generate.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { PromptCache } from "../src/engine/prompt-cache.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { summarize, table } from "./stats.ts";

async function firstToken(run: () => AsyncGenerator<unknown>): Promise<number> {
  const start = performance.now();
  for await (const _ of run()) return performance.now() - start;
  throw new Error("no token");
}

export async function run(): Promise<Record<string, unknown>> {
  const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const backend of ["mlx"] as const) {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    const first = Array.from({ length: 512 }, (_, i) => 1 + ((i * 37) % 8000));
    const reused: number[] = [];
    const fresh: number[] = [];
    for (let r = 0; r <= 5; r++) {
      using cache = new PromptCache(model, 1024);
      const reply: number[] = [];
      for await (const c of generate(model, tokenizer, first, { maxTokens: 16, ignoreEos: true, promptCache: cache }))
        reply.push(c.token);
      const second = [...first, ...reply, ...Array.from({ length: 16 }, (_, i) => 100 + i)];
      const withCache = await firstToken(() =>
        generate(model, tokenizer, second, { maxTokens: 1, promptCache: cache }),
      );
      const without = await firstToken(() => generate(model, tokenizer, second, { maxTokens: 1 }));
      if (r > 0) {
        reused.push(withCache);
        fresh.push(without);
      }
    }
    const a = summarize(reused);
    const b = summarize(fresh);
    rows.push([backend, b.median, a.median, b.median / a.median]);
    results[backend] = { fresh: b, reused: a };
    model.dispose();
  }
  table(
    "Second turn time to first token (ms): 512-token first turn + 16-token reply + 16 new tokens",
    ["backend", "full prefill", "prompt cache", "speedup"],
    rows,
  );
  return results;
}
