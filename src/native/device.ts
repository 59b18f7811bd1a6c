// MLX version and the device MLX runs on. MLX picks the GPU by default where its build has one
// (the CUDA wheel on an NVIDIA machine, Metal on a Mac); setDevice switches the default device.
import { totalmem } from "node:os";
import { check, native } from "./ffi.ts";

export type DeviceKind = "gpu" | "cpu";

export interface DeviceInfo {
  device: DeviceKind;
  /** As MLX reports it: "NVIDIA H100 80GB HBM3", a CPU's model name, ... */
  name: string;
  /** Total memory of a GPU in bytes; 0 on the CPU (MLX reports none there). */
  memoryBytes: number;
  mlxVersion: string;
}

export function mlxVersion(): string {
  return String(native().mlx_version_string());
}

/** True when MLX's default device is a GPU. */
export function onGpu(): boolean {
  return native().mlx_default_device_is_gpu() === 1;
}

export function deviceInfo(): DeviceInfo {
  const name = new Uint8Array(256);
  const memory = new BigUint64Array(1);
  check(native().mlx_default_device_info(name, name.byteLength, memory), "deviceInfo");
  return {
    device: onGpu() ? "gpu" : "cpu",
    name: new TextDecoder().decode(name.subarray(0, name.indexOf(0))),
    memoryBytes: Number(memory[0]),
    mlxVersion: mlxVersion(),
  };
}

const GIB = 2 ** 30;

/** Bytes one allocation may take: on MLX's default device (`where` "mlx"), a GPU's memory, else RAM;
 * on the host, RAM; less 2 GiB of headroom (MLX does not check: an allocation past memory ends the
 * process). */
export function memoryBudget(where: "mlx" | "host" = "mlx"): number {
  const gpu = where === "mlx" && onGpu() ? deviceInfo().memoryBytes : 0;
  return (gpu > 0 ? gpu : totalmem()) - 2 * GIB;
}

/** An Error naming `what` when `bytes` exceed memoryBudget(where). */
export function checkAllocation(what: string, bytes: number, where: "mlx" | "host" = "mlx"): void {
  const budget = memoryBudget(where);
  if (bytes > budget) {
    throw new Error(
      `${what} needs ${(bytes / GIB).toFixed(2)} GiB, more than the ${(budget / GIB).toFixed(2)} GiB this device can hold (its memory less 2 GiB)`,
    );
  }
}

/** Makes `kind` MLX's default device for the ops that follow; an Error when this MLX build has no GPU. */
export function setDevice(kind: DeviceKind): void {
  if (kind !== "gpu" && kind !== "cpu") throw new Error(`setDevice: unknown device '${kind}' (valid: gpu, cpu)`);
  check(native().mlx_set_default_device_gpu(kind === "gpu" ? 1 : 0), `setDevice('${kind}')`);
}
