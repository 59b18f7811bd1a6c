// Backend selection (once, at loadModel) and per-op fallback. A backend is one column of the op table
// (graph/ops.ts): `mlx` (each op that fails on MLX retried on the CPU, one warning per op kind) or
// `cpu` (the pure-TS reference). `auto` picks MLX when the shim loads and the model fits memory.
import { totalmem } from "node:os";
import type { TensorData } from "../dtype.ts";
import {
  CPU_KERNELS,
  type CpuTypes,
  type Kernel,
  type KernelTable,
  MLX_KERNELS,
  type MlxTypes,
  type OpName,
  type RunContext,
  type Value,
} from "../graph/ops.ts";
import { type DeviceInfo, deviceInfo } from "../native/device.ts";
import { nativeStatus } from "../native/ffi.ts";
import { CpuTensor } from "../ops/cpu.ts";
import { Tensor } from "../tensor.ts";

export const BACKEND_KINDS = ["cpu", "mlx", "auto"] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

/** Parses "CPU", "mlx", "Auto", ... with an Error listing the valid values. */
export function parseBackendKind(value: string): BackendKind {
  const kind = value.trim().toLowerCase();
  if (!(BACKEND_KINDS as readonly string[]).includes(kind)) {
    throw new Error(`unknown backend '${value}' (valid: ${BACKEND_KINDS.join(", ")})`);
  }
  return kind as BackendKind;
}

export interface Support {
  available: boolean;
  backend: "cpu" | "mlx";
  /** Where the backend runs: "cpu", or MLX's default device ("gpu: NVIDIA H100 80GB HBM3", "cpu"). */
  device: string;
  reason: string;
}

/** What support() decides from: the shim, host RAM and, when the shim loads, MLX's default device. */
export interface Host {
  native: { available: boolean; reason: string; requested?: boolean };
  ramBytes: number;
  device?: Pick<DeviceInfo, "device" | "name" | "memoryBytes"> | undefined;
}

export function currentHost(): Host {
  const status = nativeStatus();
  return { native: status, ramBytes: totalmem(), device: status.available ? deviceInfo() : undefined };
}

const GIB = 2 ** 30;

/** The backend a kind resolves to for a model of `modelBytes`, and why. `auto`: MLX when the shim
 * loads and modelBytes x 1.5 <= the memory of MLX's device - 2 GiB (a GPU's own memory, else RAM),
 * else the CPU reference backend. The host can be injected for tests. */
export function support(kind: BackendKind, modelBytes = 0, host: Host = currentHost()): Support {
  if (kind === "cpu")
    return { available: true, backend: "cpu", device: "cpu", reason: "CPU reference backend requested" };
  const { native, device } = host;
  const where = device ? (device.device === "gpu" ? `gpu: ${device.name}` : "cpu") : "none";
  if (kind === "mlx") return { available: native.available, backend: "mlx", device: where, reason: native.reason };
  // A library named by MLXB_LIBRARY that does not load is the user's mistake to hear about, not a
  // reason to run on the CPU reference backend instead.
  if (!native.available && native.requested)
    return { available: false, backend: "mlx", device: "none", reason: native.reason };
  if (!native.available) {
    return {
      available: true,
      backend: "cpu",
      device: "cpu",
      reason: `MLX unavailable (${native.reason}); using the CPU reference backend`,
    };
  }
  const gpuMemory = device?.device === "gpu" && device.memoryBytes > 0;
  const budget = (gpuMemory ? device.memoryBytes : host.ramBytes) - 2 * GIB;
  if (modelBytes * 1.5 > budget) {
    const need = ((modelBytes * 1.5) / GIB).toFixed(1);
    return {
      available: true,
      backend: "cpu",
      device: "cpu",
      reason: `model needs ${need} GiB (1.5 x ${(modelBytes / GIB).toFixed(1)} GiB) but ${(budget / GIB).toFixed(1)} GiB of ${gpuMemory ? "GPU memory" : "RAM"} is usable; using the CPU backend (pass backend: "mlx" to force MLX)`,
    };
  }
  return {
    available: true,
    backend: "mlx",
    device: where,
    reason: `MLX shim loaded and the model fits ${gpuMemory ? "GPU memory" : "RAM"}`,
  };
}

function toCpuValue(v: Value<Tensor>): Value<CpuTensor> {
  if (v instanceof Tensor) return new CpuTensor(v.toFloat32Array(), [...v.shape]);
  return Array.isArray(v) ? v.map(toCpuValue) : (v as number | null);
}

function toMlxValue(v: Value<CpuTensor>): Value<Tensor> {
  if (v instanceof CpuTensor) return Tensor.from(v.data, [...v.shape]);
  return Array.isArray(v) ? v.map(toMlxValue) : (v as number | null);
}

/** The MLX run context as the CPU kernels see it: the same weights (read to the host on use), the
 * cache's updates made on its own buffers and read back. */
function cpuContext(context: RunContext<MlxTypes>): RunContext<CpuTypes> {
  const { cache } = context;
  return {
    weights: context.weights as ReadonlyMap<string, TensorData>,
    quantization: context.quantization,
    feeds: Object.fromEntries(Object.entries(context.feeds).map(([k, v]) => [k, toCpuValue(v)])),
    cache: cache && {
      updateAndFetch(layer, keys, values) {
        using k = Tensor.from(keys.data, [...keys.shape], "float32");
        using v = Tensor.from(values.data, [...values.shape], "float32");
        const [allKeys, allValues] = cache.updateAndFetch(layer, k, v);
        using kk = allKeys;
        using vv = allValues;
        return [toCpuValue(kk) as CpuTensor, toCpuValue(vv) as CpuTensor];
      },
    },
  };
}

let fallbacks = 0;

/** How many op runs have fallen back from MLX to the CPU kernels in this process (a test that
 * expects none catches an internal error that the fallback would only make slow). */
export function fallbackCount(): number {
  return fallbacks;
}

/** MLX kernels whose failures fall back, per op, to the CPU kernels (one warning per op kind). */
export function withFallback(
  primary: KernelTable<MlxTypes> = MLX_KERNELS,
  fallback: KernelTable<CpuTypes> = CPU_KERNELS,
  warn: (message: string) => void = console.warn,
): KernelTable<MlxTypes> {
  const warned = new Set<string>();
  const table: Partial<Record<OpName, Kernel<unknown, MlxTypes>>> = {};
  for (const op of Object.keys(primary) as OpName[]) {
    const kernel = primary[op] as Kernel<unknown, MlxTypes>;
    const cpuKernel = fallback[op] as Kernel<unknown, CpuTypes>;
    table[op] = (inputs, attrs, context) => {
      try {
        return kernel(inputs, attrs, context);
      } catch (e) {
        fallbacks++;
        if (!warned.has(op)) {
          warned.add(op);
          warn(`mlx-bun: op '${op}' failed on MLX (${(e as Error).message}); running it on the CPU backend`);
        }
        return toMlxValue(cpuKernel(inputs.map(toCpuValue), attrs, cpuContext(context)));
      }
    };
  }
  return table as KernelTable<MlxTypes>;
}

/** The backend for a kind and model size; throws when MLX is requested but cannot load. */
export function selectBackend(
  kind: BackendKind | string,
  modelBytes = 0,
  log: (message: string) => void = console.info,
): "cpu" | "mlx" {
  const parsed = parseBackendKind(kind);
  const s = support(parsed, modelBytes);
  if (!s.available) throw new Error(`backend '${parsed}' cannot run on MLX: ${s.reason}`);
  if (parsed === "auto" && s.backend === "cpu") log(`mlx-bun: ${s.reason}`);
  return s.backend;
}
