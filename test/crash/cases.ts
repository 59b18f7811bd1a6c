// Hostile and careless calls through the public API, one per child process (test/crash.test.ts):
// each either throws an Error (expect "error") or completes (expect "ok"); none may end the process
// by a signal. Checkpoint cases copy the llama fixture into a temporary directory and damage it.
import { cpSync, existsSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
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
  memory,
  ops,
  PromptCache,
  quant,
  quantizeParams,
  saveSafetensors,
  serve,
  Tensor,
  Tokenizer,
} from "../../src/index.ts";

export interface Case {
  name: string;
  expect: "error" | "ok";
  run: () => unknown;
}

const FIXTURE = join(import.meta.dir, "..", "fixtures", "data", "models", "llama");
const VOCAB = 320;

/** A copy of the llama fixture with config.json changed by `edit` (and `damage` applied after). */
function brokenCopy(edit: (config: Record<string, unknown>) => void, damage?: (dir: string) => void): string {
  const dir = mkdtempSync(join(tmpdir(), "mlxb-crash-"));
  cpSync(FIXTURE, dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  edit(config);
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  damage?.(dir);
  return dir;
}

async function generateWith(options: Record<string, unknown>, prompt: string | number[] = [1, 2, 3]) {
  const model = loadModel(FIXTURE, { backend: "mlx" });
  return generateText(model, Tokenizer.fromDir(FIXTURE), prompt, { maxTokens: 2, ...options } as never);
}

async function generateOnCpu(options: Record<string, unknown>, prompt: number[]) {
  const model = loadModel(FIXTURE, { backend: "cpu" });
  return generateText(model, Tokenizer.fromDir(FIXTURE), prompt, { maxTokens: 2, ...options } as never);
}

const cases: Case[] = [];
const add = (name: string, expect: Case["expect"], run: () => unknown) => cases.push({ name, expect, run });

// ---- gathers: indices past the table, from the host ----
for (const index of [5, 6, 1e9, 2 ** 31 - 1, -6, -1e9, -(2 ** 31)]) {
  add(`take index ${index} from 5 rows`, "error", () =>
    ops.take(Tensor.from(new Float32Array(10), [5, 2]), Tensor.from(Int32Array.of(index)), 0).eval(),
  );
}
for (const index of [0, 4, -1, -5])
  add(`take index ${index} from 5 rows`, "ok", () =>
    ops.take(Tensor.from(new Float32Array(10), [5, 2]), Tensor.from(Int32Array.of(index)), 0).eval(),
  );
// MLX's quantized matmul divides by zero on an empty operand; the shim answers zeros of the shape.
for (const [label, x, n, k] of [
  ["no rows", [0, 64], 4, 64],
  ["no outputs", [1, 64], 0, 64],
  ["an empty inner axis", [1, 0], 4, 0],
] as const) {
  add(`quantizedMatmul with ${label}`, "ok", () => {
    const q = {
      weight: Tensor.from(new Uint32Array((n * k) / 8), [n, k / 8]),
      scales: Tensor.from(new Float32Array((n * k) / 64), [n, k / 64]),
    };
    return quant
      .quantizedMatmul(Tensor.from(new Float32Array(x[0] * x[1]), [...x]), { ...q, biases: q.scales })
      .toFloat32Array();
  });
}
add("take with float indices", "error", () =>
  ops.take(Tensor.from(new Float32Array(10), [5, 2]), Tensor.from(Float32Array.of(1)), 0).eval(),
);
add("take on axis 3 of a matrix", "error", () =>
  ops.take(Tensor.from(new Float32Array(10), [5, 2]), Tensor.from(Int32Array.of(0)), 3).eval(),
);

// Random ids past the table (seeded: the same cases every run).
let state = 12345;
const random = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32;
for (let i = 0; i < 8; i++) {
  const id = 5 + Math.floor(random() * (2 ** 31 - 6));
  add(`take random index ${id} from 5 rows`, "error", () =>
    ops.take(Tensor.from(new Float32Array(10), [5, 2]), Tensor.from(Int32Array.of(1, id, 2)), 0).eval(),
  );
  add(`generate from random id ${id}`, "error", () => generateWith({}, [1, id]));
}

// ---- dtypes ----
for (const dtype of ["float8", "int4", "", "FLOAT32"])
  add(`Tensor.from as dtype '${dtype}'`, "error", () => Tensor.from([1, 2], [2], dtype as never));
for (const dtype of ["float16", "bfloat16", "int8", "uint32", "bool"])
  add(`Tensor.from as dtype ${dtype}`, "ok", () => Tensor.from([1, 0], [2], dtype as never).eval());
add("astype to an unknown dtype", "error", () => ops.astype(Tensor.from([1]), "half" as never));

// ---- shapes and allocations ----
for (const shape of [
  [2 ** 32 + 1],
  [-1],
  [1.5],
  [Number.NaN],
  [Number.POSITIVE_INFINITY],
  [2 ** 31],
  [3, -2],
  [2, 2, 2 ** 40],
]) {
  add(`Tensor.from shape [${shape}]`, "error", () => Tensor.from(new Float32Array(1), shape));
  add(`zeros [${shape}]`, "error", () => ops.zeros(shape).eval());
}
for (const shape of [
  [1e6, 1e6],
  [2 ** 31 - 1, 2 ** 31 - 1],
  [2 ** 20, 2 ** 20, 16],
])
  add(`zeros [${shape}] past memory`, "error", () => ops.zeros(shape).eval());
add("Tensor.from with 3 values for shape [2, 2]", "error", () => Tensor.from([1, 2, 3], [2, 2]));
add("Tensor.from of a string", "error", () => Tensor.from("abc" as never));
add("Tensor.from of null", "error", () => Tensor.from(null as never));
for (const shape of [[2 ** 32 + 4], [-7, 2], [3, 3], [1.5, 4]])
  add(`reshape [4] to [${shape}]`, "error", () => ops.reshape(Tensor.from([1, 2, 3, 4]), shape).eval());
for (const axes of [[0, 0], [2, 0], [-3, 0], [0]])
  add(`transpose axes [${axes}]`, "error", () => ops.transpose(Tensor.from(new Float32Array(4), [2, 2]), axes).eval());
add("matmul of mismatched shapes", "error", () =>
  ops.matmul(Tensor.from(new Float32Array(6), [2, 3]), Tensor.from(new Float32Array(6), [2, 3])).eval(),
);
add("a disposed tensor", "error", () => {
  const t = Tensor.from([1]);
  t.dispose();
  return ops.add(t, t);
});
add("concatenate nothing", "error", () => ops.concatenate([]).eval());

// ---- generation options ----
const badOptions: [string, unknown][] = [
  ["maxTokens", 0],
  ["maxTokens", -1],
  ["maxTokens", 1.5],
  ["maxTokens", Number.NaN],
  ["maxTokens", 1e9],
  ["maxTokens", Number.POSITIVE_INFINITY],
  ["maxTokens", "abc"],
  ["maxTokens", 2 ** 53],
  ["temperature", Number.NaN],
  ["temperature", -1],
  ["temperature", Number.POSITIVE_INFINITY],
  ["temperature", "x"],
  ["temperature", null],
  ["topP", 0],
  ["topP", -0.1],
  ["topP", 1.5],
  ["topP", Number.NaN],
  ["topP", "1"],
  ["seed", 1.5],
  ["seed", Number.NaN],
  ["seed", "7"],
  ["stopTokens", [-1]],
  ["stopTokens", ["a"]],
  ["stopTokens", 5],
  ["stopStrings", [""]],
  ["stopStrings", [1]],
  ["stopStrings", "x"],
  ["rewrite", "yes"],
  ["rewrite", ["fuse_all"]],
  ["replay", 1],
  ["ignoreEos", "no"],
  ["max_tokens", 5],
  ["topK", -1],
  ["topK", 1.5],
  ["minP", 2],
  ["minP", -0.1],
  ["minTokensToKeep", 0],
  ["repetitionPenalty", -1],
  ["repetitionPenalty", Number.NaN],
  ["presencePenalty", Number.NaN],
  ["frequencyPenalty", Number.POSITIVE_INFINITY],
  ["frequencyContextSize", 0],
  ["repetitionContextSize", 1.5],
  ["logitBias", { "-1": 1 }],
  ["logitBias", { "3": Number.NaN }],
  ["logitBias", [1]],
  ["logitBias", { [VOCAB]: 1 }],
  ["logprobs", 21],
  ["logprobs", -1],
  ["logprobs", 1.5],
];
for (const [key, value] of badOptions)
  add(`generate ${key}: ${String(value)}`, "error", () => generateWith({ [key]: value }));
for (const [key, value] of [
  ["maxTokens", 3],
  ["temperature", 0.5],
  ["topP", 0.5],
  ["topP", 1],
  ["seed", -3],
  ["stopStrings", ["zz"]],
  ["rewrite", false],
  ["replay", false],
  ["topK", 5],
  ["minP", 0.1],
  ["repetitionPenalty", 1.2],
  ["presencePenalty", 0.5],
  ["logitBias", { "3": 5 }],
  ["logprobs", 3],
] as [string, unknown][]) {
  add(`generate ${key}: ${String(value)}`, "ok", () => generateWith({ [key]: value }));
}
add("generate past the context without opt-in", "error", () => generateWith({ maxTokens: 600 }));
add("generate past the context with exceedContext", "ok", () =>
  generateWith(
    { maxTokens: 2, exceedContext: true },
    Array.from({ length: 511 }, (_, i) => i % VOCAB),
  ),
);

// ---- prompt ids ----
for (const ids of [
  [VOCAB],
  [VOCAB + 1],
  [1e9],
  [-1],
  [1.5],
  [Number.NaN],
  [2 ** 31],
  [],
  [1, 2, Number.POSITIVE_INFINITY],
]) {
  add(`generate from ids [${ids}] (MLX)`, "error", () => generateWith({}, ids));
  add(`generate from ids [${ids}] (CPU)`, "error", () => generateOnCpu({}, ids));
}
add("generate from a number", "error", () => generateWith({}, 5 as never));
add("generate from an empty string", "error", () => generateWith({}, ""));
for (const id of [0, VOCAB - 1]) add(`generate from id ${id}`, "ok", () => generateWith({}, [id]));

// ---- forward and caches by hand ----
const mlxModel = () => loadModel(FIXTURE, { backend: "mlx" });
add("forward ids of rank 1", "error", () => forward(mlxModel(), Tensor.from(Int32Array.of(1, 2))));
add("forward ids past the vocabulary", "error", () =>
  forward(mlxModel(), Tensor.from(Int32Array.of(1, VOCAB + 7), [1, 2])).eval(),
);
add("forward negative ids", "error", () => forward(mlxModel(), Tensor.from(Int32Array.of(-4), [1, 1])).eval());
add("forward past the cache", "error", () => {
  const m = mlxModel();
  const cache = createCache(m, 1, 2);
  return forward(m, Tensor.from(Int32Array.of(1, 2, 3), [1, 3]), { cache });
});
add("forward with a cache of another batch", "error", () => {
  const m = mlxModel();
  return forward(m, Tensor.from(Int32Array.of(1, 2), [2, 1]), { cache: createCache(m, 1, 8) });
});
for (const [batch, length] of [
  [0, 8],
  [1, 0],
  [1, 1e12],
  [1e6, 1e6],
  [-1, 4],
  [1.5, 4],
  [1, Number.NaN],
]) {
  add(`createCache batch ${batch}, length ${length}`, "error", () => createCache(mlxModel(), batch!, length!));
}
add("setLeftPadding of the wrong length", "error", () => createCache(mlxModel(), 2, 8).setLeftPadding([1]));
add("setLeftPadding past the cache", "error", () => createCache(mlxModel(), 1, 8).setLeftPadding([9]));

// ---- configs that do not match their weights, and broken files ----
const configEdits: [string, (c: Record<string, unknown>) => void][] = [
  ["num_hidden_layers -1", (c) => (c["num_hidden_layers"] = -1)],
  ["num_hidden_layers 0", (c) => (c["num_hidden_layers"] = 0)],
  ["num_hidden_layers 1 (of 2)", (c) => (c["num_hidden_layers"] = 1)],
  ["num_hidden_layers 3 (of 2)", (c) => (c["num_hidden_layers"] = 3)],
  ["num_hidden_layers 10000", (c) => (c["num_hidden_layers"] = 10000)],
  ["num_hidden_layers 1.5", (c) => (c["num_hidden_layers"] = 1.5)],
  ["num_hidden_layers '2'", (c) => (c["num_hidden_layers"] = "2")],
  ["num_attention_heads 0", (c) => (c["num_attention_heads"] = 0)],
  ["num_attention_heads 3", (c) => (c["num_attention_heads"] = 3)],
  ["num_key_value_heads 3", (c) => (c["num_key_value_heads"] = 3)],
  ["num_key_value_heads -2", (c) => (c["num_key_value_heads"] = -2)],
  ["hidden_size 0", (c) => (c["hidden_size"] = 0)],
  ["hidden_size 128 (weights have 64)", (c) => (c["hidden_size"] = 128)],
  ["num_attention_heads 8 (weights have 4)", (c) => (c["num_attention_heads"] = 8)],
  ["head_dim 32 (weights have 16)", (c) => (c["head_dim"] = 32)],
  ["num_key_value_heads 4 (weights have 2)", (c) => (c["num_key_value_heads"] = 4)],
  ["hidden_size 2^40", (c) => (c["hidden_size"] = 2 ** 40)],
  ["vocab_size 0", (c) => (c["vocab_size"] = 0)],
  ["vocab_size larger than the table", (c) => (c["vocab_size"] = 100000)],
  ["rms_norm_eps -1", (c) => (c["rms_norm_eps"] = -1)],
  ["rope_theta 0", (c) => (c["rope_theta"] = 0)],
  ["partial_rotary_factor 3", (c) => (c["partial_rotary_factor"] = 3)],
  ["max_position_embeddings -5", (c) => (c["max_position_embeddings"] = -5)],
  ["model_type unknown", (c) => (c["model_type"] = "transformer9000")],
  ["model_type missing", (c) => delete c["model_type"]],
  ["quantization bits 3 (weights are 4-bit)", (c) => (c["quantization"] = { group_size: 32, bits: 3, mode: "affine" })],
  [
    "quantization mode nvfp4 (weights are affine)",
    (c) => (c["quantization"] = { group_size: 16, bits: 4, mode: "nvfp4" }),
  ],
  ["quantization group 64 (weights use 32)", (c) => (c["quantization"] = { group_size: 64, bits: 4, mode: "affine" })],
  [
    "quantization removed",
    (c) => {
      delete c["quantization"];
      delete c["quantization_config"];
    },
  ],
  ["eos_token_id -3", (c) => (c["eos_token_id"] = -3)],
];
for (const backend of ["mlx", "cpu"] as const) {
  for (const [name, edit] of configEdits)
    add(`load (${backend}) with ${name}`, "error", () => loadModel(brokenCopy(edit), { backend }));
}
const fileDamage: [string, (dir: string) => void][] = [
  ["the weights truncated to 10 bytes", (d) => truncateSync(join(d, "model.safetensors"), 10)],
  [
    "the weights truncated by half",
    (d) =>
      truncateSync(join(d, "model.safetensors"), Math.floor(readFileSync(join(d, "model.safetensors")).length / 2)),
  ],
  ["an empty weights file", (d) => writeFileSync(join(d, "model.safetensors"), "")],
  [
    "a garbled header length",
    (d) => {
      const bytes = readFileSync(join(d, "model.safetensors"));
      bytes.writeBigUInt64LE(2n ** 62n, 0);
      writeFileSync(join(d, "model.safetensors"), bytes);
    },
  ],
  [
    "a garbled header",
    (d) => {
      const bytes = readFileSync(join(d, "model.safetensors"));
      bytes.fill(0x7b, 8, 40);
      writeFileSync(join(d, "model.safetensors"), bytes);
    },
  ],
  ["config.json not JSON", (d) => writeFileSync(join(d, "config.json"), "{ nope")],
  ["config.json an array", (d) => writeFileSync(join(d, "config.json"), "[1, 2]")],
  [
    "the index naming a missing shard",
    (d) =>
      writeFileSync(
        join(d, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: { "model.norm.weight": "model-00002.safetensors" } }),
      ),
  ],
];
for (const backend of ["mlx", "cpu"] as const) {
  for (const [name, damage] of fileDamage)
    add(`load (${backend}) with ${name}`, "error", () =>
      loadModel(
        brokenCopy(() => {}, damage),
        { backend },
      ),
    );
}
/** The fixture with model.norm.weight (float32) overwritten by NaN: every logit is NaN. */
function nanCopy(): string {
  return brokenCopy(
    () => {},
    (dir) => {
      const path = join(dir, "model.safetensors");
      const bytes = readFileSync(path);
      const headerLength = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
      const [begin, end] = header["model.norm.weight"].data_offsets as [number, number];
      for (let at = 8 + headerLength + begin; at < 8 + headerLength + end; at += 4) bytes.writeFloatLE(Number.NaN, at);
      writeFileSync(path, bytes);
    },
  );
}
for (const [label, backend, temperature] of [
  ["greedy on MLX", "mlx", 0],
  ["sampled on MLX", "mlx", 0.7],
  ["greedy on the CPU", "cpu", 0],
] as const) {
  add(`generate with NaN logits, ${label}`, "error", async () => {
    const dir = nanCopy();
    return generateText(loadModel(dir, { backend }), Tokenizer.fromDir(dir), [1, 2, 3], { maxTokens: 3, temperature });
  });
}
add("load a directory that does not exist", "error", () => loadModel("/nonexistent/model"));
add("load a file instead of a directory", "error", () => loadModel(join(FIXTURE, "config.json")));
add("load with backend 'gpu9'", "error", () => loadModel(FIXTURE, { backend: "gpu9" }));
add("load the fixture (control)", "ok", () => loadModel(FIXTURE, { backend: "mlx" }).dispose());
add("load the fixture on the CPU (control)", "ok", () => loadModel(FIXTURE, { backend: "cpu" }).dispose());

