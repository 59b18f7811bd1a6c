// mlx-bun (MLX) on a model directory or GGUF file, in a process of its own: a warm-up generation on
// a prompt of the same length (the prompt reversed: no prefix to reuse), as llama-cpp-rate.mjs warms
// up on the whole prompt, then the prompt ids and COUNT greedy tokens. Usage: bun mlxb-rate.ts PATH '[ids]' COUNT
// [ACTIVATIONS] (loadModel's cpuActivations: float, the default, or int8)
// Prints one JSON line: { prefill (prompt tokens / time to the first token), decode (tokens/s after
// the first), rss (peak resident bytes of this process) }.
import { generate } from "../../src/engine/generate.ts";
import { loadModel } from "../../src/models/index.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";

const [path, ids, count, activations] = Bun.argv.slice(2) as [string, string, string, "float" | "int8" | undefined];
const model = loadModel(path, { backend: "mlx", cpuActivations: activations });
const tokenizer = Tokenizer.fromDir(path);
const prompt = JSON.parse(ids) as number[];

async function rates(tokens: number[], n: number): Promise<{ prefill: number; decode: number }> {
  let first = 0;
  let made = 0;
  const start = performance.now();
  for await (const _ of generate(model, tokenizer, tokens, { maxTokens: n, ignoreEos: true }))
    if (made++ === 0) first = performance.now();
  return {
    prefill: tokens.length / ((first - start) / 1000),
    decode: (made - 1) / ((performance.now() - first) / 1000),
  };
}

await rates([...prompt].reverse(), 4);
const measured = await rates(prompt, Number(count));
console.log(JSON.stringify({ ...measured, rss: process.resourceUsage().maxRSS * 1024 }));
