// `mlx-bun serve`: the OpenAI-compatible server (src/serve/server.ts) on a model directory.
import { flags, numberFlag, UsageError } from "./generate.ts";
import { isModelPath } from "../io/checkpoint.ts";
import { DEFAULT_MODEL_DIR } from "../models/index.ts";
import { serve } from "../serve/server.ts";

const USAGE = `usage: mlx-bun serve [options]
  --model DIR          MLX-format checkpoint directory (default: the shipped default model)
  --host HOST          address to listen on (default 127.0.0.1)
  --port N             port (default 8080; 0 picks a free one)
  --backend KIND       mlx | cpu | auto (default auto)
  --max-concurrent N   requests decoding together in one batch (default 16)
  --max-queue N        requests waiting for a slot before 429s (default 64)
  --body-timeout S     seconds a request body may take to arrive, and a connection sit idle (default 30)
  --help               this text
Endpoints: a decoder serves POST /v1/chat/completions, POST /v1/completions and GET / (chat page); an
encoder (e.g. all-MiniLM-L6-v2) serves POST /v1/embeddings; both GET /v1/models and GET /health.`;

export async function main(argv: string[]): Promise<void> {
  const parsed = flags(argv, {
    model: { type: "string", default: DEFAULT_MODEL_DIR },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8080" },
    backend: { type: "string", default: "auto" },
    "max-concurrent": { type: "string", default: "16" },
    "max-queue": { type: "string", default: "64" },
    "body-timeout": { type: "string", default: "30" },
    help: { type: "boolean", default: false },
  });
  const v = parsed.values;
  if (v.help) {
    console.log(USAGE);
    return;
  }
  if (!isModelPath(v.model!))
    throw new UsageError(`${v.model} is not a model directory (no config.json) or a .gguf file`);
  if (!["mlx", "cpu", "auto"].includes(v.backend!.trim().toLowerCase()))
    throw new UsageError(`--backend must be mlx, cpu or auto, got '${v.backend}'`);
  const server = serve({
    model: v.model!,
    host: v.host!,
    port: numberFlag(
      "port",
      v.port!,
      (n) => Number.isSafeInteger(n) && n >= 0 && n <= 65535,
      "an integer in [0, 65535]",
    ),
    backend: v.backend!,
    maxConcurrent: numberFlag(
      "max-concurrent",
      v["max-concurrent"]!,
      (n) => Number.isSafeInteger(n) && n >= 1,
      "an integer >= 1",
    ),
    maxQueue: numberFlag("max-queue", v["max-queue"]!, (n) => Number.isSafeInteger(n) && n >= 0, "an integer >= 0"),
    bodyTimeout: numberFlag(
      "body-timeout",
      v["body-timeout"]!,
      (n) => Number.isSafeInteger(n) && n >= 1 && n <= 255,
      "an integer in [1, 255]",
    ),
  });
  const what =
    server.kind === "encoder"
      ? `embeddings at ${server.url}/v1/embeddings`
      : `OpenAI API under ${server.url}/v1; chat page at ${server.url}/`;
  console.error(`mlx-bun: serving '${server.modelId}' at ${server.url} (${what})`);
  const stop = async () => {
    await server.stop();
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