// ---- round 2 (issue 34) ----
// Gathers and scatters with indices computed on the device: clamped into the axis (JAX's default),
// never read past it. Each case checks the clamped values.
const table = () =>
  Tensor.from(
    Float32Array.from({ length: 10 }, (_, i) => i),
    [5, 2],
  );
const deviceIndex = (a: number, b: number) => ops.add(Tensor.from(Int32Array.of(a)), Tensor.from(Int32Array.of(b)));
function expectValues(t: Tensor, want: number[]): void {
  const got = Array.from(t.toFloat32Array());
  if (got.join() !== want.join()) throw new Error(`expected [${want}], got [${got}]`);
}
for (const [a, b, row] of [
  [4, 1, 4],
  [2, 1e9, 4],
  [-3, -1e9, 0],
  [2 ** 30, 2 ** 30, 0],
  [3, -4, 4],
  [-2, -3, 0],
] as const) {
  // 2^30 + 2^30 wraps to -2^31 in int32: clamped to the first row.
  add(`take a device-computed index ${a} + ${b} from 5 rows`, "ok", () =>
    expectValues(ops.take(table(), deviceIndex(a, b), 0), [2 * row, 2 * row + 1]),
  );
}
add("take an argmax over 10 values from 5 rows", "ok", () => {
  const index = ops.argmax(Tensor.from(Float32Array.of(0, 0, 0, 0, 0, 0, 0, 0, 9, 0)), -1, true);
  expectValues(ops.take(table(), index, 0), [8, 9]);
});
add("takeAlongAxis with device-computed indices past the axis", "ok", () => {
  const at = ops.add(
    Tensor.from(Int32Array.of(1, 1, 1, 1, 1), [5, 1]),
    Tensor.from(Int32Array.of(0, 5, -9, 100, 0), [5, 1]),
  );
  expectValues(ops.takeAlongAxis(table(), at, 1), [1, 3, 4, 7, 9]);
});
add("putAlongAxis with device-computed indices past the axis", "ok", () => {
  const at = ops.add(Tensor.from(Int32Array.of(0, 0), [1, 2]), Tensor.from(Int32Array.of(7, -7), [1, 2]));
  expectValues(
    ops.putAlongAxis(Tensor.from(Float32Array.of(0, 0, 0), [1, 3]), at, Tensor.from(Float32Array.of(5, 6), [1, 2]), 1),
    [6, 0, 5],
  );
});
add("scatterAddAxis with device-computed indices past the axis", "ok", () => {
  const at = ops.add(Tensor.from(Int32Array.of(0, 0), [1, 2]), Tensor.from(Int32Array.of(3, 1e6), [1, 2]));
  expectValues(
    ops.scatterAddAxis(
      Tensor.from(Float32Array.of(0, 0, 0), [1, 3]),
      at,
      Tensor.from(Float32Array.of(1, 1), [1, 2]),
      1,
    ),
    [0, 0, 2],
  );
});
add("take from an empty axis with a device-computed index", "error", () =>
  ops.take(Tensor.from(new Float32Array(0), [0, 2]), deviceIndex(0, 0), 0).eval(),
);
// Scalar arguments bun:ffi would cut or zero (NaN -> 0, 1.5 -> 1).
for (const axis of [Number.NaN, 1.5, Number.POSITIVE_INFINITY, 2 ** 40]) {
  add(`take along axis ${axis}`, "error", () => ops.take(table(), Tensor.from(Int32Array.of(0)), axis).eval());
  add(`softmax along axis ${axis}`, "error", () => ops.softmax(table(), axis).eval());
}
add("argpartition with kth NaN", "error", () => ops.argpartition(table(), Number.NaN, -1).eval());
add("repeat -1 times", "error", () => ops.repeat(table(), -1, 0).eval());
add("arange with a NaN step", "error", () => ops.arange(0, 10, Number.NaN).eval());
add("arange with step 0", "error", () => ops.arange(0, 10, 0).eval());
add("arange past memory", "error", () => ops.arange(0, 1e15).eval());
const heads = () => Tensor.from(new Float32Array(16), [1, 1, 2, 8]);
for (const offset of [Number.NaN, -1, 1.5])
  add(`rope with offset ${offset}`, "error", () => fast.rope(heads(), { dims: 8, offset }).eval());
