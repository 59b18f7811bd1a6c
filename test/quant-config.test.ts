// mlx-lm's `quantization` block and the weight-map transforms built on it.
import { describe, expect, test } from "bun:test";
import { ops, quant, Tensor } from "../src/index.ts";
import { parseQuantConfig, quantizationFor } from "../src/quant/config.ts";
import { dequantizeWeights, quantizeParams, quantizeWeights, type WeightMap } from "../src/quant/weights.ts";
import { maxAbsDiff } from "./helpers.ts";

describe("parseQuantConfig / quantizationFor", () => {
  const config = parseQuantConfig({
    quantization: {
      group_size: 64,
      bits: 4,
      quant_method: "mlx",
      "model.layers.0.mlp.down_proj": false,
      lm_head: { bits: 8, group_size: 32 },
      "model.embed_tokens": { mode: "mxfp4", group_size: 32, bits: 4 },
    },
  });

  test("override > global > none; mode defaults to affine; unknown keys ignored", () => {
    expect(config!.global).toEqual({ mode: "affine", groupSize: 64, bits: 4 });
    expect(quantizationFor(config, "model.layers.0.self_attn.q_proj")).toEqual({
      mode: "affine",
      groupSize: 64,
      bits: 4,
    });
    expect(quantizationFor(config, "model.layers.0.mlp.down_proj.weight")).toBeNull();
    expect(quantizationFor(config, "lm_head")).toEqual({ mode: "affine", groupSize: 32, bits: 8 });
    expect(quantizationFor(config, "model.embed_tokens.scales")).toEqual({ mode: "mxfp4", groupSize: 32, bits: 4 });
    expect(config!.layers.has("quant_method")).toBe(false);
    expect(quantizationFor(null, "lm_head")).toBeNull();
  });

  test("quantization_config is read when quantization is absent; none gives null", () => {
    expect(parseQuantConfig({ quantization_config: { bits: 8, group_size: 32 } })!.global).toEqual({
      mode: "affine",
      groupSize: 32,
      bits: 8,
    });
    expect(parseQuantConfig({ hidden_size: 8 })).toBeNull();
    const onlyLayers = parseQuantConfig({ quantization: { lm_head: { bits: 8, group_size: 64 } } });
    expect(onlyLayers!.global).toBeNull();
    expect(quantizationFor(onlyLayers, "model.layers.0.q_proj")).toBeNull();
  });

  test("bad values name the key", () => {
    expect(() => parseQuantConfig({ quantization: { bits: "4" } })).toThrow(
      "quantization.bits must be a positive integer",
    );
    expect(() => parseQuantConfig({ quantization: { bits: 4, mode: "int4" } })).toThrow(
      "quantization: unknown quantization mode 'int4'",
    );
    expect(() => parseQuantConfig({ quantization: { bits: 4, lm_head: { group_size: -1 } } })).toThrow(
      "quantization.lm_head.group_size must be a positive integer",
    );
    expect(() => parseQuantConfig({ quantization: [4] })).toThrow("config.json: 'quantization' must be an object");
  });
});

function random(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = Math.sin((i + 1) * 12.9898 * seed) * 0.1;
  return Tensor.from(data, shape);
}

