// quantize / dequantize / quantizedMatmul against Python MLX (scripts/fixtures/quant.py).
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { deviceInfo, quant, type Tensor } from "../src/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff, ORACLE_PYTHON } from "./helpers.ts";

interface Case {
  mode: quant.QuantMode;
  groupSize: number;
  bits: number;
  weight: EncodedArray;
  scales: EncodedArray;
  biases: EncodedArray | null;
  dequantized: EncodedArray;
  matmul: EncodedArray;
  matmulNoTranspose: EncodedArray;
  roundTripMaxError: number;
}

type Data = { w: EncodedArray; x: EncodedArray; xt: EncodedArray; cases: Case[] };

/** The oracle on this device: the fixture (Python MLX on the CPU), or on a GPU the same script run
 * now by Python MLX on the GPU, whose kernels round a few values otherwise (8-bit affine with group
 * 128, mxfp4, nvfp4 differ from the CPU's bytes on an H200). */
function oracle(): Data {
  if (deviceInfo().device !== "gpu") return fixture<Data>("quant.json");
  const out = mkdtempSync(join(tmpdir(), "mlxb-quant-oracle-"));
  try {
    const script = join(import.meta.dir, "..", "scripts", "fixtures", "quant.py");
    const run = Bun.spawnSync([ORACLE_PYTHON, script], { env: { ...process.env, MLXB_FIXTURES_OUT: out }, stderr: "pipe" });
    if (run.exitCode !== 0) throw new Error(`Python MLX on the GPU: ${run.stderr.toString()}`);
    return JSON.parse(readFileSync(join(out, "quant.json"), "utf8")) as Data;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const data = oracle();

function sameBytes(got: Tensor, expected: Tensor): void {
  expect(got.shape).toEqual(expected.shape);
  expect(got.dtype).toBe(expected.dtype);
  expect(Buffer.compare(got.toBytes(), expected.toBytes())).toBe(0);
}

describe("quantization vs Python MLX", () => {
  const w = decode(data.w);
  const x = decode(data.x);
  const xt = decode(data.xt);

  for (const c of data.cases) {
    const params = { mode: c.mode, groupSize: c.groupSize, bits: c.bits };
    test(`${c.mode} ${c.bits}-bit group ${c.groupSize}`, () => {
      const q = quant.quantize(w, params);
      try {
        sameBytes(q.weight, decode(c.weight));
        sameBytes(q.scales, decode(c.scales));
        if (c.biases) sameBytes(q.biases!, decode(c.biases));
        else expect(q.biases).toBeNull();

        using deq = quant.dequantize(q, params);
        expect(maxAbsDiff(deq.toFloat32Array(), decode(c.dequantized).toFloat32Array())).toBeLessThanOrEqual(1e-5);
        using y = quant.quantizedMatmul(x, q, params);
        expect(maxAbsDiff(y.toFloat32Array(), decode(c.matmul).toFloat32Array())).toBeLessThanOrEqual(1e-5);
        using yt = quant.quantizedMatmul(xt, q, { ...params, transpose: false });
        expect(maxAbsDiff(yt.toFloat32Array(), decode(c.matmulNoTranspose).toFloat32Array())).toBeLessThanOrEqual(1e-5);

        // Round trip: our error equals the one Python MLX measured on the same weight.
        const err = maxAbsDiff(deq.toFloat32Array(), w.toFloat32Array());
        expect(Math.abs(err - c.roundTripMaxError)).toBeLessThanOrEqual(1e-7);
      } finally {
        quant.disposeQuantized(q);
      }
    });
  }

  test("defaults per mode", () => {
    expect(quant.quantParams()).toEqual({ mode: "affine", groupSize: 64, bits: 4 });
    expect(quant.quantParams({ mode: "nvfp4" })).toEqual({ mode: "nvfp4", groupSize: 16, bits: 4 });
    expect(quant.quantParams({ mode: "mxfp8" })).toEqual({ mode: "mxfp8", groupSize: 32, bits: 8 });
  });

  test("unsupported combinations give MLX's message; unknown modes list the valid ones", () => {
    expect(() => quant.quantize(w, { bits: 7 })).toThrow(/quantize\(tensor\[64,256\] float32, affine 7-bit group 64\): .*bits 7 is not supported/);
    expect(() => quant.quantize(w, { mode: "mxfp4", groupSize: 64 })).toThrow(/quantize\(.*mxfp4.*\): /);
    expect(() => quant.quantize(w, { mode: "int4" as never })).toThrow("unknown quantization mode 'int4' (valid: affine, mxfp4, mxfp8, nvfp4)");
  });
});