add("rope with NaN base", "error", () => fast.rope(heads(), { dims: 8, base: Number.NaN }).eval());
add("rope with odd dims", "error", () => fast.rope(heads(), { dims: 7 }).eval());
for (const eps of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
  add(`rmsNorm with eps ${eps}`, "error", () => fast.rmsNorm(heads(), null, eps).eval());
  add(`layerNorm with eps ${eps}`, "error", () => fast.layerNorm(heads(), null, null, eps).eval());
}
for (const scale of [Number.NaN, -1, 0, Number.POSITIVE_INFINITY]) {
  add(`attention with scale ${scale}`, "error", () =>
    fast.scaledDotProductAttention(heads(), heads(), heads(), { scale }).eval(),
  );
}
add("attention with scale 0.35 (control)", "ok", () =>
  fast.scaledDotProductAttention(heads(), heads(), heads(), { scale: 0.35 }).eval(),
);
// Host data a dtype cannot hold.
for (const [data, dtype] of [
  [[1.5, 300], "int8"],
  [[300], "uint8"],
  [[-1], "uint32"],
  [[2 ** 31], "int32"],
  [[2], "bool"],
  [[0.5], "bool"],
  [[1e39], "float32"],
  [[70000], "float16"],
  [[1e39], "bfloat16"],
  [[Number.NaN], "int32"],
] as const) {
  add(`Tensor.from [${data}] as ${dtype}`, "error", () => Tensor.from([...data], [data.length], dtype));
}
add("Tensor.from of strings", "error", () => Tensor.from(["a", "b"] as never));
add("Tensor.from of objects", "error", () => Tensor.from([{}, []] as never));
add("Tensor.from Float32Array [1.5] as int32", "error", () => Tensor.from(Float32Array.of(1.5), [1], "int32"));
add("Tensor.from Int32Array [300] as int8", "error", () => Tensor.from(Int32Array.of(300), [1], "int8"));
add("Tensor.from [16777217] as int32 (exact, control)", "ok", () => {
  const got = Tensor.from([16777217], [1], "int32").toInt32Array()[0];
  if (got !== 16777217) throw new Error(`got ${got}`);
});
add("Tensor.from [NaN, -Infinity, 0.1] as bfloat16 (float values, control)", "ok", () =>
  Tensor.from([Number.NaN, Number.NEGATIVE_INFINITY, 0.1], [3], "bfloat16").eval(),
);
// Memory limits: a byte count, nothing else.
for (const bytes of [Number.NaN, -1, 1.5, Number.POSITIVE_INFINITY, 2 ** 64]) {
  add(`memory.setLimit(${bytes})`, "error", () => memory.setLimit(bytes));
  add(`memory.setCacheLimit(${bytes})`, "error", () => memory.setCacheLimit(bytes));
}
add("memory.setLimit back to its own value (control)", "ok", () => {
  const before = memory.setLimit(2 ** 40);
  memory.setLimit(before);
});
// logitBias within float32's range.
for (const bias of [1e39, 1e308, -1e39, Number.NEGATIVE_INFINITY])
  add(`generate logitBias ${bias}`, "error", () => generateWith({ logitBias: { 3: bias } }));
