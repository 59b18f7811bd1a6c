// Hostile calls: gathers and scatters with indices computed on the device, ranges, rope, memory
// limits, and constrained output.
import { DEFAULT_MODEL_DIR, fast, generateText, loadModel, memory, ops, Tensor, Tokenizer } from "../../src/index.ts";
import { add, generateWith, heads, table } from "./harness.ts";

// ---- indices computed on the device ----
// Gathers and scatters with indices computed on the device: clamped into the axis (JAX's default),
// never read past it. Each case checks the clamped values.
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
