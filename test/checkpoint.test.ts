// Checkpoints written by mlx-lm (scripts/fixtures/checkpoint.py): loading, packed layers running through
// quantizedMatmul, and our weight-map quantization reproducing mlx-lm's bit for bit.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { loadCheckpoint } from "../src/io/checkpoint.ts";
import { ops } from "../src/index.ts";
import { linear } from "../src/quant/linear.ts";
import { quantizeWeights } from "../src/quant/weights.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const dir = (name: string) => join(import.meta.dir, "fixtures", "data", "checkpoints", name);
const oracle = fixture<{
  x: EncodedArray;
  xDown: EncodedArray;
  linears: Record<string, { quantized: boolean; output: EncodedArray }>;
}>("checkpoint.json");

describe("loadCheckpoint (mlx-lm 4-bit llama)", () => {
  const ckpt = loadCheckpoint(dir("llama-4bit"));
  const x = decode(oracle.x);
  const xDown = decode(oracle.xDown);

  test("config and per-layer quantization are read", () => {
    expect(ckpt.config.model_type).toBe("llama");
    expect(ckpt.quantization!.global).toEqual({ mode: "affine", groupSize: 64, bits: 4 });
    expect(ckpt.weights.get("model.layers.0.self_attn.q_proj.weight")!.dtype).toBe("uint32");
    expect(ckpt.weights.get("lm_head.weight")!.shape).toEqual([512, 32]); // 8-bit: 128 * 8 / 32
    expect(ckpt.weights.get("model.layers.1.mlp.down_proj.weight")!.dtype).toBe("float32"); // kept dense
  });

  test("every linear equals mlx-lm's (Quantized)Linear on the same input", () => {
    const paths = Object.keys(oracle.linears);
    expect(paths.length).toBe(2 * 7 + 1);
    for (const path of paths) {
      const { quantized, output } = oracle.linears[path]!;
      expect(ckpt.weights.has(`${path}.scales`)).toBe(quantized);
      using y = linear(path.endsWith("down_proj") ? xDown : x, ckpt.weights, path, ckpt.quantization);
      const err = maxAbsDiff(y.toFloat32Array(), decode(output).toFloat32Array());
      if (err > 1e-5) throw new Error(`${path}: max abs err ${err}`);
    }
  });

  test("linear re-resolves a layer whose tensors or quantization changed in the map", () => {
    const path = "model.layers.1.mlp.down_proj"; // dense in this checkpoint
    const weights = new Map(ckpt.weights);
    using before = linear(xDown, weights, path, ckpt.quantization);
    using doubled = ops.multiply(weights.get(`${path}.weight`)!, 2);
    weights.set(`${path}.weight`, doubled);
    using after = linear(xDown, weights, path, ckpt.quantization);
    expect(
      maxAbsDiff(
        after.toFloat32Array(),
        before.toFloat32Array().map((v) => 2 * v),
      ),
    ).toBeLessThanOrEqual(1e-5);
    weights.delete(`${path}.weight`);
    expect(() => linear(xDown, weights, path, ckpt.quantization)).toThrow(`linear: no weight '${path}.weight'`);
    const packed = "model.layers.0.self_attn.q_proj";
    expect(() => linear(x, ckpt.weights, packed, null)).toThrow(
      `linear: '${packed}' is packed but the quantization config leaves it dense`,
    );
  });

  test("the sharded copy with an index loads the same tensors", () => {
    const sharded = loadCheckpoint(dir("llama-4bit-sharded"));
    expect([...sharded.weights.keys()].sort()).toEqual([...ckpt.weights.keys()].sort());
    for (const [k, t] of sharded.weights) expect(Buffer.compare(t.toBytes(), ckpt.weights.get(k)!.toBytes())).toBe(0);
    sharded.dispose();
  });

  test("quantizeWeights on the dense checkpoint reproduces mlx-lm's packed weights bit for bit", () => {
    const dense = loadCheckpoint(dir("llama-dense"));
    const packed = quantizeWeights(dense.weights, ckpt.quantization!);
    expect([...packed.keys()].sort()).toEqual([...ckpt.weights.keys()].sort());
    for (const [k, t] of ckpt.weights) {
      if (Buffer.compare(packed.get(k)!.toBytes(), t.toBytes()) !== 0) throw new Error(`${k} differs`);
    }
    dense.dispose();
  });

  test("dispose frees every weight", () => {
    const other = loadCheckpoint(dir("llama-4bit"));
    const any = other.weights.get("lm_head.scales")!;
    other.dispose();
    expect(any.disposed).toBe(true);
  });
});
