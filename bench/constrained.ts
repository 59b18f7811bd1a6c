// The cost of constrained output: decode rate (tokens/s after the first) of generate under a JSON
// Schema (an endless array of objects with strings, integers and enums: many grammar states) beside
// the same generation unconstrained, greedy and sampled (T 0.7), in alternating rounds (a 96-token
// prompt, 96 new tokens, end-of-sequence ignored). The per-token overhead is 1 - constrained/free.
// Models as MLXB_BENCH_MODELS (default: the default model; see decode.ts for the names).
import type { GenerateOptions } from "../src/engine/generate.ts";
import { jsonSchemaGrammar } from "../src/grammar/constraint.ts";
import { DEFAULT_MODEL_DIR, loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { alternatingRounds, benchModel, decodeRate } from "./decode.ts";
import { summarize, table } from "./stats.ts";

const PROMPT = 96;
const NEW = 96;
const ROUNDS = 5;
// Objects of this schema, one after another, never closing the array (a schema's array may close).
const ITEM = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 16 },
    age: { type: "integer" },
    tags: { type: "array", items: { enum: ["red", "green", "blue"] }, maxItems: 3 },
  },
  required: ["name", "age", "tags"],
  additionalProperties: false,
};
const ENDLESS = `root ::= "[" space (item space "," space)*\n${jsonSchemaGrammar(ITEM).replace(/^root ::= /, "item ::= ")}`;
const MODES: Record<string, GenerateOptions> = {
  greedy: {},
  "greedy, json_schema": { responseFormat: { type: "grammar", grammar: ENDLESS } },
  "T 0.7": { temperature: 0.7 },
  "T 0.7, json_schema": { temperature: 0.7, responseFormat: { type: "grammar", grammar: ENDLESS } },
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
    table(
      `Constrained vs free decode, ${name}, ${PROMPT}-token prompt, ${NEW} new tokens (tokens/s after the first; median of ${ROUNDS} alternating rounds)`,
      ["mode", "tokens/s", "x free", "spread"],
      Object.keys(MODES).map((mode) => {
        const s = summarize(runs[mode]!);
        const free = summarize(runs[mode.replace(", json_schema", "")]!).median;
        return [mode, s.median, s.median / free, s.spread];
      }),
    );
  }
  return results;
}
