// `mlx-bun embed`: sentence embeddings of texts (arguments, else one per line on standard input) as
// JSON lines, or with --query the texts ranked by cosine similarity to the query (semantic search).
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { flags, numberFlag, UsageError } from "./generate.ts";
import { cosineSimilarity, embed, type EmbedOptions, POOLINGS, type Pooling } from "../embed.ts";
import { loadModel } from "../models/index.ts";
import { embeddingModelDir } from "./setup.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";

/** In a checkout, the model scripts/setup.sh installs; else the one `mlx-bun setup --embedding-model` does. */
function defaultModel(): string {
  const checkout = join(import.meta.dir, "..", "..", ".cache", "models", "all-MiniLM-L6-v2");
  return existsSync(join(checkout, "config.json")) ? checkout : embeddingModelDir();
}

const USAGE = `usage: mlx-bun embed [options] [TEXT ...]   (no TEXT: one text per line on standard input)
  --model DIR          encoder checkpoint (BERT; sentence-transformers files read when present)
                       (default: all-MiniLM-L6-v2, installed by mlx-bun setup --embedding-model)
  --query TEXT         print the texts ranked by cosine similarity to TEXT instead of vectors
  --pooling P          mean | cls | max (default: the checkpoint's, else mean)
  --normalize B        true | false: L2-normalize (default: the checkpoint's, else false)
  --max-length N       tokens per text, longer ones cut (default: the checkpoint's limit)
  --batch-size N       texts per forward pass (default 32)
  --backend KIND       mlx | cpu | auto (default auto)
  --help               this text
Without --query: one JSON object a line, {"index", "tokens", "truncated", "embedding"}.`;

function parse(argv: string[]) {
  const parsed = flags(
    argv,
    {
      model: { type: "string" },
      query: { type: "string" },
      pooling: { type: "string" },
      normalize: { type: "string" },
      "max-length": { type: "string" },
      "batch-size": { type: "string" },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean", default: false },
    },
    true,
  );
  const v = parsed.values;
  const options: EmbedOptions = {};
  if (v.pooling !== undefined) {
    if (!(POOLINGS as readonly string[]).includes(v.pooling))
      throw new UsageError(`--pooling must be one of ${POOLINGS.join(", ")}, got '${v.pooling}'`);
    options.pooling = v.pooling as Pooling;
  }
  if (v.normalize !== undefined) {
    if (v.normalize !== "true" && v.normalize !== "false")
      throw new UsageError(`--normalize must be true or false, got '${v.normalize}'`);
    options.normalize = v.normalize === "true";
  }
  const integer = (n: number) => Number.isSafeInteger(n) && n >= 1;
  if (v["max-length"] !== undefined)
    options.maxLength = numberFlag("max-length", v["max-length"], integer, "an integer >= 1");
  if (v["batch-size"] !== undefined)
    options.batchSize = numberFlag("batch-size", v["batch-size"], integer, "an integer >= 1");
  if (!["mlx", "cpu", "auto"].includes(v.backend!.trim().toLowerCase()))
    throw new UsageError(`--backend must be mlx, cpu or auto, got '${v.backend}'`);
  const model = v.model ?? defaultModel();
  if (!v.help && !existsSync(join(model, "config.json"))) {
    throw new UsageError(
      v.model === undefined
        ? `no embedding model at ${model}: run 'mlx-bun setup --embedding-model' or pass --model DIR`
        : `${model} is not a model directory (no config.json)`,
    );
  }
  return { help: v.help!, model, query: v.query, backend: v.backend!, options, texts: parsed.positionals };
}

export async function main(argv: string[]): Promise<void> {
  const args = parse(argv);
  if (args.help) {
    console.log(USAGE);
    return;
  }
  const texts =
    args.texts.length > 0
      ? args.texts
      : readFileSync(0, "utf8")
          .split("\n")
          .filter((line) => line.trim() !== "");
  if (texts.length === 0) throw new UsageError("no texts: pass them as arguments or one per line on standard input");
  const model = loadModel(args.model, { backend: args.backend });
  try {
    const tokenizer = Tokenizer.fromDir(args.model);
    const all = args.query === undefined ? texts : [args.query, ...texts];
    const result = embed(model, tokenizer, all, args.options);
    if (result.truncated.length > 0)
      console.error(`${result.truncated.length} text(s) cut to ${result.maxLength} tokens`);
    if (args.query === undefined) {
      result.vectors.forEach((v, i) => {
        console.log(
          JSON.stringify({
            index: i,
            tokens: result.tokenCounts[i],
            truncated: result.truncated.includes(i),
            embedding: Array.from(v),
          }),
        );
      });
      return;
    }
    const [query, ...vectors] = result.vectors;
    const ranked = vectors
      .map((v, i) => ({ score: cosineSimilarity(query!, v), text: texts[i]! }))
      .sort((a, b) => b.score - a.score);
    for (const { score, text } of ranked) console.log(`${score.toFixed(4)}  ${text}`);
  } finally {
    model.dispose();
  }
}
