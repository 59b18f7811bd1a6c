// Where the host's time goes in a greedy decode (run with `bun --cpu-prof`): a bench model, a prompt
// of PROMPT tokens and NEW greedy tokens, three runs (the last measured); prints tok/s of each.
//   bash scripts/gpu/device.sh bun --cpu-prof --cpu-prof-dir=$OUT scripts/gpu/host-profile.ts MODEL [PROMPT] [NEW]
import { benchModel } from "../../bench/decode.ts";
import { generate } from "../../src/engine/generate.ts";
import { loadModel } from "../../src/models/index.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";

const [name = "qwen3-0.6b:bf16", promptArg = "512", newArg = "128"] = process.argv.slice(2);
const dir = benchModel(name);
const model = loadModel(dir, { backend: "mlx" });
const tokenizer = Tokenizer.fromDir(dir);
const prompt = Array.from({ length: Number(promptArg) }, (_, i) => (i * 37) % 1000);
for (let run = 0; run < 3; run++) {
  let first = 0;
  let n = 0;
  for await (const _ of generate(model, tokenizer, prompt, { maxTokens: Number(newArg), ignoreEos: true }))
    if (n++ === 0) first = performance.now();
  console.log(`run ${run}: decode ${((n - 1) / ((performance.now() - first) / 1000)).toFixed(1)} tok/s`);
}
model.dispose();
