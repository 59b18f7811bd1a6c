// node-llama-cpp (llama.cpp's prebuilt CPU binary) on a GGUF file with THREADS threads: one short
// warm-up generation, then the prompt ids and COUNT greedy tokens. Usage:
// node llama-cpp-rate.mjs FILE '[ids]' COUNT THREADS
// Prints one JSON line: { prefill (prompt tokens / time to the first token), decode (tokens/s after
// the first), rss (peak resident bytes of this process) }.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [file, ids, count, threads] = process.argv.slice(2);
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
const model = await llama.loadModel({ modelPath: file });
const context = await model.createContext({ contextSize: 1024, batchSize: 512, threads: Number(threads) });
const sequence = context.getSequence();
const prompt = JSON.parse(ids);

async function generate(tokens, n) {
  let first = 0;
  let made = 0;
  const start = performance.now();
  for await (const _ of sequence.evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
    if (made++ === 0) first = performance.now();
    if (made >= n) break;
  }
  return { prefill: tokens.length / ((first - start) / 1000), decode: (made - 1) / ((performance.now() - first) / 1000) };
}

await generate(prompt.slice(0, 8), 4);
await sequence.clearHistory();
const rates = await generate(prompt, Number(count));
console.log(JSON.stringify({ ...rates, rss: process.resourceUsage().maxRSS * 1024 }));
process.exit(0);
