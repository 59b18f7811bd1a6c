// Weights read into host memory without the native library: what the CPU reference backend runs on
// when the MLX shim cannot load. Same header validation as the mapped loader (safetensors.ts).
import { readFileSync } from "node:fs";
import { type DType, itemSize, type TensorData } from "../dtype.ts";
import { parseHeader } from "./safetensors.ts";

/** A tensor's raw bytes on the host, with the slice of Tensor's API that checkpoint loading and the
 * CPU kernels read (shape, dtype, bytes, float32 values). */
export class HostTensor implements TensorData {
  readonly bytes: Uint8Array;
  readonly shape: readonly number[];
  readonly dtype: DType;
  name: string | undefined;

  constructor(bytes: Uint8Array, shape: readonly number[], dtype: DType, name?: string) {
    this.bytes = bytes;
    this.shape = shape;
    this.dtype = dtype;
    this.name = name;
  }

  get ndim(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  get nbytes(): number {
    return this.bytes.byteLength;
  }

  get disposed(): boolean {
    return false;
  }

  toBytes(): Uint8Array {
    return this.bytes;
  }

  toFloat32Array(): Float32Array {
    const aligned = new Uint8Array(this.bytes); // copy: typed views need aligned offsets
    const { buffer } = aligned;
    switch (this.dtype) {
      case "float32":
        return new Float32Array(buffer);
      case "float16":
        return Float32Array.from(new Float16Array(buffer));
      case "bfloat16": {
        const out = new Uint32Array(this.size);
        const halves = new Uint16Array(buffer);
        for (let i = 0; i < out.length; i++) out[i] = halves[i]! << 16;
        return new Float32Array(out.buffer);
      }
      case "int32":
        return Float32Array.from(new Int32Array(buffer));
      case "uint32":
        return Float32Array.from(new Uint32Array(buffer));
      case "uint8":
        return Float32Array.from(aligned);
      default:
        throw new Error(`${this.name ?? "host tensor"}: ${this.dtype} cannot be read as float32 on the host`);
    }
  }

  toInt32Array(): Int32Array {
    return Int32Array.from(this.toFloat32Array());
  }

  dispose(): void {}
}

/** Every tensor of a .safetensors file, read into host memory. */
export function loadSafetensorsHost(path: string): {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
} {
  const file = new Uint8Array(readFileSync(path));
  const header = parseHeader(file, file.byteLength, path);
  const tensors = new Map<string, HostTensor>();
  for (const [name, e] of header.tensors) {
    const bytes = file.subarray(header.dataStart + e.begin, header.dataStart + e.end);
    if (bytes.byteLength !== e.shape.reduce((a, b) => a * b, 1) * itemSize(e.dtype))
      throw new Error(`${path}: tensor '${name}': byte span mismatch`);
    tensors.set(name, new HostTensor(bytes, e.shape, e.dtype, name));
  }
  return { tensors, metadata: header.metadata };
}
