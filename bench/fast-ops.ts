// Each fast op vs its decomposed equivalent (the graph kernels the rewriter replaces), on MLX,
// decode (1 token) and prefill (512 tokens) shapes. Times include one eval of the result.
import {
  type AttrsOf,
  MLX_KERNELS,
  type MlxTypes,
  type OpName,
  type RunContext,
  type Value,
} from "../src/graph/ops.ts";
import { fast, Tensor } from "../src/index.ts";
import { type Sample, table, timeNs } from "./stats.ts";

const HIDDEN = 2048;
const HEADS = 16;
const KV_HEADS = 4;
const HEAD_DIM = 128;
const INTERMEDIATE = 5632;
const CONTEXT = 512;

function random(shape: number[]): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37) * 0.5;
  return Tensor.from(data, shape).eval();
}

type TensorValue = Value<Tensor>;
const context: RunContext<MlxTypes> = { weights: new Map(), quantization: null, feeds: {}, cache: null };
function kernel<K extends OpName>(op: K, inputs: TensorValue[], attrs: AttrsOf<K>): TensorValue {
  return (MLX_KERNELS[op] as (inputs: TensorValue[], attrs: AttrsOf<K>, context: RunContext<MlxTypes>) => TensorValue)(
    inputs,
    attrs,
    context,
  );
}

function disposeValue(v: TensorValue): void {
  if (v instanceof Tensor) v.dispose();
  else if (Array.isArray(v)) v.forEach(disposeValue);
}

/** ns per call of `make` + eval of what it returns. */
function time(make: () => TensorValue): Sample {
  return timeNs(
    () => {
      const v = make();
      const all: Tensor[] = [];
      const walk = (x: TensorValue) =>
        x instanceof Tensor ? all.push(x) : Array.isArray(x) ? x.forEach(walk) : undefined;
      walk(v);
      for (const t of all) t.eval();
      disposeValue(v);
    },
    5,
    9,
    2,
  );
}

export function run(): Record<string, unknown> {
  const rows: (string | number)[][] = [];
  const results: Record<string, unknown> = {};
  for (const [label, tokens] of [
    ["decode", 1],
    ["prefill", CONTEXT],
  ] as const) {
    using x = random([1, tokens, HIDDEN]);
    using w = random([HIDDEN]);
    using bias = random([HIDDEN]);
    using q = random([1, HEADS, tokens, HEAD_DIM]);
    using k = random([1, HEADS, tokens, HEAD_DIM]);
    using keys = random([1, KV_HEADS, CONTEXT, HEAD_DIM]);
    using repeatedKeys = random([1, HEADS, CONTEXT, HEAD_DIM]);
    using gate = random([1, tokens, INTERMEDIATE]);
    using up = random([1, tokens, INTERMEDIATE]);
    const positions = Tensor.from(
      Int32Array.from({ length: tokens }, (_, i) => CONTEXT - tokens + i),
      [1, tokens],
    );
    const inverse = Tensor.from(
      Float32Array.from({ length: HEAD_DIM / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / HEAD_DIM)),
    );
    const offset = CONTEXT - tokens;
    const pairs: [string, () => TensorValue, () => TensorValue][] = [
      ["rms_norm", () => fast.rmsNorm(x, w, 1e-5), () => kernel("rms_norm", [x, w], { eps: 1e-5, shift: 0 })],
      [
        "layer_norm",
        () => fast.layerNorm(x, w, bias, 1e-5),
        () => kernel("layer_norm", [x, w, bias], { eps: 1e-5, axis: -1 }),
      ],
      [
        "rope (q and k)",
        () => [
          fast.rope(q, { dims: HEAD_DIM, base: 10000, offset }),
          fast.rope(k, { dims: HEAD_DIM, base: 10000, offset }),
        ],
        () =>
          kernel("apply_rotary_embedding", [q, k, positions, inverse], {
            dims: HEAD_DIM,
            base: 10000,
            scaling: { type: "none", factor: 1 },
          }),
      ],
      [
        "sdpa (GQA 16/4, causal)",
        () =>
          fast.scaledDotProductAttention(q, keys, keys, {
            scale: HEAD_DIM ** -0.5,
            mask: tokens === 1 ? null : "causal",
          }),
        () => {
          const weights = kernel("attention_weights", [q, repeatedKeys, null, offset], {
            scale: HEAD_DIM ** -0.5,
            causal: true,
          }) as Tensor;
          const out = kernel("attention_output", [weights, repeatedKeys], {});
          weights.dispose();
          return out;
        },
      ],
      [
        "swiglu",
        () => fast.swiglu(gate, up),
        () => {
          const activated = kernel("silu", [gate], {});
          const out = kernel("multiply", [[up, activated]], {});
          disposeValue(activated);
          return out;
        },
      ],
    ];
    for (const [name, fused, decomposed] of pairs) {
      const f = time(fused);
      const d = time(decomposed);
      rows.push([`${name} ${label}`, f.median / 1e3, d.median / 1e3, d.median / f.median, f.spread, d.spread]);
      results[`${name} ${label}`] = { fused: f, decomposed: d };
    }
    positions.dispose();
    inverse.dispose();
  }
  table(
    `Fast op vs decomposed on MLX (µs per call incl. eval; hidden ${HIDDEN}, ${HEADS}/${KV_HEADS} heads x ${HEAD_DIM}, context ${CONTEXT})`,
    ["op, shape", "fused µs", "decomposed µs", "speedup", "spread f", "spread d"],
    rows,
  );
  return results;
}
