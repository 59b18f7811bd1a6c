// Backend kinds, the auto memory rule, per-op fallback, and generation on each backend.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { parseBackendKind, selectBackend, support, withFallback } from "../src/backend/dispatch.ts";
import { MLX_KERNELS } from "../src/graph/ops.ts";
import { runGraph } from "../src/graph/run.ts";
import { generateText } from "../src/engine/generate.ts";
import { deviceInfo, setDevice, Tensor } from "../src/index.ts";
import { KVCache } from "../src/kv-cache.ts";
import { forward, loadModel, tokenIds } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { decode, decodeIds, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const GIB = 2 ** 30;
const cases = fixture<Record<string, { prompt: EncodedArray; tokens: number[] }>>("models.json");
const dir = (name: string) => join(import.meta.dir, "fixtures", "data", "models", name);

describe("backend kinds and support()", () => {
  test("kinds parse case-insensitively; unknown ones list the valid values", () => {
    expect(parseBackendKind("CPU")).toBe("cpu");
    expect(parseBackendKind(" Mlx ")).toBe("mlx");
    expect(parseBackendKind("AUTO")).toBe("auto");
    expect(() => parseBackendKind("gpu")).toThrow("unknown backend 'gpu' (valid: cpu, mlx, auto)");
  });

  test("auto: MLX when the model x 1.5 fits total RAM - 2 GiB, else CPU with how to force MLX", () => {
    const cpu = { device: "cpu" as const, name: "AMD EPYC", memoryBytes: 0 };
    const loaded = { native: { available: true, reason: "shim loaded" }, ramBytes: 16 * GIB, device: cpu };
    expect(support("auto", 4 * GIB, loaded)).toMatchObject({ backend: "mlx", available: true, device: "cpu" });
    const big = support("auto", 10 * GIB, loaded);
    expect(big.backend).toBe("cpu");
    expect(big.reason).toContain("model needs 15.0 GiB (1.5 x 10.0 GiB) but 14.0 GiB of RAM is usable");
    expect(big.reason).toContain('backend: "mlx"');
    const missing = { native: { available: false, reason: "libmlxb.so not found" }, ramBytes: 16 * GIB };
    expect(support("auto", 1, missing)).toMatchObject({ backend: "cpu", available: true });
    // A library named by MLXB_LIBRARY that does not load is an error, not a reason to use the CPU.
    const named = {
      native: { available: false, reason: "MLXB_LIBRARY is /x.so, which does not exist", requested: true },
      ramBytes: 16 * GIB,
    };
    expect(support("auto", 1, named)).toEqual({
      available: false,
      backend: "mlx",
      device: "none",
      reason: "MLXB_LIBRARY is /x.so, which does not exist",
    });
    expect(support("mlx", 1, missing)).toEqual({
      available: false,
      backend: "mlx",
      device: "none",
      reason: "libmlxb.so not found",
    });
    expect(support("cpu")).toMatchObject({ backend: "cpu", available: true, device: "cpu" });
  });

  test("auto on a GPU measures the model against the GPU's memory, not RAM", () => {
    const gpu = { device: "gpu" as const, name: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * GIB };
    const host = { native: { available: true, reason: "shim loaded" }, ramBytes: 16 * GIB, device: gpu };
    expect(support("auto", 20 * GIB, host)).toMatchObject({ backend: "mlx", device: "gpu: NVIDIA H100 80GB HBM3" });
    const huge = support("auto", 60 * GIB, host);
    expect(huge.backend).toBe("cpu");
    expect(huge.reason).toContain("but 78.0 GiB of GPU memory is usable");
  });

  test("support() reports this machine's MLX device", () => {
    const info = deviceInfo();
    expect(support("mlx").device).toBe(info.device === "gpu" ? `gpu: ${info.name}` : "cpu");
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.mlxVersion).toMatch(/^\d+\.\d+\.\d+/);
  });

  test("setDevice switches MLX's default device, or says this build has no GPU", () => {
    const start = deviceInfo().device;
    expect(() => setDevice("tpu" as "gpu")).toThrow("setDevice: unknown device 'tpu' (valid: gpu, cpu)");
    setDevice("cpu");
    expect(deviceInfo().device).toBe("cpu");
    using a = Tensor.from([1, 2, 3]);
    expect([...a.toFloat32Array()]).toEqual([1, 2, 3]);
    if (start === "gpu") {
      setDevice("gpu");
      expect(deviceInfo().device).toBe("gpu");
    } else {
      expect(() => setDevice("gpu")).toThrow("setDevice('gpu'): no GPU device available in this MLX build");
      expect(deviceInfo().device).toBe("cpu");
    }
  });

  test("selectBackend logs one info line when auto falls back to the CPU", () => {
    const lines: string[] = [];
    expect(selectBackend("auto", 1e15, (l) => lines.push(l))).toBe("cpu");
    expect(lines.length).toBe(1);
    expect(selectBackend(" AUTO ", 1e15, (l) => lines.push(l))).toBe("cpu");
    expect(lines.length).toBe(2);
    expect(selectBackend("Auto", 1000, (l) => lines.push(l))).toBe("mlx");
    expect(lines.length).toBe(2);
  });
});

