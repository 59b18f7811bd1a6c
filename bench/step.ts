// Where a decode step's time goes: generate's greedy loop by hand, each step split into the host
// build, the async eval call and the wait for the token, for mlx-bun (replayed steps and the
// TypeScript executor) and mlx-lm's own loop (peers/step.py), in alternating rounds so that drift on
// a shared machine shows; plus primitives per step. Also printed by the decode bench (one round).
import { createCache, forward, loadModel, type MlxModel, rewrittenGraph } from "../src/models/index.ts";
import { DecodeTape } from "../src/models/replay.ts";
import { argmax, asyncEval, max, pendingPrimitiveKinds } from "../src/ops/core.ts";
import { Tensor } from "../src/tensor.ts";
import { benchModel, MODELS } from "./decode.ts";
import { runPeer } from "./peer.ts";
import { summarize, table } from "./stats.ts";

export const BREAKDOWN_STEPS = 64;
const ROUNDS = Number(process.env.MLXB_STEP_ROUNDS ?? 3);

export interface Breakdown {
  buildMs: number;
  /** The median step's build (a pause in one step moves the mean, not this). */
  buildMedianMs: number;
  evalCallMs: number;
  waitMs: number;
  primitives: number;
  /** Primitives per step by MLX's names. */
  kinds: Record<string, number>;
}

/** generate's greedy decode loop by hand, timed in three parts per step (means after a warm-up). */
export function stepBreakdown(model: MlxModel, prompt: number[], replay: boolean): Breakdown {
  const graph = rewrittenGraph(model, "last");
  const run = (count: (ts: Tensor[]) => void) => {
    using cache = createCache(model, 1, prompt.length + BREAKDOWN_STEPS + 2);
    using tape = new DecodeTape(model, cache, graph, { output: "argmax" });
    // As generate: the next ids and the largest logit (its finiteness check) per step.
    const pick = (logits: Tensor) => {
      using last = logits;
      return [argmax(last, -1), max(last, [-1])];
    };
    const step = (ids: Tensor) => (replay ? tape.step(ids) : pick(forward(model, ids, { cache, graph, lazy: true })));
    let pending: Tensor[];
    {
      using ids = Tensor.from(Int32Array.from(prompt), [1, prompt.length]);
      pending = pick(forward(model, ids, { cache, graph, lazy: true }));
      asyncEval(pending);
    }
    const warmup = 4;
    let [build, evalCall, wait] = [0, 0, 0];
    const builds: number[] = [];
    for (let i = 0; i < BREAKDOWN_STEPS; i++) {
      const t0 = performance.now();
      const next = step(pending[0]!);
      const t1 = performance.now();
      if (i === warmup) count(next);
      asyncEval(next);
      const t2 = performance.now();
      pending[0]!.toInt32Array();
      pending[1]!.toFloat32Array();
      const t3 = performance.now();
      for (const t of pending) t.dispose();
      pending = next;
      if (i >= warmup) {
        [build, evalCall, wait] = [build + t1 - t0, evalCall + t2 - t1, wait + t3 - t2];
        builds.push(t1 - t0);
      }
    }
    for (const t of pending) t.dispose();
    const n = BREAKDOWN_STEPS - warmup;
    return { buildMs: build / n, buildMedianMs: summarize(builds).median, evalCallMs: evalCall / n, waitMs: wait / n };
  };
  let kinds: Record<string, number> = {};
  // Counting walks the step's graph: a run of its own, so the timed run does not pay for it.
  run((ts) => (kinds = Object.fromEntries(pendingPrimitiveKinds(ts))));
  return { ...run(() => {}), primitives: Object.values(kinds).reduce((n, k) => n + k, 0), kinds };
}

/** The step table's columns (after the row's label), for a breakdown and mlx-lm's of the same run. */
export const STEP_COLUMNS = [
  "build",
  "eval call",
  "wait",
  "total",
  "tok/s",
  "primitives",
  "build / lm",
  "build median",
  "median / lm",
];
export function stepColumns(b: Breakdown, lm: Breakdown): number[] {
  const total = b.buildMs + b.evalCallMs + b.waitMs;
  return [
    b.buildMs,
    b.evalCallMs,
    b.waitMs,
    total,
    1000 / total,
    b.primitives,
    b.buildMs / lm.buildMs,
    b.buildMedianMs,
    b.buildMedianMs / lm.buildMedianMs,
  ];
}

/** Rows of the primitive kinds whose counts per step differ between mlx-bun and mlx-lm. */
export function kindRows(label: string, ours: Breakdown, lm: Breakdown): (string | number)[][] {
  const names = [...new Set([...Object.keys(ours.kinds), ...Object.keys(lm.kinds)])].sort();
  return names
    .filter((k) => ours.kinds[k] !== lm.kinds[k])
    .map((k) => [`${label} ${k}`, ours.kinds[k] ?? 0, lm.kinds[k] ?? 0]);
}

export async function run(): Promise<Record<string, unknown>> {
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const dir of MODELS.map(benchModel)) {
    const name = dir.split("/").pop()!;
    const prompt = Array.from({ length: 128 }, (_, i) => (i * 37) % 1000);
    const model = loadModel(dir, { backend: "mlx" });
    const rounds: Record<string, Breakdown>[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const lm = runPeer("step.py", [dir, JSON.stringify(prompt), String(BREAKDOWN_STEPS)]) as Breakdown;
      const round = {
        "mlx-bun (replay)": stepBreakdown(model, prompt, true),
        "mlx-bun (executor)": stepBreakdown(model, prompt, false),
        "mlx-lm": lm,
      };
      rounds.push(round);
      for (const [who, b] of Object.entries(round)) {
        rows.push([`${name} ${who} #${r + 1}`, ...stepColumns(b, lm)]);
      }
    }
    model.dispose();
    results[name] = rounds;
  }
  table(
    `One decode step (ms, mean of ${BREAKDOWN_STEPS - 4} after 4; 128-token prompt), ${ROUNDS} alternating rounds: host build, the async eval call, the wait for the token; primitives per step`,
    ["model, who, round", ...STEP_COLUMNS],
    rows,
  );
  return results;
}
