// Hostile calls: a temperature float32 cannot invert, unknown option names on every public entry,
// prompt-cache files of another model or edited, the server's wrong routes.
import { cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createCache,
  DEFAULT_MODEL_DIR,
  embed,
  fast,
  forward,
  generateText,
  loadModel,
  loadSafetensors,
  ops,
  PromptCache,
  quant,
  quantizeParams,
  saveSafetensors,
  serve,
  Tensor,
  Tokenizer,
} from "../../src/index.ts";
import { add, FIXTURE, heads, mlxModel, table } from "./harness.ts";

// A temperature whose inverse float32 cannot hold samples at 1e-30: the greedy tokens, not token 0.
for (const [backend, temperature] of [
  ["mlx", 1e-300],
  ["mlx", 1e-40],
  ["cpu", 1e-300],
] as const) {
  add(`generate at temperature ${temperature} (${backend}) gives the greedy tokens`, "ok", async () => {
    const model = loadModel(FIXTURE, { backend });
    const run = (t: number) =>
      generateText(model, Tokenizer.fromDir(FIXTURE), [1, 2, 3], { maxTokens: 4, temperature: t, ignoreEos: true });
    const [tiny, greedy] = [(await run(temperature)).tokens, (await run(0)).tokens];
    if (tiny.join() !== greedy.join()) throw new Error(`temperature ${temperature} gave [${tiny}], greedy [${greedy}]`);
  });
}
// Unknown option names on every public entry that takes options.
const EMBEDDER = join(import.meta.dir, "..", "..", ".cache", "models", "all-MiniLM-L6-v2");
/** Runs `call` and returns normally only when it throws an Error whose message holds `words`. */
function rejectsWith(words: string, call: () => unknown): () => void {
  return () => {
    try {
      call();
    } catch (e) {
      if (e instanceof Error && e.message.includes(words)) return;
      throw new Error(`rejected, but not for '${words}': ${String(e)}`);
    }
    throw new Error(`not rejected (expected '${words}')`);
  };
}
const BERT_FIXTURE = join(import.meta.dir, "..", "fixtures", "data", "encoders", "bert");
add(
  "embed with the typo 'poolin'",
  "ok",
  rejectsWith("embed: unknown option 'poolin'", () =>
    embed(loadModel(BERT_FIXTURE, { backend: "mlx" }), Tokenizer.fromDir(FIXTURE), ["a"], { poolin: "cls" } as never),
  ),
);
// The real encoder is installed by scripts/test.sh (the lent GPU machine cannot carry it).
const hasEmbedder = existsSync(join(EMBEDDER, "tokenizer.json"));
if (hasEmbedder)
  add("embed with pooling 'cls' (control)", "ok", () =>
    embed(loadModel(EMBEDDER, { backend: "mlx" }), Tokenizer.fromDir(EMBEDDER), ["a"], { pooling: "cls" }),
  );
