import { generate, type GenerationStats } from "../src/engine/generate.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { DEFAULT_REWRITERS, REWRITERS } from "../src/rewrite/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { summarize, table } from "./stats.ts";

const MAX_TOKENS = 64;
const REPEATS = 5;

export async function run(): Promise<Record<string, unknown>> {
  const dir = DEFAULT_MODEL_DIR;
  const model = loadModel(dir);
  const tokenizer = Tokenizer.fromDir(dir);
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 37) % 1000);
  const variants: [string, boolean | string[]][] = [
    ["plain graph", false],
    ...Object.keys(REWRITERS).map((k): [string, string[]] => [k, [k]]),
    ["default", DEFAULT_REWRITERS],
    ["all", Object.keys(REWRITERS)],
  ];
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  let baseline = 0;
  for (const [label, rewrite] of variants) {
    const speeds: number[] = [];
    for (let r = 0; r <= REPEATS; r++) {
      const stats: Partial<GenerationStats> = {};
      for await (const _ of generate(
        model,
        tokenizer,
        prompt,
        { maxTokens: MAX_TOKENS, ignoreEos: true, rewrite },
        stats,
      )) {
      }
      if (r > 0) speeds.push((stats.generatedTokens! - 1) / stats.decodeSeconds!);
    }
    const s = summarize(speeds);
    baseline ||= s.median;
    const perLayerUs = 1e6 / s.median / model.config.layers;
    rows.push([label, s.median, perLayerUs, s.median / baseline, s.spread]);
    results[label] = { ...s, perLayerUs };
  }
  table(
    `Decode on the default model (${model.config.layers} layers), ${MAX_TOKENS} tokens after a 32-token prompt, median of ${REPEATS}`,
    ["graph", "tokens/s", "µs per layer", "vs plain", "spread"],
    rows,
  );
  model.dispose();
  return results;
}
