// node-llama-cpp (llama.cpp's prebuilt CPU binary, or its CUDA one with every layer on the GPU when
// GPU is "cuda") on a GGUF file with THREADS threads: a warm-up generation, then the prompt ids and
// COUNT greedy tokens. Under Node or Bun. Usage:
// node llama-cpp-rate.mjs FILE '[ids]' COUNT THREADS [GPU]
// Prints one JSON line: { prefill (prompt tokens / time to the first token), decode (tokens/s after
// the first), rss (peak resident bytes of this process) }.
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [file, ids, count, threads, gpu] = process.argv.slice(2);
const cuda = gpu === "cuda";
const llama = await getLlama({ gpu: cuda ? "cuda" : false, logLevel: LlamaLogLevel.error, build: "never" });
const model = await llama.loadModel({ modelPath: file, gpuLayers: cuda ? "max" : 0 });
const prompt = JSON.parse(ids);
const context = await model.createContext({
  contextSize: Math.max(1024, prompt.length + Number(count) + 16),
  batchSize: 512,
  threads: Number(threads),
});
const sequence = context.getSequence();

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

// The warm-up takes the whole prompt: the CUDA build compiles its kernels (PTX) on first use.
await generate(prompt, 4);
await sequence.clearHistory();
const rates = await generate(prompt, Number(count));
console.log(JSON.stringify({ ...rates, rss: process.resourceUsage().maxRSS * 1024 }));
process.exit(0);