add("generate logitBias -3e38 (float32, control)", "ok", () => generateWith({ logitBias: { 3: -3e38 } }));
// ---- constrained output ----
const schemaFormat = (schema: unknown) => ({ responseFormat: { type: "json_schema", schema } });
for (const [label, format] of [
  ["a schema keyword it does not support", schemaFormat({ type: "string", pattern: "a+" })],
  ["a $ref to itself only", schemaFormat({ $ref: "#/$defs/a", $defs: { a: { $ref: "#/$defs/a" } } })],
  ["a $ref outside the schema", schemaFormat({ $ref: "http://example.com/x.json" })],
  ["a schema that is an array", schemaFormat([1, 2])],
  ["a schema of null", schemaFormat(null)],
  ["type json", { responseFormat: { type: "json" } }],
  ["a grammar of null", { responseFormat: { type: "grammar", grammar: null } }],
  ["a left-recursive grammar", { responseFormat: { type: "grammar", grammar: 'root ::= root "a" | "b"' } }],
  ["nested counted repetitions", { responseFormat: { type: "grammar", grammar: 'root ::= ("a"{10000}){10000}' } }],
  [
    "a repetition of something that can be empty",
    { responseFormat: { type: "grammar", grammar: 'root ::= x*\nx ::= "a" | "a" "a" | "a"*' } },
  ],
  ["minItems 10^9", schemaFormat({ type: "array", minItems: 1e9 })],
  ["a string responseFormat", { responseFormat: "json" }],
] as const) {
  add(`generate with responseFormat: ${label}`, "error", () => generateWith(format as Record<string, unknown>));
}
add("generate with a grammar of bytes no token spells", "error", () =>
  generateWith({ responseFormat: { type: "grammar", grammar: 'root ::= "\\x01\\x02\\x03"' } }),
);
// The llama fixture's 320-token vocabulary spells little: the controls run the default model.
for (const backend of ["mlx", "cpu"] as const) {
  add(`generate with a JSON Schema on ${backend} (control)`, "ok", async () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    const format = {
      type: "json_schema",
      schema: { type: "object", properties: { a: { type: "integer" } }, required: ["a"] },
    } as const;
    const { text } = await generateText(model, Tokenizer.fromDir(DEFAULT_MODEL_DIR), "x", {
      maxTokens: 24,
      responseFormat: format,
    });
    if (typeof JSON.parse(text).a !== "number") throw new Error(`not the schema's: ${text}`);
  });
}

