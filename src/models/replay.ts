// Decode steps recorded once in the shim and replayed: the host work of a step becomes one shim call
// (plus its positions) instead of one per op. The first decode step runs normally while the shim
// records every op it makes (mlx_tape_*); the second is run both ways once and the results compared
// (bit for bit, floating values within 2 ulps: sameValues), so a graph whose step is not a pure
// function of its inputs and the cache (a host value baked into an op) falls back to running
// normally; later steps replay. Ops on the KV cache act on the
// cache as it stands, so replays write at the current offset.
// On MLX's CUDA backend the first replay is also captured as one CUDA graph of its own (step graphs:
// shim/ext/step_graph_cuda.cpp) and later steps launch that graph instead of having MLX encode their
// kernels one by one: their inputs copied in, the cache position set on the attention kernels.
import type { Pointer } from "bun:ffi";
import type { Graph } from "../graph/graph.ts";
import type { KVCache } from "../kv-cache.ts";
import { dtypeCode } from "../dtype.ts";
import { check, native, outPointer, outWords, pointerFromWord } from "../native/ffi.ts";
import { singlePositionGraph } from "../rewrite/index.ts";
import { handleOf } from "../ops/call.ts";
import { argmax, max } from "../ops/core.ts";
import { Tensor } from "../tensor.ts";
import { type MlxModel, mlxFeeds, runMlx } from "./index.ts";
import { positionsFrom } from "./inputs.ts";

type State = "record" | "verify" | "replay" | "off";

/** Ops recorded after the logits, as part of the step (the engine's sampler): extra tape inputs (in
 * a fixed order; replays pass that step's tensors of the same roles) and the ops making the step's
 * outputs from the logits and the ids. */
export interface StepTail {
  inputs: readonly Tensor[];
  run(logits: Tensor, ids: Tensor): Tensor[];
}

export interface DecodeTapeOptions {
  /** "logits" (default): [last-position logits]; "argmax": [the next ids [B, 1] picked on the device,
   * the largest logit per row [B, 1] (to tell non-finite logits)]. */
  output?: "logits" | "argmax";
  /** Called once if the step cannot be replayed (then every step runs normally). */
  onFallback?: (reason: string) => void;
  /** Whether replays on MLX's CUDA backend launch the step as one captured CUDA graph (default: yes,
   * unless MLXB_STEP_GRAPH=0). A batch with left padding does where its key mask is read by the KV
   * cache's ops only (a rewritten graph's), and its cache does not rotate. */
  stepGraph?: boolean;
}

/** Captures a tape makes in a row without a launch between them: a step graph dropped (the KV cache
 * moved: a regroup, a seek back) or refused (a write out of place) is captured again at the next
 * step, up to this many times. */
const MAX_CAPTURES = 4;

/** One decode step (ids [B, 1] in) of an MLX model over a KV cache, replayed after the first. */
export class DecodeTape {
  readonly model: MlxModel;
  readonly cache: KVCache;
  readonly graph: Graph;
  readonly output: "logits" | "argmax";
  #onFallback: (reason: string) => void;
  #state: State = "record";
  #tape: Pointer | null = null;
  // Step graphs: "capture" at the next replay, "launch" once captured, "off" where not wanted or not
  // possible.
  #graph: "capture" | "launch" | "off";
  #captures = 0; // since the last launch
  #maskPure: boolean | null = null;
  #mask: { key: string; tensor: Tensor } | null = null;
  #captureFailure = "";
  #launches = 0;
  // A replay's output handles, kept between steps.
  #outputs: BigUint64Array;

  constructor(model: MlxModel, cache: KVCache, graph: Graph, options: DecodeTapeOptions = {}) {
    this.model = model;
    this.cache = cache;
    this.graph = graph;
    this.output = options.output ?? "logits";
    this.#outputs = new BigUint64Array(this.output === "logits" ? 1 : 2);
    this.#onFallback = options.onFallback ?? (() => {});
    this.#graph = (options.stepGraph ?? process.env["MLXB_STEP_GRAPH"] !== "0") ? "capture" : "off";
  }