describe("per-op fallback", () => {
  test("an op failing on MLX runs on the CPU with one warning per op kind; results unchanged", () => {
    const model = loadModel(dir("qwen3"), { backend: "mlx" });
    const prompt = decode(cases.qwen3!.prompt);
    using expected = forward(model, prompt, { logits: "all" });
    const broken = {
      ...MLX_KERNELS,
      rms_norm: () => {
        throw new Error("injected MLX failure");
      },
    };
    const warnings: string[] = [];
    const kernels = withFallback(broken, undefined, (w) => warnings.push(w));
    const run = () => {
      const positions = Tensor.from(
        Int32Array.from({ length: prompt.shape[1]! }, (_, i) => i),
        [1, prompt.shape[1]!],
      );
      const feeds = { ids: prompt, positions, offset: 0, keyMask: null };
      const out = runGraph(model.graph("all"), kernels, {
        weights: model.weights,
        quantization: model.checkpoint.quantization,
        feeds,
        cache: null,
      });
      positions.dispose();
      return out.logits as Tensor;
    };
    using got = run();
    expect(maxAbsDiff(got.toFloat32Array(), expected.toFloat32Array())).toBeLessThanOrEqual(1e-4);
    using _again = run();
    expect(warnings).toEqual([
      "mlx-bun: op 'rms_norm' failed on MLX (injected MLX failure); running it on the CPU backend",
    ]);
    expect(Tensor.from([1]).size).toBe(1); // the process carries on
  });
});

describe("generate on every backend", () => {
  for (const name of Object.keys(cases)) {
    test(`${name}: models loaded for cpu, mlx and auto generate mlx-lm's greedy tokens`, async () => {
      const tokenizer = Tokenizer.fromDir(dir(name));
      const prompt = decodeIds(cases[name]!.prompt);
      for (const backend of ["cpu", "mlx", "auto"]) {
        const model = loadModel(dir(name), { backend });
        expect(model.backend).toBe(backend === "cpu" ? "cpu" : "mlx");
        const { tokens } = await generateText(model, tokenizer, prompt, { maxTokens: 8, ignoreEos: true });
        expect(tokens).toEqual(cases[name]!.tokens.slice(0, 8));
        model.dispose();
      }
    });
  }
});

describe("the CPU backend without MLX", () => {
  for (const name of Object.keys(cases)) {
    test(`${name}: host-loaded weights generate mlx-lm's tokens and create no MLX array`, async () => {
      const { liveTensorCount } = await import("../src/index.ts");
      const model = loadModel(dir(name), { backend: "cpu" });
      expect(model.backend).toBe("cpu");
      const tokenizer = Tokenizer.fromDir(dir(name));
      const prompt = (() => {
        using encoded = decode(cases[name]!.prompt);
        return Array.from(encoded.toInt32Array());
      })();
      // Tensors dropped earlier without dispose() are collected first, not counted in this test.
      Bun.gc(true);
      await Bun.sleep(10);
      const before = liveTensorCount();
      const { tokens } = await generateText(model, tokenizer, prompt, { maxTokens: 8, ignoreEos: true });
      // No MLX array made (the count may only drop, as the collector frees what others dropped).
      expect(liveTensorCount()).toBeLessThanOrEqual(before);
      expect(tokens).toEqual(cases[name]!.tokens.slice(0, 8));
      // The backend is the model's: an MLX cache cannot serve it.
      const { layers, kvHeads, headDim } = model.config;
      using mlxCache = new KVCache({ layers, batch: 1, heads: kvHeads, headDim, maxLength: 8 });
      expect(() => forward(model, tokenIds(model, [1], [1, 1]), { cache: mlxCache })).toThrow(
        "forward: the cache was made for the mlx backend, the model runs on cpu",
      );
    });
  }
});
