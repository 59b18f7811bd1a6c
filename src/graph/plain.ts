// MLX compositions of plain ops that the layer kernels in ops.ts share: rotate-half RoPE tables and
// the additive attention mask. Results keep the activations' dtype (a float32 table or mask would
// promote bfloat16 activations to float32, as mlx-lm's do not).
import type { DType } from "../dtype.ts";
import * as core from "../ops/core.ts";
import { Tensor } from "../tensor.ts";

function rotateHalf(x: Tensor): Tensor {
  const half = x.shape[x.ndim - 1]! / 2;
  const start = x.shape.map(() => 0);
  const stop = [...x.shape];
  using x1 = core.slice(x, start, [...stop.slice(0, -1), half]);
  using x2 = core.slice(x, [...start.slice(0, -1), half], stop);
  using negated = core.negative(x2);
  return core.concatenate([negated, x1], -1);
}

/** cos and sin of positions x inverse frequencies, duplicated to `dims` (rotate-half layout),
 * [B, 1, T, dims], computed in float32 and given the activations' dtype. */
export function rotaryTables(positions: Tensor, inverseFrequencies: Tensor, dtype: DType): [Tensor, Tensor] {
  using p = core.astype(positions, "float32");
  const [batch, length] = p.shape as [number, number];
  using p3 = core.reshape(p, [batch, length, 1]);
  using angles = core.multiply(p3, inverseFrequencies);
  using both = core.concatenate([angles, angles], -1);
  using table = core.reshape(both, [batch, 1, length, both.shape[2]!]);
  using cos = core.cos(table);
  using sin = core.sin(table);
  return [core.astype(cos, dtype), core.astype(sin, dtype)];
}

/** x rotated in its first `dims` features, the rest passed through. */
export function applyRotary(x: Tensor, cos: Tensor, sin: Tensor, dims: number): Tensor {
  const width = x.shape[x.ndim - 1]!;
  const start = x.shape.map(() => 0);
  using rotated = dims === width ? null : core.slice(x, start, [...x.shape.slice(0, -1), dims]);
  const part = rotated ?? x;
  using a = core.multiply(part, cos);
  using half = rotateHalf(part);
  using b = core.multiply(half, sin);
  const out = core.add(a, b);
  if (dims === width) return out;
  using kept = out;
  using pass = core.slice(x, [...start.slice(0, -1), dims], [...x.shape]);
  return core.concatenate([kept, pass], -1);
}

/** Additive mask [B or 1, 1, T, S] of `dtype`, or null when nothing is hidden: key j is visible to
 * query i (absolute position offset + i) when j <= offset + i (if causal) and keyMask[b, j] is set. */
export function attentionMask(
  batch: number,
  queries: number,
  keys: number,
  offset: number,
  causal: boolean,
  keyMask: Tensor | null,
  dtype: DType,
): Tensor | null {
  let mask: Tensor | null = null;
  if (causal) {
    const host = new Float32Array(queries * keys);
    let hidden = false;
    for (let i = 0; i < queries; i++) {
      for (let j = offset + i + 1; j < keys; j++) {
        host[i * keys + j] = Number.NEGATIVE_INFINITY;
        hidden = true;
      }
    }
    if (hidden) mask = Tensor.from(host, [1, 1, queries, keys], dtype);
  }
  if (keyMask) {
    // Finite, so that a row with every key hidden (a padding query) stays finite: float16 cannot
    // hold 1e30.
    const hiddenScore = dtype === "float16" ? 6e4 : 1e30;
    using visible = core.astype(keyMask, "float32");
    using flat = core.reshape(visible, [batch, 1, 1, keys]);
    using gap = core.subtract(flat, 1); // 0 where visible, -1 where masked
    using padding32 = core.multiply(gap, hiddenScore);
    const padding = core.astype(padding32, dtype);
    if (!mask) return padding;
    using causalPart = mask;
    using paddingPart = padding;
    mask = core.add(causalPart, paddingPart);
  }
  return mask;
}
