// Decode steps recorded in the shim and replayed (models/replay.ts, shim/ext/tape.cpp) give the same
// results as running each step through the executor: bit for bit on every decoder fixture, plain and
// rewritten graphs; a step that cannot be replayed falls back (and says why) with unchanged results.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import type { Graph } from "../src/graph/graph.ts";
import { check, native, pointerFromWord } from "../src/native/ffi.ts";
import { createCache, forward, loadModel, type MlxModel, rewrittenGraph } from "../src/models/index.ts";
import { DecodeTape } from "../src/models/replay.ts";
import { deviceInfo, ops, Tensor } from "../src/index.ts";
import { decode, type EncodedArray, fixture } from "./helpers.ts";

const STEPS = 12;
const cases = fixture<Record<string, { prompt: EncodedArray; decode_step_primitives: number }>>("models.json");

/** Prefill, then STEPS greedy steps of `width` ids each: through a tape, or forward per step. */
function steps(
  model: MlxModel,
  graph: Graph,
  prompt: Tensor,
  replay: boolean,
  width = 1,
  onFallback?: (r: string) => void,
) {
  const cache = createCache(model, 1, prompt.shape[1]! + STEPS * width + 1);
  const tape = replay ? new DecodeTape(model, cache, graph, { onFallback }) : null;
  let logits = forward(model, prompt, { cache, graph });
  const out: Uint8Array[] = [];
  for (let s = 0; s < STEPS; s++) {
    using next = ops.argmax(logits, -1);
    const token = next.toInt32Array()[0]!;
    logits.dispose();
    using ids = Tensor.from(new Int32Array(width).fill(token), [1, width]);
    logits = tape ? tape.step(ids)[0]! : forward(model, ids, { cache, graph, lazy: true });
    out.push(logits.toBytes());
  }
  logits.dispose();
  const replaying = tape?.replaying ?? false;
  tape?.dispose();
  cache.dispose();
  return { out, replaying };
}

for (const name of Object.keys(cases)) {
  describe(`replay: ${name}`, () => {
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name), { backend: "mlx" });
    const prompt = decode(cases[name]!.prompt);
    for (const [label, graph] of [
      ["plain", model.graph("last")],
      ["rewritten", rewrittenGraph(model, "last")],
    ] as const) {
      test(`${label}: ${STEPS} replayed steps equal the executor's, bit for bit`, () => {
        const reference = steps(model, graph, prompt, false);
        const replayed = steps(model, graph, prompt, true);
        expect(replayed.replaying).toBe(true);
        for (let s = 0; s < STEPS; s++) expect(Buffer.compare(replayed.out[s]!, reference.out[s]!)).toBe(0);
      });
    }

    // The fixture's count is made on the CPU, where MLX's fast ops run as decomposed graphs; on the
    // GPU ours are single primitives, so there the bound is looser.
    test("a replayed greedy step (as generate runs it) has no more MLX primitives than mlx-lm's step", () => {
      const graph = rewrittenGraph(model, "last");
      using cache = createCache(model, 1, prompt.shape[1]! + 4);
      // Replayed through MLX (a launched step graph would be one node).
      using tape = new DecodeTape(model, cache, graph, { output: "argmax", stepGraph: false });
      let next: Tensor;
      {
        using logits = forward(model, prompt, { cache, graph });
        next = ops.argmax(logits, -1);
      }
      // Step 1 records, step 2 checks the replay, step 3 is a replay as every later step.
      let primitives = 0;
      for (let s = 0; s < 3; s++) {
        const [picked, largest] = tape.step(next);
        next.dispose();
        if (s === 2) primitives = ops.pendingPrimitives([picked!, largest!]);
        largest!.eval();
        largest!.dispose();
        next = picked!;
      }
      next.dispose();
      expect(tape.replaying).toBe(true);
      expect(primitives).toBeGreaterThan(0);
      expect(primitives).toBeLessThanOrEqual(cases[name]!.decode_step_primitives);
    });
  });
}