// ---- GGUF files ----
const GGUF = join(import.meta.dir, "..", "fixtures", "data", "default-model-q4_0.gguf");
/** A copy of the Q4_0 GGUF fixture changed by `damage`. */
function brokenGguf(damage: (path: string, bytes: Uint8Array) => void): string {
  const path = join(mkdtempSync(join(tmpdir(), "mlxb-crash-")), "model.gguf");
  const bytes = new Uint8Array(readFileSync(GGUF));
  writeFileSync(path, bytes);
  damage(path, bytes);
  return path;
}
const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset);
// The GGUF files are test fixtures; the GPU machine is not carried them (scripts/gpu/test.sh).
const ggufCases = existsSync(GGUF);
for (const [label, damage] of [
  ["truncated in the tensor data", (path: string) => truncateSync(path, 12_000_000)],
  ["truncated in the header", (path: string) => truncateSync(path, 5000)],
  [
    "a tensor count of 2^40",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setBigUint64(8, 2n ** 40n, true);
      writeFileSync(path, bytes);
    },
  ],
  [
    "a metadata count of 2^53",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setBigUint64(16, 2n ** 53n, true);
      writeFileSync(path, bytes);
    },
  ],
  [
    "version 7",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setUint32(4, 7, true);
      writeFileSync(path, bytes);
    },
  ],
  ["an empty file", (path: string) => writeFileSync(path, "")],
] as const) {
  if (ggufCases)
    add(`loadModel on a GGUF file: ${label}`, "error", () => loadModel(brokenGguf(damage), { backend: "mlx" }));
}
if (ggufCases) {
  add("loadModel on the Q4_0 GGUF file (control)", "ok", () => loadModel(GGUF, { backend: "mlx" }).dispose());
  add("Tokenizer.fromDir on a truncated GGUF file", "error", () =>
    Tokenizer.fromDir(brokenGguf((path) => truncateSync(path, 3000))),
  );
}

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

