// `mlx-bun generate` (and the demo, `bun run src/cli/generate.ts`): load a model (default: the one
// scripts/setup.sh makes in a checkout) and stream generated text. Usage errors print one line and
// exit 2; errors while running print one line and exit 1.
import { existsSync, statSync } from "node:fs";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { generate, type GenerationStats } from "../engine/generate.ts";
import { isGguf, isModelPath } from "../io/checkpoint.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../models/index.ts";
import { deviceInfo } from "../native/device.ts";
import { PromptCache } from "../engine/prompt-cache.ts";
import { speculativeGenerate } from "../engine/speculative.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

const USAGE = `usage: mlx-bun generate [options]   (in a checkout: bun run src/cli/generate.ts [options])
  --model PATH         MLX-format checkpoint directory (config.json, model*.safetensors, tokenizer.json)
                       or a GGUF file (.gguf: llama, qwen2, qwen3; F16/BF16/F32, Q8_0, Q4_0, Q4_1)
                       (default: the model scripts/setup.sh makes)
  --prompt TEXT        text to continue (default: "The ship sailed")
  --chat               wrap the prompt as a user message with the tokenizer's chat template
  --max-tokens N       tokens to generate, an integer >= 1 (default 48)
  --temperature T      sampling temperature, >= 0; 0 is greedy (default 0.7)
  --top-p P            nucleus sampling mass, in (0, 1] (default 0.9)
  --seed S             sampling seed, an integer (default 1)
  --top-k K            keep the K most probable tokens, an integer >= 0 (default 0: off)
  --min-p P            drop tokens below P x the top probability, in [0, 1] (default 0: off)
  --repetition-penalty R  mlx-lm's sign-aware penalty on the last 20 tokens, >= 0 (default 0: off)
  --prompt-cache FILE  continue from a prompt cache file (if it exists) and save the cache there after:
                       a later run whose prompt starts with this one's prompt + output prefills only the rest
  --max-kv-size N      bound the KV cache to N positions (rotating; the first 4 kept), an integer > 4
  --kv-bits B          store the KV cache quantized at 4 or 8 bits (MLX)
  --draft-model DIR    speculative decoding with this draft model (same tokenizer; needs --temperature 0)
  --num-draft N        tokens the draft proposes per round, an integer in [1, 64] (default 4)
  --backend KIND       mlx | cpu | auto (default auto)
  --no-rewrite         run the plain graph instead of the one rewritten with fused MLX ops
  --help               this text`;

export class UsageError extends Error {}

export function numberFlag(name: string, text: string, check: (v: number) => boolean, range: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || !check(value))
    throw new UsageError(`--${name} must be ${range}, got '${text}'`);
  return value;
}

/** parseArgs (strict) with its errors as one-line UsageErrors; every CLI parses its flags here. */
export function flags<const O extends ParseArgsOptionsConfig>(argv: string[], options: O, allowPositionals = false) {
  // parseArgs takes "-1" after a flag for another flag ("argument is ambiguous"): a negative number
  // after a flag that takes a value joins it, so that the flag's own check reports its range.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const takesValue = a.startsWith("--") && options[a.slice(2)]?.type === "string";
    if (takesValue && next !== undefined && /^-(\d|\.\d|Infinity|NaN)/.test(next)) args.push(`${a}=${argv[++i]}`);
    else args.push(a);
  }
  try {
    return parseArgs({ args, strict: true, allowPositionals, options });
  } catch (e) {
    throw new UsageError((e as Error).message.split("\n")[0]!);
  }
}

function parse(argv: string[]) {
  const parsed = flags(argv, {
    model: { type: "string", default: DEFAULT_MODEL_DIR },
    prompt: { type: "string", default: "The ship sailed" },
    "max-tokens": { type: "string", default: "48" },
    temperature: { type: "string", default: "0.7" },
    "top-p": { type: "string", default: "0.9" },
    seed: { type: "string", default: "1" },
    "top-k": { type: "string", default: "0" },
    "min-p": { type: "string", default: "0" },
    "repetition-penalty": { type: "string", default: "0" },
    chat: { type: "boolean", default: false },
    "no-rewrite": { type: "boolean", default: false },
    backend: { type: "string", default: "auto" },
    "prompt-cache": { type: "string" },
    "draft-model": { type: "string" },
    "max-kv-size": { type: "string" },
    "kv-bits": { type: "string" },
    "num-draft": { type: "string", default: "4" },
    help: { type: "boolean", default: false },
  });
  const v = parsed.values;
  const model = v.model!;
  if (!v.help && !(existsSync(model) && (statSync(model).isDirectory() || isGguf(model))))
    throw new UsageError(`model directory not found: ${model}`);
  if (!v.help && !isModelPath(model))
    throw new UsageError(`${model} is not a model directory (no config.json) or a .gguf file`);
  if (!["mlx", "cpu", "auto"].includes(v.backend!.trim().toLowerCase()))
    throw new UsageError(`--backend must be mlx, cpu or auto, got '${v.backend}'`);
  if (v["draft-model"] !== undefined) {
    if (!isModelPath(v["draft-model"]))
      throw new UsageError(
        `--draft-model: ${v["draft-model"]} is not a model directory (no config.json) or a .gguf file`,
      );
    if (Number(v.temperature) !== 0) throw new UsageError("--draft-model decodes greedily: pass --temperature 0");
    if (v["prompt-cache"] !== undefined) throw new UsageError("--draft-model and --prompt-cache exclude each other");
  }
  return {
    help: v.help!,
    model,
    prompt: v.prompt!,
    chat: v.chat!,
    rewrite: !v["no-rewrite"],
    backend: v.backend!,
    promptCache: v["prompt-cache"],
    draftModel: v["draft-model"],
    maxKvSize:
      v["max-kv-size"] === undefined
        ? undefined
        : numberFlag("max-kv-size", v["max-kv-size"], (n) => Number.isSafeInteger(n) && n > 4, "an integer > 4"),
    kvBits:
      v["kv-bits"] === undefined ? undefined : numberFlag("kv-bits", v["kv-bits"], (n) => n === 4 || n === 8, "4 or 8"),
    numDraft: numberFlag(
      "num-draft",
      v["num-draft"]!,
      (n) => Number.isSafeInteger(n) && n >= 1 && n <= 64,
      "an integer in [1, 64]",
    ),
    maxTokens: numberFlag("max-tokens", v["max-tokens"]!, (n) => Number.isSafeInteger(n) && n >= 1, "an integer >= 1"),
    temperature: numberFlag("temperature", v.temperature!, (n) => n >= 0, "a number >= 0"),
    topP: numberFlag("top-p", v["top-p"]!, (n) => n > 0 && n <= 1, "a number in (0, 1]"),
    seed: numberFlag("seed", v.seed!, Number.isSafeInteger, "an integer"),
    topK: numberFlag("top-k", v["top-k"]!, (n) => Number.isSafeInteger(n) && n >= 0, "an integer >= 0"),
    minP: numberFlag("min-p", v["min-p"]!, (n) => n >= 0 && n <= 1, "a number in [0, 1]"),
    repetitionPenalty: numberFlag("repetition-penalty", v["repetition-penalty"]!, (n) => n >= 0, "a number >= 0"),
  };
}

