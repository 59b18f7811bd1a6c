// MLX version and the default device.
import { native } from "./ffi.ts";

export function mlxVersion(): string {
  return String(native().mlx_version_string());
}

export function deviceInfo(): { device: "gpu" | "cpu"; mlxVersion: string } {
  return { device: native().mlx_default_device_is_gpu() ? "gpu" : "cpu", mlxVersion: mlxVersion() };
}