  /** Steps launched as the captured CUDA graph so far. */
  get graphLaunches(): number {
    return this.#launches;
  }

  /** Lets the captured CUDA graph go, with the buffers it holds (the KV cache's among them); the
   * next replay captures anew. For a caller about to free or replace the cache's buffers. */
  releaseGraph(): void {
    this.#graphTo("capture");
    this.#captures = 0;
    this.#dropMask();
  }

  /** Why the step was not captured as a CUDA graph ("" if it was, or was not tried). */
  get captureFailure(): string {
    return this.#captureFailure;
  }

  /** Whether steps now replay the recording. */
  get replaying(): boolean {
    return this.#state === "replay";
  }

  /** Runs one step lazily and advances the cache: its outputs (see `output`, or the tail's; the
   * caller evaluates). A tape is recorded with a tail or without, and every step passes the same. */
  step(ids: Tensor, tail?: StepTail): Tensor[] {
    switch (this.#state) {
      case "record":
        return this.#record(ids, tail);
      case "verify":
        return this.#verify(ids, tail);
      case "replay":
        return this.#replay(ids, tail);
      case "off":
        return this.#plain(ids, mlxFeeds(ids, this.cache), tail);
    }
  }

  #plain(ids: Tensor, feeds: ReturnType<typeof mlxFeeds>, tail: StepTail | undefined, graph = this.graph): Tensor[] {
    const logits = runMlx(this.model, graph, ids, this.cache, feeds);
    if (tail) {
      using all = logits;
      return tail.run(all, ids);
    }
    if (this.output === "logits") return [logits];
    using last = logits;
    return [argmax(last, -1), max(last, [-1])];
  }

  #record(ids: Tensor, tail: StepTail | undefined): Tensor[] {
    const feeds = mlxFeeds(ids, this.cache);
    const lib = native();
    const out = new BigUint64Array(1);
    check(lib.mlx_tape_record_begin(out), "DecodeTape: record");
    this.#tape = pointerFromWord(out[0]!);
    let result: Tensor[];
    try {
      for (const input of [ids, feeds.positions, feeds.keyMask, ...(tail?.inputs ?? [])]) {
        if (input) check(lib.mlx_tape_input(this.#tape, handleOf(input, "DecodeTape", "input")), "DecodeTape: input");
      }
      // A one-token step records the graph specialized to one position (fewer nodes); the check of
      // the first replay runs the general graph.
      result = this.#plain(ids, feeds, tail, ids.shape[1] === 1 ? singlePosition(this.graph) : this.graph);
    } catch (e) {
      this.#stop();
      throw e;
    }
    this.#outputs = new BigUint64Array(result.length);
    const status = lib.mlx_tape_record_end(
      this.#tape,
      BigUint64Array.from(result, (t) => BigInt(t.handle)),
      result.length,
    );
    if (status !== 0) {
      this.#stop(`${String(lib.mlx_last_error())}`);
      return result;
    }
    this.#state = "verify";
    return result;
  }

  #replay(ids: Tensor, tail: StepTail | undefined): Tensor[] {
    const [batch, length] = ids.shape as [number, number];
    const offset = this.cache.offset;
    const lib = native();
    // The positions (as mlxFeeds makes them) as a bare MLX array, freed below: no Tensor per step.
    const positions = positionsFrom(batch, length, offset, this.cache.padding);
    check(
      lib.mlx_array_new_data(outWords, positions, positions.byteLength, Int32Array.of(batch, length), 2, INT32),
      "DecodeTape: positions",
    );
    const positionsHandle = outPointer();
    // Not while the first replay is checked against a normal run.
    const graphs = this.#state === "replay";
    // A batch with left padding: step graphs take a key mask of the cache's whole length (the same
    // every step, so the captured step's input keeps its shape) where only the KV cache's ops read it
    // (they read the positions attended); else each step's mask is its own.
    const padded = this.cache.padding.some((p) => p > 0);
    const fixedMask =
      padded && graphs && this.#graph !== "off" && this.cache.keep === undefined && !this.#maskReadByPureOps();
    let ownMask: Tensor | null = null;
    try {
      ownMask = fixedMask ? null : this.cache.keyMask(offset + length);
      const keyMask = fixedMask ? this.#wholeMask() : ownMask;
      const extra = tail?.inputs ?? [];
      const inputs = new BigUint64Array((keyMask ? 3 : 2) + extra.length);
      inputs[0] = BigInt(handleOf(ids, "DecodeTape", "input"));
      inputs[1] = BigInt(positionsHandle);
      if (keyMask) inputs[2] = BigInt(keyMask.handle);
      for (const [i, t] of extra.entries()) inputs[(keyMask ? 3 : 2) + i] = BigInt(handleOf(t, "DecodeTape", "input"));
      const out = this.#outputs;
      if (graphs && ownMask) this.#graphTo("off");
      if (
        graphs &&
        this.#graph === "launch" &&
        lib.mlx_tape_launch(out, out.length, this.#tape, inputs, inputs.length) === 0
      ) {
        this.#launches++;
        this.#captures = 0;
      } else {
        // No graph, or the KV cache moved under it (nothing launched): captured anew, or replayed.
        if (graphs && this.#graph === "launch") this.#graphTo(this.#captures < MAX_CAPTURES ? "capture" : "off");
        if (graphs && this.#graph === "capture") this.#capture(inputs);
        else check(lib.mlx_tape_run(out, out.length, this.#tape, inputs, inputs.length), "DecodeTape: replay");
      }
      this.cache.advance(length);
      return Array.from(out, (h) => new Tensor(pointerFromWord(h)));
    } finally {
      lib.mlx_array_free(positionsHandle);
      ownMask?.dispose();
    }
  }

  /** Whether the recorded step reads its key mask (input 2) in a pure op, not only in the KV cache's. */
  #maskReadByPureOps(): boolean {
    if (this.#maskPure === null) {
      const out = new Int32Array(1);
      check(native().mlx_tape_input_pure(out, this.#tape, 2), "DecodeTape: key mask");
      this.#maskPure = out[0] !== 0;
    }
    return this.#maskPure;
  }

  #dropMask(): void {
    this.#mask?.tensor.dispose();
    this.#mask = null;
  }

  /** The key mask of the cache's whole length for its rows' padding (made again when they change). */
  #wholeMask(): Tensor {
    const key = `${this.cache.shape.maxLength}:${this.cache.padding.join(",")}`;
    if (this.#mask?.key !== key) {
      this.#mask?.tensor.dispose();
      this.#mask = { key, tensor: this.cache.keyMask(this.cache.shape.maxLength)! };
    }
    return this.#mask.tensor;
  }

  /** This step replayed and captured as a CUDA graph (step graphs); a capture that keeps no graph
   * leaves the step replayed as usual. */
  #capture(inputs: BigUint64Array): void {
    const lib = native();
    const out = this.#outputs;
    const captured = new Int32Array(1);
    this.#captures++;
    if (lib.mlx_tape_capture(out, out.length, this.#tape, inputs, inputs.length, captured) !== 0) {
      // Refused before the step ran (not MLX's CUDA backend, an input not laid out for a copy): the
      // step replays with the inputs given (a whole key mask too, let go after: the step holds it).
      this.#captureFailure = String(lib.mlx_last_error());
      check(lib.mlx_tape_run(out, out.length, this.#tape, inputs, inputs.length), "DecodeTape: replay");
      this.#graphTo("off");
      return;
    }
    // A step the cache did not take in place (after a seek back) is captured again at the next one.
    this.#captureFailure = captured[0] ? "" : String(lib.mlx_tape_capture_failure(this.#tape));
    this.#graphTo(captured[0] ? "launch" : this.#captures < MAX_CAPTURES ? "capture" : "off");
  }

  /** Step graphs to `next` ("off" stays off): a captured graph let go when it leaves "launch", the
   * whole key mask when graphs go off. */
  #graphTo(next: "capture" | "launch" | "off"): void {
    if (this.#graph === "off") return;
    if (this.#graph === "launch" && next !== "launch" && this.#tape !== null)
      native().mlx_tape_release_capture(this.#tape);
    this.#graph = next;
    if (next === "off") this.#dropMask();
  }

  /** The first replay, checked against a normal run of the same step (both write the same keys and
   * values at the same offset, so the cache ends as after one step). */
  #verify(ids: Tensor, tail: StepTail | undefined): Tensor[] {
    const offset = this.cache.offset;
    let replayed: Tensor[] | null = null;
    let failure = "a replayed step differs from the step run normally (a host value baked into an op?)";
    try {
      replayed = this.#replay(ids, tail);
      for (const t of replayed) t.eval();
    } catch (e) {
      failure = `the replayed step failed: ${(e as Error).message}`;
      for (const t of replayed ?? []) t.dispose();
      replayed = null;
    }
    this.cache.seek(offset);
    const reference = this.#plain(ids, mlxFeeds(ids, this.cache), tail);
    const differing = replayed?.findIndex((t, i) => !sameValues(t, reference[i]!));
    if (replayed && differing === -1) {
      this.#state = "replay";
      for (const t of reference) t.dispose();
      return replayed;
    }
    if (replayed && differing !== undefined)
      failure += `: output ${differing} ${difference(replayed[differing]!, reference[differing]!)}`;
    for (const t of replayed ?? []) t.dispose();
    this.#stop(failure);
    return reference;
  }

  #stop(reason?: string): void {
    this.#dropMask();
    if (this.#tape !== null) native().mlx_tape_free(this.#tape);
    this.#tape = null;
    this.#state = "off";
    if (reason) this.#onFallback(reason);
  }

  dispose(): void {
    this.#stop();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

const INT32 = dtypeCode("int32");

const singlePositionGraphs = new WeakMap<Graph, Graph>();

/** singlePositionGraph(graph), made once per graph. */
function singlePosition(graph: Graph): Graph {
  let made = singlePositionGraphs.get(graph);
  if (!made) singlePositionGraphs.set(graph, (made = singlePositionGraph(graph)));
  return made;
}

/** Mantissa bits of the floating dtypes a step outputs. */
const MANTISSA_BITS: Partial<Record<string, number>> = { float32: 23, bfloat16: 7, float16: 10 };

/** Equal bit for bit, or, for floating values, within 2 units in the last place of their dtype: on
 * CUDA two evaluations of the same bfloat16 step can differ in the last bit (seen on the H100: one
 * max logit of a 151936-wide row, 1 ulp apart), while a host value baked into an op (a stale position
 * or mask) moves most values far more than that. Integer outputs (the picked ids) must be equal. */
function sameValues(a: Tensor, b: Tensor): boolean {
  if (Buffer.compare(a.toBytes(), b.toBytes()) === 0) return true;
  const bits = MANTISSA_BITS[a.dtype];
  if (bits === undefined || a.dtype !== b.dtype) return false;
  const x = a.toFloat32Array();
  const y = b.toFloat32Array();
  const relative = 2 * 2 ** -bits;
  return x.every((v, i) => Math.abs(v - y[i]!) <= relative * Math.max(Math.abs(v), Math.abs(y[i]!)));
}

/** How two tensors of one shape differ: how many values, and the largest gap. */
function difference(a: Tensor, b: Tensor): string {
  const x = a.toFloat32Array();
  const y = b.toFloat32Array();
  let count = 0;
  let largest = 0;
  for (let i = 0; i < x.length; i++) {
    if (Object.is(x[i], y[i])) continue;
    count++;
    largest = Math.max(largest, Math.abs(x[i]! - y[i]!));
  }
  return `differs in ${count} of ${x.length} values (largest gap ${largest})`;
}
