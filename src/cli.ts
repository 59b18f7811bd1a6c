// The demo: load a model (default: the one scripts/setup.sh makes) and stream generated text.
//   bun run src/cli.ts [--model DIR] [--prompt TEXT] [--chat] [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
// --chat wraps the prompt as a user message with the tokenizer's chat template; --no-rewrite runs the
// plain graph instead of the one rewritten with fused MLX ops; --backend mlx|cpu|auto (default auto).
import { join } from "node:path";
import { parseArgs } from "node:util";
import { generate, type GenerationStats } from "./generate.ts";
import { deviceInfo } from "./native/device.ts";
import { loadModel } from "./models/index.ts";
import { Tokenizer } from "./tokenizer.ts";

const DEFAULT_MODEL = join(import.meta.dir, "..", ".cache", "models", "default");

const { values } = parseArgs({
  options: {
    model: { type: "string", default: DEFAULT_MODEL },
    prompt: { type: "string", default: "This module provides" },
    "max-tokens": { type: "string", default: "48" },
    temperature: { type: "string", default: "0.7" },
    "top-p": { type: "string", default: "0.9" },
    seed: { type: "string", default: "1" },
    chat: { type: "boolean", default: false },
    "no-rewrite": { type: "boolean", default: false },
    backend: { type: "string", default: "auto" },
  },
});

function progress(loaded: number, total: number): void {
  const width = 24;
  const filled = Math.round((loaded / total) * width);
  process.stderr.write(`\rloading ${values.model} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${loaded}/${total} files`);
  if (loaded === total) process.stderr.write("\n");
}

const model = loadModel(values.model!, { backend: values.backend, onProgress: progress });
const tokenizer = Tokenizer.fromDir(values.model!);
const quant = model.checkpoint.quantization?.global;
const info = model.backend === "mlx" ? deviceInfo() : undefined;
console.error(
  `${model.config.modelType}, ${model.config.layers} layers, hidden ${model.config.hiddenSize}` +
    `${quant ? `, ${quant.bits}-bit ${quant.mode}` : ""}; ` +
    (info ? `MLX ${info.mlxVersion} on ${info.device} (${info.name})` : "CPU reference backend"),
);
const prompt = values.chat ? tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: values.prompt! }]), false) : values.prompt!;
process.stdout.write(values.chat ? "" : values.prompt!);
const stats: Partial<GenerationStats> = {};
for await (const chunk of generate(model, tokenizer, prompt, {
  maxTokens: Number(values["max-tokens"]),
  temperature: Number(values.temperature),
  topP: Number(values["top-p"]),
  seed: Number(values.seed),
  rewrite: !values["no-rewrite"],
}, stats)) {
  process.stdout.write(chunk.text);
}
process.stdout.write("\n");
const { promptTokens = 0, generatedTokens = 0, prefillSeconds = 0, decodeSeconds = 0, finishReason } = stats;
console.error(
  `prompt ${promptTokens} tokens at ${(promptTokens / prefillSeconds).toFixed(1)} tokens/s; ` +
    `generated ${generatedTokens} tokens at ${((generatedTokens - 1) / decodeSeconds).toFixed(1)} tokens/s (${finishReason})`,
);
model.dispose();