describe("quantizeWeights / dequantizeWeights", () => {
  const config = parseQuantConfig({
    quantization: { group_size: 64, bits: 4, "b.skip": false, "c.eight": { bits: 8, group_size: 64 } },
  })!;
  const dense = (): WeightMap =>
    new Map([
      ["a.weight", random([128, 128], 1)],
      ["a.bias", random([128], 2)],
      ["b.skip.weight", random([128, 128], 3)],
      ["c.eight.weight", random([64, 128], 4)],
      ["norm.weight", random([128], 5)],
      ["odd.weight", random([8, 100], 6)],
    ]);

  test("only eligible .weight keys are packed, honouring skip and override", () => {
    const map = dense();
    const q = quantizeWeights(map, config);
    expect([...q.keys()].sort()).toEqual(
      [
        "a.weight",
        "a.scales",
        "a.biases",
        "a.bias",
        "b.skip.weight",
        "c.eight.weight",
        "c.eight.scales",
        "c.eight.biases",
        "norm.weight",
        "odd.weight",
      ].sort(),
    );
    expect(q.get("a.weight")!.dtype).toBe("uint32");
    expect(q.get("a.weight")!.shape).toEqual([128, 16]);
    expect(q.get("c.eight.weight")!.shape).toEqual([64, 32]);
    expect(q.get("b.skip.weight")).toBe(map.get("b.skip.weight")!);
    expect(q.get("odd.weight")).toBe(map.get("odd.weight")!); // 100 not divisible by 64

    // Already-packed triples pass through untouched.
    const again = quantizeWeights(q, config);
    expect(again.get("a.weight")).toBe(q.get("a.weight")!);

    // Dequantize equals the op-level round trip.
    const back = dequantizeWeights(q, config);
    expect(back.has("a.scales") || back.has("a.biases")).toBe(false);
    const { weight, scales, biases } = quant.quantize(map.get("a.weight")!, { groupSize: 64, bits: 4 });
    const reference = quant.dequantize({ weight, scales, biases }, { groupSize: 64, bits: 4 });
    expect(maxAbsDiff(back.get("a.weight")!.toFloat32Array(), reference.toFloat32Array())).toBe(0);
  });

  test("the eligibility predicate is honoured", () => {
    const q = quantizeWeights(dense(), config, (path) => path !== "a.weight");
    expect(q.has("a.scales")).toBe(false);
    expect(q.has("c.eight.scales")).toBe(true);
  });

  test("malformed triples are errors naming the key", () => {
    const q = quantizeWeights(dense(), config);
    const without = (key: string) => new Map([...q].filter(([k]) => k !== key));
    expect(() => dequantizeWeights(without("a.weight"), config)).toThrow("'a.scales' has no 'a.weight'");
    expect(() => dequantizeWeights(without("a.biases"), config)).toThrow(
      "'a.biases' is missing (affine quantization needs biases)",
    );
    expect(() => dequantizeWeights(without("a.scales"), config)).toThrow("'a.biases' has no 'a.scales'");
    const wrongLead = new Map(q).set("a.scales", random([64, 2], 7));
    expect(() => dequantizeWeights(wrongLead, config)).toThrow(
      "'a.scales' leading dims [64] differ from 'a.weight' [128]",
    );
    const wrongRank = new Map(q).set("a.scales", random([2], 7));
    expect(() => dequantizeWeights(wrongRank, config)).toThrow("'a.scales' has rank 1 but 'a.weight' has rank 2");
    const wrongGroups = new Map(q).set("a.scales", random([128, 3], 7)).set("a.biases", random([128, 3], 8));
    expect(() => dequantizeWeights(wrongGroups, config)).toThrow(
      "'a.scales' has 3 groups but 'a.weight' unpacks to 128 features",
    );
    const intScales = new Map(q).set("a.scales", ops.astype(q.get("a.scales")!, "uint8"));
    expect(() => dequantizeWeights(intScales, config)).toThrow(
      "'a.scales' is uint8, but affine quantization stores float16, bfloat16 or float32 scales",
    );
    const mixed = new Map(q).set("a.biases", ops.astype(q.get("a.biases")!, "float16"));
    expect(() => dequantizeWeights(mixed, config)).toThrow("'a.biases' is float16 but 'a.scales' is float32");
    const skipped = new Map(q).set("b.skip.scales", random([128, 2], 9));
    expect(() => quantizeWeights(skipped, config)).toThrow(
      "'b.skip.scales' present but the config leaves 'b.skip' unquantized",
    );
  });

  test("quantizeParams: 2-D, both dims >= 2*group, in-features divisible, vocab-sized skipped", () => {
    const map: WeightMap = new Map([
      ["proj.weight", random([192, 128], 1)],
      ["small.weight", random([64, 128], 2)], // 64 < 2 * 64
      ["embed.weight", random([256, 128], 3)],
      ["norm.weight", random([128], 4)],
    ]);
    const { weights, config: made } = quantizeParams(map, { bits: 4, groupSize: 64, skipVocabThreshold: 256 });
    expect(weights.has("proj.scales")).toBe(true);
    expect(weights.has("small.scales")).toBe(false);
    expect(weights.has("embed.scales")).toBe(false); // 256 rows: vocab-sized
    expect(weights.has("norm.scales")).toBe(false);
    expect(quantizationFor(made, "proj")).toEqual({ mode: "affine", bits: 4, groupSize: 64 });
    expect(quantizationFor(made, "small")).toBeNull();
    expect(quantizationFor(made, "embed")).toBeNull();
  });
});