export async function main(argv: string[]): Promise<void> {
  const args = parse(argv);
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const progress = (loaded: number, total: number) => {
    const width = 24;
    const filled = Math.round((loaded / total) * width);
    process.stderr.write(
      `\rloading ${args.model} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${loaded}/${total} files`,
    );
    if (loaded === total) process.stderr.write("\n");
  };
  const model = loadModel(args.model, { backend: args.backend, onProgress: progress });
  try {
    const tokenizer = Tokenizer.fromDir(args.model);
    const quant = model.checkpoint.quantization?.global;
    const info = model.backend === "mlx" ? deviceInfo() : undefined;
    console.error(
      `${model.config.modelType}, ${model.config.layers} layers, hidden ${model.config.hiddenSize}` +
        `${quant ? `, ${quant.bits}-bit ${quant.mode}` : ""}; ` +
        (info ? `MLX ${info.mlxVersion} on ${info.device} (${info.name})` : "CPU reference backend"),
    );
    const prompt = args.chat
      ? tokenizer.encode(tokenizer.applyChatTemplate([{ role: "user", content: args.prompt }]), false)
      : args.prompt;
    const stats: Partial<GenerationStats> = {};
    const { maxTokens, temperature, topP, seed, topK, minP, repetitionPenalty, rewrite } = args;
    const promptCache =
      args.promptCache === undefined
        ? undefined
        : existsSync(args.promptCache)
          ? PromptCache.load(model, args.promptCache)
          : new PromptCache(model);
    const options = {
      maxTokens,
      temperature,
      topP,
      seed,
      topK,
      minP,
      repetitionPenalty,
      rewrite,
      maxKvSize: args.maxKvSize,
      kvBits: args.kvBits,
      ...(promptCache ? { promptCache } : {}),
    };
    // The prompt is echoed once generation is under way (a rejected request prints only the error).
    let echoed = args.chat;
    const draft = args.draftModel === undefined ? undefined : loadModel(args.draftModel, { backend: model.backend });
    const chunks = draft
      ? speculativeGenerate(
          model,
          draft,
          tokenizer,
          prompt,
          { maxTokens, rewrite, numDraftTokens: args.numDraft },
          stats,
        )
      : generate(model, tokenizer, prompt, options, stats);
    for await (const chunk of chunks) {
      if (!echoed) process.stdout.write(args.prompt);
      echoed = true;
      process.stdout.write(chunk.text);
    }
    process.stdout.write("\n");
    draft?.dispose();
    const { promptTokens = 0, generatedTokens = 0, prefillSeconds = 0, decodeSeconds = 0, finishReason } = stats;
    const rate = (tokens: number, seconds: number) =>
      seconds > 0 && tokens > 0 ? `${(tokens / seconds).toFixed(1)} tokens/s` : "-";
    if (promptCache) {
      promptCache.save(args.promptCache!);
      promptCache.dispose();
      console.error(
        `prompt cache: ${stats.cachedTokens} tokens reused, ${promptCache.tokens.length} saved to ${args.promptCache}`,
      );
    }
    console.error(
      `prompt ${promptTokens} tokens at ${rate(promptTokens, prefillSeconds)}; generated ${generatedTokens} tokens at ${rate(generatedTokens - 1, decodeSeconds)} (${finishReason})`,
    );
  } finally {
    model.dispose();
  }
}

/** Runs `command` and exits as the CLI does: one line and 2 for usage errors, 1 for others. */
export async function runCommand(command: () => Promise<void> | void): Promise<void> {
  try {
    await command();
  } catch (e) {
    const usage = e instanceof UsageError;
    console.error(`mlx-bun: ${(e as Error).message}${usage ? " (--help lists the options)" : ""}`);
    process.exit(usage ? 2 : 1);
  }
}

if (import.meta.main) await runCommand(() => main(process.argv.slice(2)));