export default cases;

/** CLI invocations (run as `bun src/bin.ts COMMAND ...args`, the command `generate` unless given, with
 * `env` added): usage errors exit 2, runtime errors 1. */
export const CLI_CASES: { args: string[]; exit: number; command?: string[]; env?: Record<string, string> }[] = [
  { args: ["--help"], exit: 0 },
  { args: ["--max-tokens", "abc"], exit: 2 },
  { args: ["--max-tokens", "0"], exit: 2 },
  { args: ["--max-tokens", "-4"], exit: 2 },
  { args: ["--max-tokens", "1.5"], exit: 2 },
  { args: ["--max-tokens", ""], exit: 2 },
  { args: ["--temperature", "-1"], exit: 2 },
  { args: ["--temperature", "NaN"], exit: 2 },
  { args: ["--top-p", "0"], exit: 2 },
  { args: ["--top-p", "2"], exit: 2 },
  { args: ["--seed", "1.5"], exit: 2 },
  { args: ["--top-k", "-2"], exit: 2 },
  { args: ["--min-p", "1.5"], exit: 2 },
  { args: ["--repetition-penalty", "x"], exit: 2 },
  {
    args: ["--model", FIXTURE, "--max-tokens", "3", "--top-k", "5", "--min-p", "0.05", "--repetition-penalty", "1.3"],
    exit: 0,
  },
  { args: ["--backend", "tpu"], exit: 2 },
  { args: ["--model", "/nonexistent/dir"], exit: 2 },
  { args: ["--model", `${FIXTURE}/config.json`], exit: 2 },
  { args: ["--bogus"], exit: 2 },
  { args: ["positional"], exit: 2 },
  { args: ["--model", FIXTURE, "--max-tokens", "1000000000"], exit: 1 },
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 0 },
  // Negative numbers report the flag's range (parseArgs alone calls them ambiguous).
  { args: ["--top-k", "-1"], exit: 2 },
  { args: ["--max-tokens", "-1"], exit: 2 },
  { command: ["serve"], args: ["--port", "-1"], exit: 2 },
  { command: ["serve"], args: ["--max-concurrent", "-3"], exit: 2 },
  { command: ["serve"], args: ["--body-timeout", "0"], exit: 2 },
  // A library asked for by MLXB_LIBRARY that is missing or not a library: an Error, never another one.
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 1, env: { MLXB_LIBRARY: "/nonexistent/libmlxb.so" } },
  { args: ["--model", FIXTURE, "--max-tokens", "2"], exit: 1, env: { MLXB_LIBRARY: join(FIXTURE, "config.json") } },
  {
    command: ["launch"],
    args: ["-n", "1", "--backend", "nccl", "--", "true"],
    exit: 1,
    env: { CUDA_VISIBLE_DEVICES: "" },
  },
  // GGUF files wherever a model directory goes.
  { args: ["--model", "/nonexistent/model.gguf"], exit: 2 },
  ...(existsSync(GGUF)
    ? [
        { args: ["--model", GGUF, "--max-tokens", "2"], exit: 0 },
        {
          args: ["--model", join(import.meta.dir, "..", "fixtures", "data", "bad-mamba.gguf"), "--max-tokens", "2"],
          exit: 1,
        },
      ]
    : []),
];
