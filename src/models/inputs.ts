// What a forward's inputs must be before MLX sees them (token ids in range) and the positions it is
// fed.
import type { TensorData } from "../dtype.ts";
import { Tensor } from "../tensor.ts";

/** Positions offset + t, counted from each example's first real token when left-padded. */
export function positionsFrom(batch: number, length: number, offset: number, padding?: readonly number[]): Int32Array {
  const host = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < length; t++) host[b * length + t] = Math.max(0, offset + t - (padding?.[b] ?? 0));
  }
  return host;
}

/** Token ids whose values are on the host (a host tensor, or an MLX one made from host data) are
 * integers in [0, vocabulary): MLX would wrap a negative id and read past the table for a large one.
 * Ids computed on the device (an argmax) are in range by construction and are not read. */
export function checkIds(ids: TensorData, vocabulary: number, what = "forward: ids"): void {
  if (ids instanceof Tensor && !ids.available) return;
  const integral = !["float16", "float32", "float64", "bfloat16"].includes(ids.dtype);
  checkTokenIds(integral ? ids.toInt32Array() : ids.toFloat32Array(), vocabulary, what);
}

/** Every value an integer in [0, vocabulary): an Error naming `what` and the first one that is not. */
export function checkTokenIds(values: ArrayLike<number>, vocabulary: number, what: string): void {
  for (let i = 0; i < values.length; i++) {
    const id = values[i]!;
    if (!Number.isInteger(id) || id < 0 || id >= vocabulary)
      throw new Error(`${what}[${i}] is ${id}; token ids are integers in [0, ${vocabulary}) for this model`);
  }
}
