// Gathers and scatters along an axis. MLX does not bound-check their indices (an index past the end
// reads or writes anywhere), so the shim checks indices whose values are on the host and clamps the
// others on the device into [-size, size - 1], as JAX does by default. The public ops (re-exported by
// core.ts) always do; takeAlongAxisInRange is for indices in range by construction (an argmax or a
// partition over the same axis) and skips the clamp: not public.
import type { Tensor } from "../tensor.ts";
import { call, handleOf, int32 } from "./call.ts";

function gather(op: "take" | "takeAlongAxis", a: Tensor, indices: Tensor, axis: number, inRange: boolean): Tensor {
  const ha = handleOf(a, op, "a");
  const hi = handleOf(indices, op, "indices");
  const ax = int32(axis, op, "axis");
  const vouched = inRange ? 1 : 0;
  return op === "take"
    ? call(op, (lib, out) => lib.mlx_take(out, ha, hi, ax, vouched))
    : call(op, (lib, out) => lib.mlx_take_along_axis(out, ha, hi, ax, vouched));
}

function scatter(
  op: "putAlongAxis" | "scatterAddAxis",
  a: Tensor,
  indices: Tensor,
  values: Tensor,
  axis: number,
): Tensor {
  const ha = handleOf(a, op, "a");
  const hi = handleOf(indices, op, "indices");
  const hv = handleOf(values, op, "values");
  const ax = int32(axis, op, "axis");
  return op === "putAlongAxis"
    ? call(op, (lib, out) => lib.mlx_put_along_axis(out, ha, hi, hv, ax, 0))
    : call(op, (lib, out) => lib.mlx_scatter_add_axis(out, ha, hi, hv, ax, 0));
}

/** Gathers `indices` along `axis` (embedding lookup: take(table, ids, 0)). */
export function take(a: Tensor, indices: Tensor, axis = 0): Tensor {
  return gather("take", a, indices, axis, false);
}

/** a's values at `indices` along `axis` (numpy's take_along_axis; indices of a's rank). */
export function takeAlongAxis(a: Tensor, indices: Tensor, axis = -1): Tensor {
  return gather("takeAlongAxis", a, indices, axis, false);
}

/** `a` with `values` written at `indices` along `axis` (numpy's put_along_axis). */
export function putAlongAxis(a: Tensor, indices: Tensor, values: Tensor, axis = -1): Tensor {
  return scatter("putAlongAxis", a, indices, values, axis);
}

/** `a` with `values` added at `indices` along `axis`; repeated indices add up. */
export function scatterAddAxis(a: Tensor, indices: Tensor, values: Tensor, axis = -1): Tensor {
  return scatter("scatterAddAxis", a, indices, values, axis);
}

/** takeAlongAxis() for indices in range by construction: not clamped. */
export function takeAlongAxisInRange(a: Tensor, indices: Tensor, axis = -1): Tensor {
  return gather("takeAlongAxis", a, indices, axis, true);
}
