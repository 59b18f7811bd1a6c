// Safetensors header limits, corrupt and truncated files (fuzzed), and round trips read by Python MLX.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ops, Tensor } from "../src/index.ts";
import { loadSafetensors, parseHeader, saveSafetensors } from "../src/io/safetensors.ts";
import { ORACLE_PYTHON } from "./helpers.ts";

const work = mkdtempSync(join(tmpdir(), "mlxb-st-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function file(header: unknown, data = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}
const parse = (bytes: Uint8Array) => parseHeader(bytes, bytes.byteLength, "t.safetensors");

describe("safetensors header limits", () => {
  const f32 = (begin: number, end: number, shape: number[]) => ({ dtype: "F32", shape, data_offsets: [begin, end] });

  test("a valid header parses", () => {
    const h = parse(
      file({ a: f32(0, 8, [2]), b: f32(8, 12, [1]), __metadata__: { format: "mlx" } }, new Uint8Array(12)),
    );
    expect(h.tensors.get("a")).toEqual({ dtype: "float32", shape: [2], begin: 0, end: 8 });
    expect(h.metadata).toEqual({ format: "mlx" });
  });

  test.each([
    ["header length beyond the cap", file({}, undefined, 200_000_000n), /exceeds the 100000000-byte cap/],
    ["header length past the end", file({}, undefined, 1000n), /runs past the end .*truncated/],
    ["too short for the length", new Uint8Array(5), /fewer than the 8-byte header length/],
    ["not JSON", file("{nope"), /header is not valid UTF-8 JSON/],
    ["not an object", file("[1,2]"), /header is not a JSON object/],
    [
      "dtype off the whitelist",
      file({ a: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1)),
      /tensor 'a': dtype "F8_E4M3" is not one of/,
    ],
    ["negative dim", file({ a: f32(0, 4, [-1]) }, new Uint8Array(4)), /tensor 'a': shape \[-1\]/],
    [
      "offsets out of bounds",
      file({ a: f32(0, 8, [2]) }, new Uint8Array(4)),
      /tensor 'a': data_offsets end 8 beyond the 4-byte data section/,
    ],
    ["begin after end", file({ a: f32(8, 4, [1]) }, new Uint8Array(8)), /tensor 'a': data_offsets begin 8 > end 4/],
    [
      "span not matching shape",
      file({ a: f32(0, 8, [3]) }, new Uint8Array(8)),
      /tensor 'a': shape \[3\] of F32 needs 12 bytes but data_offsets span 8/,
    ],
    ["overlap", file({ a: f32(0, 8, [2]), b: f32(4, 12, [2]) }, new Uint8Array(12)), /tensors 'a' and 'b' overlap/],
    ["metadata not strings", file({ __metadata__: { n: 1 } }), /__metadata__.n is not a string/],
  ])("%s", (_, bytes, message) => {
    expect(() => parse(bytes as Uint8Array)).toThrow(message as RegExp);
  });

  test("fuzz: random corruption and truncation never crash, only throw Error or load", () => {
    const t = new Map([
      [
        "w",
        Tensor.from(
          new Float32Array(64).map((_, i) => i),
          [8, 8],
        ),
      ],
      ["ids", Tensor.from(new Int32Array([1, 2, 3]), [3])],
    ]);
    const path = join(work, "good.safetensors");
    saveSafetensors(path, t);
    const good = new Uint8Array(readFileSync(path));
    let seed = 42;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    let errors = 0;
    let loads = 0;
    for (let i = 0; i < 600; i++) {
      const bytes = good.slice(0, i % 3 === 0 ? rand(good.byteLength) : good.byteLength);
      for (let k = 0; k < 1 + rand(4); k++)
        if (bytes.byteLength > 0) bytes[rand(Math.min(bytes.byteLength, 140))] = rand(256);
      const p = join(work, `fuzz${i}.safetensors`);
      writeFileSync(p, bytes);
      try {
        const { tensors } = loadSafetensors(p);
        for (const x of tensors.values()) {
          x.eval();
          x.dispose();
        }
        loads++;
      } catch (e) {
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message).toContain(p);
        errors++;
      }
    }
    expect(errors).toBeGreaterThan(100);
    expect(errors + loads).toBe(600);
  });
});

describe("safetensors data", () => {
  test("tensors we write are read back by Python MLX unchanged, and ours read Python's", () => {
    const path = join(work, "rt.safetensors");
    const values = new Float32Array([1.5, -2, 3.25, 0, 7, 1e-3]);
    saveSafetensors(
      path,
      new Map([
        ["a", Tensor.from(values, [2, 3])],
        ["b", Tensor.from(values, [6], "bfloat16")],
        ["c", Tensor.from(new Uint8Array([1, 2, 255]), [3])],
      ]),
      { format: "mlx" },
    );
    const py = Bun.spawnSync([
      ORACLE_PYTHON,
      "-c",
      `import mlx.core as mx, sys, json
d, meta = mx.load(sys.argv[1], return_metadata=True)
print(json.dumps({k: [str(v.dtype), v.shape, v.astype(mx.float32).tolist()] for k, v in d.items()} | {"meta": meta}))
mx.save_safetensors(sys.argv[1] + ".py.safetensors", {"z": d["a"] * 2, "q": d["b"]}, metadata={"by": "python"})`,
      path,
    ]);
    expect(py.exitCode).toBe(0);
    const seen = JSON.parse(py.stdout.toString());
    expect(seen.a).toEqual([
      "mlx.core.float32",
      [2, 3],
      [
        [1.5, -2, 3.25],
        [0, 7, 0.0010000000474974513],
      ],
    ]);
    expect(seen.b[0]).toBe("mlx.core.bfloat16");
    expect(seen.c).toEqual(["mlx.core.uint8", [3], [1, 2, 255]]);
    expect(seen.meta).toEqual({ format: "mlx" });
    const back = loadSafetensors(`${path}.py.safetensors`);
    expect(back.metadata).toEqual({ by: "python" });
    expect(Array.from(back.tensors.get("z")!.toFloat32Array())).toEqual(Array.from(values, (v) => 2 * v));
    expect(back.tensors.get("q")!.dtype).toBe("bfloat16");
  });

  test("mapped tensors survive the loader and stay valid after other tensors are freed", () => {
    const path = join(work, "keep.safetensors");
    saveSafetensors(
      path,
      new Map([
        ["a", Tensor.from([1, 2, 3])],
        ["b", Tensor.from([4, 5])],
      ]),
    );
    const { tensors } = loadSafetensors(path);
    tensors.get("a")!.dispose();
    Bun.gc(true);
    expect(Array.from(tensors.get("b")!.toFloat32Array())).toEqual([4, 5]);
    // Writes into a donated mapped buffer stay private: the file is unchanged.
    const b = tensors.get("b")!;
    tensors.delete("b");
    using doubled = ops.multiply(b, 2);
    b.dispose();
    expect(Array.from(doubled.toFloat32Array())).toEqual([8, 10]);
    expect(Array.from(loadSafetensors(path).tensors.get("b")!.toFloat32Array())).toEqual([4, 5]);
  });
});
