// Backend selection and per-op fallback. A backend is a kernel table for the graph executor:
// `mlx` (graph/kernels.ts), `cpu` (cpu-kernels.ts), or `mlx` with each op that fails on MLX retried on
// the CPU (one warning per op kind). `auto` picks MLX when the shim loads and the model fits memory.
import { totalmem } from "node:os";
import type { Kernel } from "../graph/kernels.ts";
import { kernels as mlxKernels } from "../graph/kernels.ts";
import type { Value } from "../graph/run.ts";
import { type DeviceInfo, deviceInfo } from "../native/device.ts";
import { nativeStatus } from "../native/ffi.ts";
import { Tensor } from "../tensor.ts";
import { CpuTensor } from "./cpu.ts";
import { cpuKernels } from "./cpu-kernels.ts";

export const BACKEND_KINDS = ["cpu", "mlx", "auto"] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

export interface Backend {
  name: "cpu" | "mlx";
  kernels: Record<string, Kernel>;
}

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
  native: { available: boolean; reason: string };
  ramBytes: number;
  device?: Pick<DeviceInfo, "device" | "name" | "memoryBytes">;
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
  if (kind === "cpu") return { available: true, backend: "cpu", device: "cpu", reason: "CPU reference backend requested" };
  const { native, device } = host;
  const where = device ? (device.device === "gpu" ? `gpu: ${device.name}` : "cpu") : "none";
  if (kind === "mlx") return { available: native.available, backend: "mlx", device: where, reason: native.reason };
  if (!native.available) {
    return { available: true, backend: "cpu", device: "cpu", reason: `MLX unavailable (${native.reason}); using the CPU reference backend` };
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
  return { available: true, backend: "mlx", device: where, reason: `MLX shim loaded and the model fits ${gpuMemory ? "GPU memory" : "RAM"}` };
}

function hasHostTensor(v: Value): boolean {
  return v instanceof CpuTensor || (Array.isArray(v) && v.some(hasHostTensor));
}

function toCpuValue(v: Value): Value {
  if (v instanceof Tensor) return new CpuTensor(v.toFloat32Array(), [...v.shape]);
  return Array.isArray(v) ? v.map(toCpuValue) : v;
}

function toMlxValue(v: Value): Value {
  if (v instanceof CpuTensor) return Tensor.from(v.data, [...v.shape]);
  return Array.isArray(v) ? v.map(toMlxValue) : v;
}

/** MLX kernels whose failures fall back, per op, to the CPU kernels (one warning per op kind). */
export function withFallback(
  primary: Record<string, Kernel> = mlxKernels,
  fallback: Record<string, Kernel> = cpuKernels,
  warn: (message: string) => void = console.warn,
): Record<string, Kernel> {
  const warned = new Set<string>();
  const table: Record<string, Kernel> = {};
  for (const [op, kernel] of Object.entries(primary)) {
    table[op] = (inputs, node, context) => {
      const needsUpload = inputs.some(hasHostTensor);
      try {
        return kernel(needsUpload ? inputs.map(toMlxValue) : inputs, node, context);
      } catch (e) {
        const cpuKernel = fallback[op];
        // native_attention updates the KV cache's own containers in place; a CPU retry would update copies.
        if (!cpuKernel || op === "native_attention") throw e;
        if (!warned.has(op)) {
          warned.add(op);
          warn(`mlx-bun: op '${op}' failed on MLX (${(e as Error).message}); running it on the CPU backend`);
        }
        return toMlxValue(cpuKernel(inputs.map(toCpuValue), node, context));
      }
    };
  }
  return table;
}

/** The backend for a kind and model size; throws when MLX is requested but cannot load. */
export function selectBackend(kind: BackendKind | string, modelBytes = 0, log: (message: string) => void = console.info): Backend {
  const parsed = parseBackendKind(kind);
  const s = support(parsed, modelBytes);
  if (!s.available) throw new Error(`backend 'mlx' requested but unavailable: ${s.reason}`);
  if (parsed === "auto" && s.backend === "cpu") log(`mlx-bun: ${s.reason}`);
  return s.backend === "cpu" ? { name: "cpu", kernels: cpuKernels } : { name: "mlx", kernels: withFallback() };
}
