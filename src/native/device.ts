// MLX version and the device MLX runs on. MLX picks the GPU by default where its build has one
// (the CUDA wheel on an NVIDIA machine, Metal on a Mac); setDevice switches the default device.
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

/** Makes `kind` MLX's default device for the ops that follow; an Error when this MLX build has no GPU. */
export function setDevice(kind: DeviceKind): void {
  if (kind !== "gpu" && kind !== "cpu") throw new Error(`setDevice: unknown device '${kind}' (valid: gpu, cpu)`);
  check(native().mlx_set_default_device_gpu(kind === "gpu" ? 1 : 0), `setDevice('${kind}')`);
}
