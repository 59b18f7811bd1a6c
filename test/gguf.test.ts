// GGUF checkpoints (src/io/gguf.ts): the default model written by gguf-py as llama.cpp's converter
// writes llama (scripts/fixtures/gguf_files.py: F16, Q8_0, Q4_0; q/k rows permuted), loaded here and
// run against Python MLX's reading of the same files (prompt logits), the F16 file against mlx-lm's
// greedy tokens on the original checkpoint, the tokenizer from the metadata, and the files it refuses.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  DEFAULT_MODEL_DIR,
  deviceInfo,
  forward,
  generateText,
  loadModel,
  serve,
  Tensor,
  Tokenizer,
} from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const DATA = join(import.meta.dir, "fixtures", "data");
const file = (name: string) => join(DATA, name);
const f = fixture<{ prompt: string; ids: number[]; logits: Record<string, EncodedArray> }>("gguf.json");
const reference = fixture<{ greedy: number[] }>("default_model.json");

describe("GGUF checkpoints", () => {
  // Tolerances: the graph computes in the weights' float16 where Python computed in float32.
  for (const [kind, bound] of [
    ["f16", 0.05],
    ["q8_0", 0.05],
    ["q4_0", 0.05],
  ] as const) {
    test(`${kind}: prompt logits equal Python MLX's reading of the file (<= ${bound})`, () => {
      const model = loadModel(file(`default-model-${kind}.gguf`), { backend: "mlx" });
      try {
        expect(model.config.modelType).toBe("llama");
        using ids = Tensor.from(Int32Array.from(f.ids), [1, f.ids.length]);
        using logits = forward(model, ids, { logits: "all" });
        const want = decode(f.logits[kind]!).toFloat32Array();
        expect(maxAbsDiff(logits.toFloat32Array(), want)).toBeLessThanOrEqual(bound);
      } finally {
        model.dispose();
      }
    });
  }

  // The qwen2 (q/k/v biases) and qwen3 (q/k norms, head_dim) fixture models as F16 GGUF files, against
  // mlx-lm's logits on their float32 safetensors (models.json): float16 rounding of the weights.
  const models = fixture<Record<string, { prompt: EncodedArray; prefill: EncodedArray }>>("models.json");
  for (const arch of ["qwen2", "qwen3"]) {
    test(`${arch}: the GGUF file's prompt logits equal mlx-lm's on the safetensors checkpoint (<= 0.01)`, () => {
      const model = loadModel(file(`${arch}-f16.gguf`), { backend: "mlx" });
      try {
        expect(model.config.modelType).toBe(arch);
        using ids = decode(models[arch]!.prompt);
        using logits = forward(model, ids, { logits: "all" });
        expect(maxAbsDiff(logits.toFloat32Array(), decode(models[arch]!.prefill).toFloat32Array())).toBeLessThanOrEqual(
          0.01,
        );
      } finally {
        model.dispose();
      }
    });
  }

  test("f16: 32 greedy tokens equal mlx-lm's on the MLX-format checkpoint; Q8_0 stays quantized", async () => {
    const model = loadModel(file("default-model-f16.gguf"), { backend: "mlx" });
    const tokenizer = Tokenizer.fromDir(file("default-model-f16.gguf"));
    const { tokens } = await generateText(model, tokenizer, f.ids, { maxTokens: 32, ignoreEos: true });
    model.dispose();
    expect(tokens).toEqual(reference.greedy.slice(0, 32));
    const q8 = loadModel(file("default-model-q8_0.gguf"), { backend: "mlx" });
    expect(q8.checkpoint.weights.get("model.layers.0.mlp.up_proj.weight")!.dtype).toBe("uint32");
    // float16 in the file; float32 on a CPU device (src/io/gguf.ts).
    expect(q8.checkpoint.weights.get("model.layers.0.mlp.up_proj.scales")!.dtype).toBe(
      deviceInfo().device === "cpu" ? "float32" : "float16",
    );
    q8.dispose();
  });

  test("the tokenizer from the metadata decodes as the checkpoint's, and encodes text the same way", () => {
    const ours = Tokenizer.fromDir(file("default-model-q4_0.gguf"));
    const original = Tokenizer.fromDir(DEFAULT_MODEL_DIR);
    const text = "The ship sailed, and 42 gulls (é!) followed.";
    const ids = original.encode(text);
    expect(ours.decode(ids)).toBe(original.decode(ids));
    expect(ours.encode(text)).toEqual(ids);
    expect(ours.decode(ours.encode(` ${text}`))).toBe(` ${text}`);
    expect(ours.eosTokenIds).toEqual(original.eosTokenIds);
  });

  test("the server takes a .gguf path", async () => {
    const server = serve({ model: file("default-model-q4_0.gguf"), port: 0, backend: "mlx" });
    try {
      const response = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: "The ship", max_tokens: 4, temperature: 0 }),
      });
      expect(response.status).toBe(200);
      const body = (await response.json()) as { usage: { completion_tokens: number } };
      expect(body.usage.completion_tokens).toBeGreaterThan(0);
    } finally {
      await server.stop();
    }
  });

  test("files it cannot load are Errors naming why", () => {
    expect(() => loadModel(file("bad-mamba.gguf"), { backend: "mlx" })).toThrow(
      `GGUF architecture "mamba" is not supported (supported: llama, qwen2, qwen3)`,
    );
    expect(() => loadModel(file("bad-q5_0.gguf"), { backend: "mlx" })).toThrow(
      "tensor 'blk.0.ffn_up.weight' is Q5_0; supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0",
    );
    expect(() => loadModel(file("bad-bytes.gguf"), { backend: "mlx" })).toThrow("not a GGUF file");
    expect(() => loadModel(file("missing.gguf"), { backend: "mlx" })).toThrow();
    expect(() => loadModel(file("default-model-f16.gguf"), { backend: "cpu" })).toThrow(
      "GGUF files load on the MLX backend",
    );
  });
});
