// Sampled decoding against greedy on one stream: the decode rate (tokens/s after the first token)
// of generate with temperature 0.7 + top-p 0.9, and with top-k 40 + repetition penalty 1.1, beside
// greedy, in alternating rounds (a 96-token prompt, 256 new tokens: shorter runs of the default model
// on a GPU spread by 30-40% between rounds). Models as MLXB_BENCH_MODELS
// (default: the default model; see decode.ts for the names).
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { alternatingRounds, benchModel, decodeRate } from "./decode.ts";
import { summarize, table } from "./stats.ts";

const PROMPT = 96;
const NEW = 256;
const ROUNDS = 7;
const MODES: Record<string, Record<string, number>> = {
  greedy: {},
  "T 0.7, top-p 0.9": { temperature: 0.7, topP: 0.9 },
  "top-k 40, repetition 1.1": { temperature: 1, topK: 40, repetitionPenalty: 1.1 },
};

export async function run(): Promise<Record<string, unknown>> {
  const names = (process.env.MLXB_BENCH_MODELS ?? "default").split(",");
  const results: Record<string, Record<string, number[]>> = {};
  for (const name of names) {
    const dir = name === "default" ? DEFAULT_MODEL_DIR : benchModel(name);
    const model = loadModel(dir, { backend: "mlx" });
    const tokenizer = Tokenizer.fromDir(dir);
    const prompt = Array.from({ length: PROMPT }, (_, t) => 1 + ((t * 37 + 11) % (model.config.vocabSize - 1)));
    const modes = Object.fromEntries(
      Object.entries(MODES).map(([mode, options]) => [
        mode,
        (seed: number) => decodeRate(model, tokenizer, prompt, NEW, { seed, ...options }),
      ]),
    );
    const runs = await alternatingRounds(modes, ROUNDS);
    model.dispose();
    results[name] = runs;
    const greedy = summarize(runs["greedy"]!).median;
    table(
      `Sampled vs greedy decode, ${name}, ${PROMPT}-token prompt, ${NEW} new tokens (tokens/s after the first; median of ${ROUNDS} alternating rounds)`,
      ["mode", "tokens/s", "x greedy", "spread"],
      Object.keys(MODES).map((mode) => {
        const s = summarize(runs[mode]!);
        return [mode, s.median, s.median / greedy, s.spread];
      }),
    );
  }
  return results;
}
