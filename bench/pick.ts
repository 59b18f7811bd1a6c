// The sampler's pick alone: samplePick (top-p 0.9 at T 0.7; top-k 40) against argmax on one row of
// logits, per call: each call evaluated and its token read back (as a decode step ends), and 64
// calls queued before one read (the kernel's own cost, launches included). Vocabularies of the
// default model and of Qwen3.
import { fast, ops, Tensor } from "../src/index.ts";
import { asyncEval, evalAll } from "../src/ops/core.ts";
import { summarize, table } from "./stats.ts";

const CALLS = 64;
const REPEATS = 7;

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 20 - 10);
}

export async function run(): Promise<Record<string, unknown>> {
  const rows: (string | number)[][] = [];
  const results: Record<string, number> = {};
  for (const vocab of [8192, 151936]) {
    using logits = Tensor.from(random(vocab, vocab), [1, vocab]);
    using seeds = Tensor.from(Uint32Array.from([7, 0]), [1, 2]);
    using draws = Tensor.from(Uint32Array.from([3]), [1]);
    const picks: Record<string, () => Tensor[]> = {
      argmax: () => [ops.argmax(logits, -1)],
      "samplePick top-p 0.9, T 0.7": () => {
        using params = Tensor.from(Float32Array.from([1 / 0.7, 0.1, Number.NEGATIVE_INFINITY, 1, 0]), [1, 5]);
        return fast.samplePick(logits, params, seeds, draws);
      },
      "samplePick top-k 40": () => {
        using params = Tensor.from(Float32Array.from([1, -1, Number.NEGATIVE_INFINITY, 1, 40]), [1, 5]);
        return fast.samplePick(logits, params, seeds, draws);
      },
    };
    for (const [name, pick] of Object.entries(picks)) {
      const each: number[] = [];
      const queued: number[] = [];
      for (let r = 0; r < REPEATS; r++) {
        let t0 = performance.now();
        for (let i = 0; i < CALLS; i++) {
          const out = pick();
          evalAll(out);
          out[0]!.toFloat32Array();
          for (const t of out) t.dispose();
        }
        each.push(((performance.now() - t0) / CALLS) * 1000);
        t0 = performance.now();
        const all: Tensor[] = [];
        for (let i = 0; i < CALLS; i++) {
          const out = pick();
          asyncEval(out);
          all.push(...out);
        }
        evalAll(all);
        all[all.length - 3]!.toFloat32Array();
        queued.push(((performance.now() - t0) / CALLS) * 1000);
        for (const t of all) t.dispose();
      }
      const [e, q] = [summarize(each).median, summarize(queued).median];
      rows.push([`V ${vocab} ${name}`, e, q]);
      results[`${vocab} ${name}`] = e;
    }
  }
  table(
    `The pick alone, one row (µs per call, median of ${REPEATS}): evaluated and read each call / ${CALLS} queued before one read`,
    ["pick", "each, read back", "queued"],
    rows,
  );
  return results;
}