add("loadModel with the typo 'backnd'", "error", () => loadModel(FIXTURE, { backnd: "cpu" } as never));
add("createCache with an unknown option", "error", () => createCache(mlxModel(), 1, 8, { kvbits: 4 } as never));
add("forward with an unknown option", "error", () =>
  forward(mlxModel(), Tensor.from(Int32Array.of(1), [1, 1]), { cach: null } as never),
);
add("quantizeParams with bits 7", "error", () => quantizeParams(new Map(), { bits: 7 }));
add("quantizeParams with an unknown option", "error", () => quantizeParams(new Map(), { group: 64 } as never));
add(
  "quantize with an unknown option",
  "ok",
  rejectsWith("quantize: unknown option 'group'", () =>
    quant.quantize(Tensor.from(new Float32Array(64 * 128), [64, 128]), { group: 32 } as never),
  ),
);
add(
  "quantize with groupSize NaN",
  "ok",
  rejectsWith("groupSize must be a positive integer", () =>
    quant.quantize(Tensor.from(new Float32Array(64 * 128), [64, 128]), { groupSize: Number.NaN }),
  ),
);
add(
  "quantizedMatmul with an unknown option",
  "ok",
  rejectsWith("unknown option 'transposed'", () => {
    const q = quant.quantize(Tensor.from(new Float32Array(64 * 128), [64, 128]));
    return quant.quantizedMatmul(Tensor.from(new Float32Array(128), [1, 128]), q, { transposed: false } as never);
  }),
);
add(
  "cumsum with an unknown option",
  "ok",
  rejectsWith("cumsum: unknown option 'revers'", () => ops.cumsum(table(), 0, { revers: true } as never)),
);
add(
  "rope with an unknown option",
  "ok",
  rejectsWith("rope: unknown option 'ofset'", () => fast.rope(heads(), { dims: 8, ofset: 3 } as never)),
);
add(
  "attention with an unknown option",
  "ok",
  rejectsWith("scaledDotProductAttention: unknown option 'causal'", () =>
    fast.scaledDotProductAttention(heads(), heads(), heads(), { scale: 0.3, causal: true } as never),
  ),
);
add(
  "Tokenizer.encode of a number",
  "ok",
  rejectsWith("Tokenizer.encode: text must be a string", () => Tokenizer.fromDir(FIXTURE).encode(5 as never)),
);
// Prompt-cache files for another model of the same shape, or edited after saving.
async function savedPromptCache(): Promise<{ path: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "mlxb-crash-cache-"));
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  const cache = new PromptCache(model, 32);
  await generateText(model, Tokenizer.fromDir(DEFAULT_MODEL_DIR), "Water is", { maxTokens: 2, promptCache: cache });
  const path = join(dir, "cache.safetensors");
  cache.save(path);
  return { path, dir };
}
add("a prompt cache loaded into a model with another rope_theta", "error", async () => {
  const { path, dir } = await savedPromptCache();
  const other = join(dir, "model");
  cpSync(DEFAULT_MODEL_DIR, other, { recursive: true });
  const config = JSON.parse(readFileSync(join(other, "config.json"), "utf8"));
  config["rope_theta"] = 1e6;
  writeFileSync(join(other, "config.json"), JSON.stringify(config));
  return PromptCache.load(loadModel(other, { backend: "mlx" }), path);
});
add("a prompt cache whose tokens were edited", "error", async () => {
  const { path } = await savedPromptCache();
  const { tensors, metadata } = loadSafetensors(path);
  const tokens = JSON.parse(metadata["tokens"]!) as number[];
  tokens[tokens.length - 1] = 7;
  saveSafetensors(path, tensors, { ...metadata, tokens: JSON.stringify(tokens) });
  return PromptCache.load(loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" }), path);
});
// The server: each kind of model answers the other kind's routes with a 400; no Host header is a 400.
async function expectStatus(
  model: string,
  request: (url: string, port: number) => Promise<number>,
  status: number,
): Promise<void> {
  const server = serve({ model, port: 0, backend: "mlx" });
  try {
    const got = await request(server.url, server.port);
    if (got !== status) throw new Error(`expected HTTP ${status}, got ${got}`);
  } finally {
    await server.stop();
  }
}
const postJson = (url: string, body: unknown) =>
  fetch(url, { method: "POST", body: JSON.stringify(body) }).then((r) => r.status);
if (hasEmbedder) {
  add("serve an encoder, ask for a completion: 400", "ok", () =>
    expectStatus(EMBEDDER, (url) => postJson(`${url}/v1/completions`, { prompt: "x" }), 400),
  );
  add("serve an encoder, ask for embeddings: 200 (control)", "ok", () =>
    expectStatus(EMBEDDER, (url) => postJson(`${url}/v1/embeddings`, { input: "x" }), 200),
  );
}
add("serve a decoder, ask for embeddings: 400", "ok", () =>
  expectStatus(FIXTURE, (url) => postJson(`${url}/v1/embeddings`, { input: "x" }), 400),
);
add("an HTTP/1.0 request without a Host header: 400", "ok", () =>
  expectStatus(
    FIXTURE,
    (_, port) =>
      new Promise<number>((resolve, reject) => {
        const socket = connect(port, "127.0.0.1", () => socket.write("GET /health HTTP/1.0\r\n\r\n"));
        let out = "";
        socket.on("data", (d) => (out += d));
        socket.on("close", () => resolve(Number(/^HTTP\/1\.[01] (\d+)/.exec(out)?.[1] ?? 0)));
        socket.on("error", reject);
      }),
    400,
  ),
);