describe("replay: steps that cannot be replayed", () => {
  test("the plain graph's two-token steps bake a host-made causal mask: the first replay fails its check, steps run normally", () => {
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", "llama"), { backend: "mlx" });
    const prompt = decode(cases.llama!.prompt);
    const reasons: string[] = [];
    const reference = steps(model, model.graph("last"), prompt, false, 2);
    const replayed = steps(model, model.graph("last"), prompt, true, 2, (r) => reasons.push(r));
    expect(replayed.replaying).toBe(false);
    expect(reasons.length).toBe(1);
    for (let s = 0; s < STEPS; s++) expect(Buffer.compare(replayed.out[s]!, reference.out[s]!)).toBe(0);
  });

  test("the shim's tape: inputs are replaced, other arrays are constants, pure ops are rebuilt while their input shapes hold, a host read makes the recording unusable", () => {
    const lib = native();
    const handle = (t: Tensor) => BigInt(t.handle);
    using x = Tensor.from(new Float32Array([1, 2]));
    using c = Tensor.from(new Float32Array([10, 20]));
    const out = new BigUint64Array(1);
    check(lib.mlx_tape_record_begin(out), "record");
    const tape = pointerFromWord(out[0]!);
    check(lib.mlx_tape_input(tape, x.handle), "input");
    using y = ops.add(x, c);
    check(lib.mlx_tape_record_end(tape, BigUint64Array.of(handle(y)), 1), "end");
    using x2 = Tensor.from(new Float32Array([5, 6]));
    check(lib.mlx_tape_run(out, 1, tape, BigUint64Array.of(handle(x2)), 1), "run");
    using replayed = new Tensor(pointerFromWord(out[0]!));
    expect(Array.from(replayed.toFloat32Array())).toEqual([15, 26]);
    // The add was rebuilt from its recorded node; an input of another shape runs the op again.
    const counts = new Int32Array(2);
    check(lib.mlx_tape_last_run(counts.subarray(0, 1), counts.subarray(1), tape), "last run");
    expect(Array.from(counts)).toEqual([1, 0]);
    using x3 = Tensor.from(new Float32Array([7]));
    check(lib.mlx_tape_run(out, 1, tape, BigUint64Array.of(handle(x3)), 1), "run");
    using broadcast = new Tensor(pointerFromWord(out[0]!));
    expect(Array.from(broadcast.toFloat32Array())).toEqual([17, 27]);
    check(lib.mlx_tape_last_run(counts.subarray(0, 1), counts.subarray(1), tape), "last run");
    expect(Array.from(counts)).toEqual([0, 1]);
    expect(lib.mlx_tape_run(out, 1, tape, BigUint64Array.of(handle(x2), handle(x2)), 2)).not.toBe(0);
    expect(String(lib.mlx_last_error())).toContain("the tape takes 1 inputs, got 2");
    lib.mlx_tape_free(tape);

    check(lib.mlx_tape_record_begin(out), "record");
    const second = pointerFromWord(out[0]!);
    using z = ops.multiply(x, c);
    z.toFloat32Array();
    expect(lib.mlx_tape_record_end(second, BigUint64Array.of(handle(z)), 1)).not.toBe(0);
    expect(String(lib.mlx_last_error())).toContain(
      "the step cannot be replayed: the recorded step read an array to the host",
    );
    lib.mlx_tape_free(second);
    expect(Tensor.from([1]).size).toBe(1); // nothing left recording
  });

  test("a run of pure ops replays as one plan (an intermediate that is also an output, an input read twice); another shape replays op by op, rebuilding where shapes hold", () => {
    const lib = native();
    const handle = (t: Tensor) => BigInt(t.handle);
    using x = Tensor.from(new Float32Array([1, 2]));
    using c = Tensor.from(new Float32Array([10, 20]));
    const out = new BigUint64Array(2);
    check(lib.mlx_tape_record_begin(out), "record");
    const tape = pointerFromWord(out[0]!);
    check(lib.mlx_tape_input(tape, x.handle), "input");
    using a = ops.add(x, c); // x + c
    using b = ops.multiply(a, x); // (x + c) * x
    using d = ops.subtract(b, a); // (x + c) * (x - 1)
    check(lib.mlx_tape_record_end(tape, BigUint64Array.of(handle(d), handle(a)), 2), "end");
    const run = (values: number[]) => {
      using input = Tensor.from(new Float32Array(values));
      check(lib.mlx_tape_run(out, 2, tape, BigUint64Array.of(handle(input)), 1), "run");
      using first = new Tensor(pointerFromWord(out[0]!));
      using second = new Tensor(pointerFromWord(out[1]!));
      const counts = new Int32Array(2);
      check(lib.mlx_tape_last_run(counts.subarray(0, 1), counts.subarray(1), tape), "last run");
      return {
        d: Array.from(first.toFloat32Array()),
        a: Array.from(second.toFloat32Array()),
        counts: Array.from(counts),
      };
    };
    expect(run([3, 4])).toEqual({ d: [26, 72], a: [13, 24], counts: [3, 0] });
    // x of another shape: the merged plan does not fit; op by op, the add and the multiply (which read
    // x) are called, the subtract (its inputs as recorded) is rebuilt.
    expect(run([5])).toEqual({ d: [60, 100], a: [15, 25], counts: [1, 2] });
    expect(run([0, -1])).toEqual({ d: [-10, -38], a: [10, 19], counts: [3, 0] });
    lib.mlx_tape_free(tape);
  });
});

