// Constrained rows of a batch (a responseFormat's grammar, src/grammar/): each row's mask for its
// next token, added to the logits before the pick. On MLX a row's mask is its grammar state's device
// tensor (made once per state, grammar/constraint.ts); free rows get zeros. A row whose grammar no
// token continues fails.
import { add, concatenate, reshape } from "../ops/core.ts";
import type { CpuTensor } from "../ops/cpu.ts";
import { Tensor } from "../tensor.ts";
import type { Sequence } from "./sequence.ts";

function constrained(rows: readonly Sequence[]): boolean {
  return rows.some((s) => s.request.constraint && s.state !== "done");
}

/** The logits [B, V] or [B, 1, V] with the constrained rows masked, or null when no row is constrained. */
export function maskedLogits(logits: Tensor, rows: readonly Sequence[], V: number): Tensor | null {
  if (!constrained(rows)) return null;
  const pieces: Tensor[] = [];
  let free: Tensor | null = null;
  try {
    for (const s of rows) {
      let mask = s.state === "done" ? null : (s.request.constraint?.maskTensor() ?? null);
      if (mask instanceof Error) {
        s.fail(mask);
        mask = null;
      }
      pieces.push(mask ?? (free ??= Tensor.from(new Float32Array(V), [V])));
    }
    // [V] rows -> [B * V] -> the logits' shape.
    using joined = rows.length === 1 ? reshape(pieces[0]!, [V]) : concatenate(pieces, 0);
    using shaped = reshape(joined, logits.ndim === 3 ? [rows.length, 1, V] : [rows.length, V]);
    return add(logits, shaped);
  } finally {
    free?.dispose();
  }
}

/** The constrained rows of host logits [B, 1, V] masked in place (0 or -infinity added). */
export function maskOnHost(logits: CpuTensor, rows: readonly Sequence[], V: number): void {
  if (!constrained(rows)) return;
  const data = logits.data;
  const row = new Float32Array(V);
  for (const [b, s] of rows.entries()) {
    const constraint = s.request.constraint;
    if (!constraint || s.state === "done") continue;
    const stuck = constraint.fill(row);
    if (stuck) {
      s.fail(stuck);
      continue;
    }
    for (let i = 0; i < V; i++) data[b * V + i] = data[b * V + i]! + row[i]!;
  }
}
