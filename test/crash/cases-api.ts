// Hostile calls through the public API: gathers, dtypes, shapes and allocations, generation options,
// prompt ids, forward and caches by hand, configs that do not match their weights, broken files.
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createCache, forward, generateText, loadModel, ops, quant, Tensor, Tokenizer } from "../../src/index.ts";
import { add, brokenCopy, FIXTURE, generateOnCpu, generateWith, mlxModel, VOCAB } from "./harness.ts";

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