// Step graphs: on MLX's CUDA backend the first replay is captured as one CUDA graph and later steps
// launch it (their inputs copied in, the attention's cache position and chunk count set on its
// node); elsewhere the capture is refused and steps replay. Either way the logits are the executor's,
// bit for bit, across the attention's chunk counts (a chunk per 32 keys) and a seek back (the graph
// is then dropped: the cache no longer takes its writes in place).
describe("replay: step graphs", () => {
  const onCuda = deviceInfo().device === "gpu" && process.platform === "linux";
  const LONG = 80;
  const SEEK_AT = 60;

  function run(model: MlxModel, graph: Graph, prompt: Tensor, stepGraph: boolean | null) {
    const cache = createCache(model, 1, prompt.shape[1]! + LONG + 1);
    const tape = stepGraph === null ? null : new DecodeTape(model, cache, graph, { stepGraph });
    let logits = forward(model, prompt, { cache, graph });
    const out: Uint8Array[] = [];
    let launchesBeforeSeek = 0;
    for (let s = 0; s < LONG; s++) {
      using next = ops.argmax(logits, -1);
      const token = next.toInt32Array()[0]!;
      logits.dispose();
      if (s === SEEK_AT) {
        launchesBeforeSeek = tape?.graphLaunches ?? 0;
        cache.seek(cache.offset - 3);
      }
      using ids = Tensor.from(Int32Array.of(token), [1, 1]);
      logits = tape ? tape.step(ids)[0]! : forward(model, ids, { cache, graph, lazy: true });
      out.push(logits.toBytes());
    }
    logits.dispose();
    const result = { out, launchesBeforeSeek, launches: tape?.graphLaunches ?? 0, failure: tape?.captureFailure ?? "" };
    tape?.dispose();
    cache.dispose();
    return result;
  }

  test("a batch of two rows, one left-padded: launched (a key mask of the cache's whole length) or replayed, the executor's logits", () => {
    const model = loadModel(join(import.meta.dir, "..", "default-model"), { backend: "mlx" });
    const graph = rewrittenGraph(model, "last");
    const STEPS = 40;
    const prompt = Int32Array.from({ length: 2 * 20 }, (_, i) => (i < 5 ? 0 : (i * 53 + 11) % 8192));
    const go = (stepGraph: boolean | null) => {
      using cache = createCache(model, 2, 20 + STEPS + 1);
      cache.setLeftPadding([5, 0]);
      using tape = stepGraph === null ? null : new DecodeTape(model, cache, graph, { stepGraph });
      using ids0 = Tensor.from(prompt, [2, 20]);
      let logits = forward(model, ids0, { cache, graph });
      const out: Uint8Array[] = [];
      for (let s = 0; s < STEPS; s++) {
        using next = ops.argmax(logits, -1);
        const tokens = next.toInt32Array();
        logits.dispose();
        using ids = Tensor.from(Int32Array.from(tokens), [2, 1]);
        logits = tape ? tape.step(ids)[0]! : forward(model, ids, { cache, graph, lazy: true });
        out.push(logits.toBytes());
      }
      logits.dispose();
      return { out, launches: tape?.graphLaunches ?? 0 };
    };
    const reference = go(null);
    const launched = go(true);
    for (let s = 0; s < STEPS; s++) expect(Buffer.compare(launched.out[s]!, reference.out[s]!)).toBe(0);
    expect(launched.launches).toBe(onCuda ? STEPS - 3 : 0);
  });

  test(`${LONG} greedy steps with a seek back: launched or replayed, the executor's logits`, () => {
    // The default model: its heads (64 dims) fit the shim's CUDA decode attention.
    const model = loadModel(join(import.meta.dir, "..", "default-model"), { backend: "mlx" });
    using prompt = Tensor.from(
      Int32Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 8192),
      [1, 24],
    );
    const graph = rewrittenGraph(model, "last");
    const reference = run(model, graph, prompt, null);
    const launched = run(model, graph, prompt, true);
    const replayed = run(model, graph, prompt, false);
    for (let s = 0; s < LONG; s++) {
      expect(Buffer.compare(launched.out[s]!, reference.out[s]!)).toBe(0);
      expect(Buffer.compare(replayed.out[s]!, reference.out[s]!)).toBe(0);
    }
    expect(replayed.launches).toBe(0);
    if (onCuda) {
      // Steps 1-3 record, check and capture; every later one before the seek is launched. The step
      // after the seek writes out of place (refused), the next is captured again, the rest launched.
      expect(launched.failure).toBe("");
      expect(launched.launchesBeforeSeek).toBe(SEEK_AT - 3);
      expect(launched.launches).toBe(LONG - 5);
    } else {
      expect(launched.launches).toBe(0);
      expect(launched.failure).toContain("CUDA");
    }
  });
});
