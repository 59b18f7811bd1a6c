// POST /v1/embeddings (OpenAI's embeddings API) over an encoder model: strings in, one vector each
// (the model's pooling and normalization, as embed() applies them), as float lists or as base64 of
// little-endian float32 (what the `openai` client asks for by default).
import { embed } from "../embed.ts";
import type { Model } from "../models/index.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { type Body, HttpError, type Site } from "./http.ts";

/** OpenAI's limit on inputs per request. */
const MAX_INPUTS = 2048;
const KEYS = ["input", "model", "encoding_format", "dimensions", "user"];

/** The strings of an embeddings request's `input` (a string or a list of strings). */
function inputsOf(body: Body): string[] {
  const input = body["input"];
  const list = typeof input === "string" ? [input] : input;
  if (!Array.isArray(list) || list.length === 0)
    throw new HttpError(400, "'input' must be a string or a non-empty array of strings", "input");
  if (list.length > MAX_INPUTS)
    throw new HttpError(400, `'input' holds ${list.length} items; at most ${MAX_INPUTS}`, "input");
  for (const [i, item] of list.entries()) {
    if (typeof item !== "string") {
      const what =
        typeof item === "number" || Array.isArray(item)
          ? "token ids are not accepted; send text"
          : `got ${JSON.stringify(item)}`;
      throw new HttpError(400, `'input[${i}]' must be a string (${what})`, "input");
    }
    if (item.length === 0) throw new HttpError(400, `'input[${i}]' is empty`, "input");
  }
  return list as string[];
}

/** Answers one embeddings request: OpenAI's { object: "list", data, model, usage }. */
export function embeddingsResponse(model: Model, tokenizer: Tokenizer, modelId: string, body: Body): Response {
  for (const key of Object.keys(body))
    if (!KEYS.includes(key)) throw new HttpError(400, `unknown parameter '${key}' (valid: ${KEYS.join(", ")})`, key);
  const texts = inputsOf(body);
  const format = body["encoding_format"] ?? "float";
  if (format !== "float" && format !== "base64")
    throw new HttpError(
      400,
      `'encoding_format' must be "float" or "base64", got ${JSON.stringify(format)}`,
      "encoding_format",
    );
  const dimension = model.config.hiddenSize;
  const dimensions = body["dimensions"];
  if (dimensions !== undefined && dimensions !== null && dimensions !== dimension) {
    throw new HttpError(
      400,
      `'dimensions' must be this model's ${dimension} (its vectors are not truncatable), got ${JSON.stringify(dimensions)}`,
      "dimensions",
    );
  }
  const result = embed(model, tokenizer, texts);
  const data = result.vectors.map((v, index) => ({
    object: "embedding",
    index,
    embedding:
      format === "float" ? Array.from(v) : Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64"),
  }));
  const tokens = result.tokenCounts.reduce((a, b) => a + b, 0);
  return Response.json({
    object: "list",
    data,
    model: modelId,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}

/** The site of an encoder: POST /v1/embeddings. */
export function embeddingSite(model: Model, tokenizer: Tokenizer, modelId: string): Site {
  return {
    complete: async () => {
      throw new HttpError(
        400,
        `this server's model '${modelId}' is an encoder (${model.config.modelType}): it serves POST /v1/embeddings, not completions`,
        "model",
      );
    },
    embeddings: (body) => embeddingsResponse(model, tokenizer, modelId, body),
    load: () => ({ active: 0, waiting: 0 }),
    stop: async () => {},
  };
}
