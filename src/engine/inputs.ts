// A step's inputs and its picks outside the engine's state: each row's input id gathered from the
// pick that made it, a launched pick's release, and the CPU reference backend's step on the host.
import type { Graph } from "../graph/graph.ts";
import type { HostKVCache } from "../kv-cache.ts";
import { type CpuModel, forward, tokenIds } from "../models/index.ts";
import { concatenate, take } from "../ops/core.ts";
import type { CpuTensor } from "../ops/cpu.ts";
import { Tensor } from "../tensor.ts";
import { type Pick, pickOnHost } from "./host-sampler.ts";
import { maskOnHost } from "./masks.ts";
import { pickTensors } from "./sampler.ts";
import type { Launched, Sequence } from "./sequence.ts";

/** Frees a launched pick's tensors. */
export function release(launched: Launched): void {
  for (const t of launched.picks ? pickTensors(launched.picks) : []) t.dispose();
  launched.picks = null;
}

/** Each row's pick from host logits [B, 1, V] (the CPU reference backend), or its Error. */
export function pickRowsOnHost(
  logits: CpuTensor,
  rows: readonly Sequence[],
  histories: readonly (readonly number[])[],
  draws: readonly number[],
): (Pick | Error)[] {
  const V = logits.shape[logits.shape.length - 1]!;
  return rows.map((s, b) => {
    try {
      return pickOnHost(logits.data.subarray(b * V, (b + 1) * V), histories[b]!, s.request.settings, draws[b]!);
    } catch (e) {
      return e as Error;
    }
  });
}

/** The batch's input ids [B, 1] (uint32), gathered from the picks that made them. */
export function stepInputs(rows: readonly Sequence[]): { ids: Tensor; owned: boolean } {
  const first = rows[0]!.source!.launched;
  if (
    first.picks &&
    rows.length === first.rows.length &&
    rows.every((s, b) => s.source!.launched === first && s.source!.row === b)
  ) {
    return { ids: first.picks.tokens, owned: false };
  }
  const pieces: Tensor[] = [];
  try {
    let at = 0;
    while (at < rows.length) {
      const launched = rows[at]!.source!.launched;
      let end = at;
      while (end < rows.length && rows[end]!.source!.launched === launched) end++;
      const picked = rows.slice(at, end).map((s) => s.source!.row);
      if (launched.picks) {
        using index = Tensor.from(Int32Array.from(picked), [picked.length]);
        pieces.push(take(launched.picks.tokens, index, 0));
      } else {
        pieces.push(
          Tensor.from(
            Uint32Array.from(picked, (r) => (launched.host![r] as Pick).token),
            [picked.length, 1],
          ),
        );
      }
      at = end;
    }
    return { ids: pieces.length === 1 ? pieces.pop()! : concatenate(pieces, 0), owned: true };
  } finally {
    for (const p of pieces) p.dispose();
  }
}

/** The id a host-picked source made for a sequence. */
function sourcePick(s: Sequence): number {
  const { launched, row } = s.source!;
  const pick = launched.host![row]!;
  return pick instanceof Error ? 0 : pick.token;
}

/** One decode step of the CPU reference backend: the logits of each row's previous pick, masked for
 * constrained rows (`readPending` first reads the picks their masks depend on), and each row's pick. */
export function hostStep(
  model: CpuModel,
  graph: Graph,
  cache: HostKVCache,
  rows: readonly Sequence[],
  constrained: boolean,
  readPending: () => void,
): (Pick | Error)[] {
  const inputs = rows.map((s) => sourcePick(s));
  using ids = tokenIds(model, inputs, [rows.length, 1]);
  const logits = forward(model, ids, { cache, graph });
  if (constrained) {
    readPending();
    maskOnHost(logits, rows, model.config.vocabSize);
  }
  const histories = rows.map((s, b) => [...s.history, inputs[b]!]);
  return pickRowsOnHost(
    logits,
    rows,
    histories,
    rows.map((s) => s.draws),
  );
}
