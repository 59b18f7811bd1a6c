// The decode engine: one running batch of sequences per model and graph. Every way of generating
// goes through it: generate submits one sequence, generateBatch several at once, the server each
// request as it arrives (continuous batching: sequences join and leave the batch between steps).
//
// A tick: (1) admission: waiting sequences are prefilled together (left-padded, in chunks of
// `prefillChunk` positions per tick while others decode) in a cache of their own, and their first
// tokens are picked on the device; (2) the batch's KV cache is regrouped when sequences joined or
// left (regroup.ts); (3) one decode step is launched for every running sequence, fed the ids picked
// by the previous step still on the device, and its tokens picked on the device (sampler.ts); (4)
// only then are the previous picks read, so the host work of step t+1 overlaps the device's step t.
// An admission's first tokens are the exception: they are read at once and the tick ends there, so a
// request that arrives while others decode gets its first token without waiting for their step.
// A step of each batch shape and sampler structure, its pick included, is recorded once and
// replayed (models/replay.ts) for the engine's life. A batch with constrained rows (a responseFormat)
// reads the previous picks before its own pick: the step's logits are launched first, the rows'
// masks (masks.ts) made while the device runs it, and the pick built on the masked logits.
import type { Graph } from "../graph/graph.ts";
import type { HostKVCache, KVCache } from "../kv-cache.ts";
import { createCache, forward, type Model, tokenIds } from "../models/index.ts";
import { DecodeTape } from "../models/replay.ts";
import { asyncEval } from "../ops/core.ts";
import type { CpuTensor } from "../ops/cpu.ts";
import { Tensor } from "../tensor.ts";
import { maskedLogits, maskOnHost } from "./masks.ts";
import { type Admission, chunkEnds, chunkIds, leftPadded } from "./admission.ts";
import { hostStep, pickRowsOnHost, release, stepInputs } from "./inputs.ts";
import { emptyBuffers, regroup } from "./regroup.ts";
import { DeviceSampler, pickTensors } from "./sampler.ts";
import { type Launched, Sequence, type SequenceRequest } from "./sequence.ts";

export { Sequence, type GenerationChunk, type GenerationStats, type SequenceRequest } from "./sequence.ts";

type Cache = KVCache | HostKVCache;

export interface EngineOptions {
  /** The graph to run (the model's, or a rewritten one). */
  graph: Graph;
  /** MLX: record a decode step of each batch shape once and replay it (default true). */
  replay?: boolean | undefined;
  /** Sequences decoding at once (default 64); more wait. */
  maxBatch?: number | undefined;
  /** Prompt positions prefilled per tick while other sequences decode (default 512). */
  prefillChunk?: number | undefined;
  /** A cache of its own (rotating or quantized): the engine runs one group of sequences in it, with
   * no joining or leaving (finished rows ride along until all are done). */
  solo?: Cache | undefined;
  /** Called once if decode steps cannot be replayed. */
  onReplayFallback?: ((reason: string) => void) | undefined;
}

export class Engine {
  readonly model: Model;
  readonly graph: Graph;
  readonly maxBatch: number;
  readonly prefillChunk: number;
  readonly #replay: boolean;
  readonly #solo: Cache | null;
  readonly #onReplayFallback: (reason: string) => void;
  /** The running batch's cache: one object for the engine's life (recorded steps refer to it). */
  #cache: Cache | null = null;
  readonly #tapes = new Map<string, DecodeTape>();
  #rows: Sequence[] = [];
  readonly #waiting: Sequence[] = [];
  #admission: Admission | null = null;
  /** Admitted sequences (first tokens launched) that join the batch at the next regroup, and the
   * cache they were prefilled in (borrowed: a promptCache's, not disposed here). */
  #joining: { rows: Sequence[]; cache: Cache; borrowed: boolean } | null = null;
  #sampler: DeviceSampler | null = null;
  #pending: Launched[] = [];
  #running = false;
  #disposed = false;

  constructor(model: Model, options: EngineOptions) {
    if (model.kind !== "decoder") throw new Error(`Engine: ${model.config.modelType} is an encoder`);
    this.model = model;
    this.graph = options.graph;
    this.maxBatch = options.maxBatch ?? 64;
    this.prefillChunk = options.prefillChunk ?? 512;
    for (const [key, value] of [
      ["maxBatch", this.maxBatch],
      ["prefillChunk", this.prefillChunk],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 1)
        throw new Error(`Engine: ${key} must be a positive integer, got ${value}`);
    }
    this.#replay = model.backend === "mlx" && options.replay !== false;
    this.#solo = options.solo ?? null;
    this.#onReplayFallback = options.onReplayFallback ?? (() => {});
  }

  /** Sequences holding a slot of the batch (until the step that lets them go; joining ones
   * included), and waiting (admission included). */
  get load(): { active: number; waiting: number } {
    return {
      // Joining rows have their first tokens: they count as generating.
      active: this.#rows.length + (this.#joining?.rows.length ?? 0),
      waiting: this.#waiting.length + (this.#admission?.rows.length ?? 0),
    };
  }

  /** Queues sequences; submitted together, they are admitted together when there is room. */
  submit(requests: readonly SequenceRequest[], cachedTokens: readonly number[] = []): Sequence[] {
    if (this.#disposed) throw new Error("Engine: used after dispose()");
    if (this.#solo && (this.#rows.length > 0 || this.#waiting.length > 0 || this.#admission))
      throw new Error("Engine: a solo engine runs one group");
    const sequences = requests.map((r, i) => new Sequence(r, cachedTokens[i] ?? 0));
    this.#waiting.push(...sequences);
    if (!this.#running) void this.#run();
    return sequences;
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#busy()) {
        try {
          this.#tick();
        } catch (e) {
          this.#failAll(e as Error);
        }
        if (!this.#busy()) break;
        // Let consumers take their chunks (and a server its requests) between steps.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#idle();
      this.#running = false;
    }
  }

  #busy(): boolean {
    return (
      this.#rows.length > 0 ||
      this.#waiting.length > 0 ||
      this.#admission !== null ||
      this.#joining !== null ||
      this.#pending.length > 0
    );
  }

  #tick(): void {
    // (Rows still joining from the last tick, which ended at their first tokens, join first.)
    if (!this.#joining) this.#admit();
    // An admission's first tokens are read, and their consumers let run, before the batch's next
    // step is launched (the rest of this tick is the next one's): launching a step on MLX's CPU
    // stream waits while most of it runs (MLX bounds the tasks in flight), and the step after a
    // regroup also copies the caches, so a late request's first token waited for both (measured on
    // the 2-core CPU, 15 rows decoding: 46-60 ms against 13 alone). The device idles for one
    // step's launch once per admission.
    const first = this.#pending.filter((l) => this.#joining !== null && l.rows === this.#joining.rows && !l.delivered);
    for (const l of first) this.#deliver(l);
    if (first.length > 0) return;
    this.#regroup();
    const launched = this.#decode();
    const toRead = this.#pending;
    this.#pending = launched ? [launched] : [];
    for (const l of toRead) this.#read(l);
    // Sequences that ended (their last token, a stop, an error, a cancel) with nothing more to read.
    if (!this.#rows.every((s) => s.state === "done") || this.#pending.length > 0) return;
    if (this.#solo) this.#finish(this.#rows.splice(0));
    else this.#regroup();
  }

  // ---- admission ----

  #admit(): void {
    if (!this.#admission) this.#startAdmission();
    const a = this.#admission;
    if (!a) return;
    // With nothing else decoding, the whole prompt goes at once.
    const alone = this.#rows.every((s) => s.state === "done");
    while (a.done < a.length) {
      const end = a.ends.find((e) => e > a.done)!;
      const last = end === a.length;
      const B = a.rows.length;
      const chunk = tokenIds(this.model, chunkIds(a, end), [B, end - a.done]);
      try {
        const logits = forward(this.model, chunk, { cache: a.cache, graph: this.graph, lazy: true });
        if (last) {
          this.#pickFirst(a, logits);
        } else if (logits instanceof Tensor) {
          asyncEval([logits]);
          logits.dispose();
        }
      } finally {
        if (chunk instanceof Tensor) chunk.dispose();
      }
      a.done = end;
      if (!alone && !last) return;
    }
  }

  #startAdmission(): void {
    const room =
      this.maxBatch - this.#rows.filter((s) => s.state !== "done").length - (this.#joining?.rows.length ?? 0);
    // Cancelled before admission: let go at once.
    for (const s of this.#waiting.filter((s) => s.state === "done")) this.#finish([s]);
    this.#waiting.splice(0, this.#waiting.length, ...this.#waiting.filter((s) => s.state !== "done"));
    if (this.#waiting.length === 0 || room <= 0) return;
    if (this.#solo && this.#rows.length > 0) return;
    const first = this.#waiting[0]!;
    // A sequence continuing a conversation's cache prefills alone, in that cache; the others
    // (an empty promptCache only takes their rows at the end) prefill together.
    const continues = (s: Sequence) => s.request.promptCache !== undefined && s.stats.cachedTokens > 0;
    const rows = continues(first)
      ? [first]
      : this.#waiting.filter((s) => !continues(s)).slice(0, this.#solo ? undefined : room);
    this.#waiting.splice(0, this.#waiting.length, ...this.#waiting.filter((s) => !rows.includes(s)));
    const prompts = rows.map((s) => s.request.promptIds.slice(s.stats.cachedTokens));
    const { ids, length } = leftPadded(
      prompts,
      first.request.tokenizer.padTokenId ?? this.model.config.eosTokenIds[0] ?? 0,
    );
    let cache: Cache;
    let borrowed = true;
    try {
      if (continues(first)) {
        cache = first.request.promptCache!.cache;
      } else if (this.#solo) {
        cache = this.#solo;
      } else {
        cache = createCache(this.model, rows.length, length + Math.max(...rows.map((s) => s.request.maxTokens)) + 1);
        borrowed = false;
      }
      if (!continues(first)) cache.setLeftPadding(prompts.map((p) => length - p.length));
    } catch (e) {
      for (const s of rows) s.fail(e as Error);
      this.#finish(rows);
      return;
    }
    const ends = chunkEnds(length, this.prefillChunk, "quantized" in cache && cache.quantized);
    for (const s of rows) s.state = "prefilling";
    this.#admission = { rows, cache, ids, length, done: 0, ends, borrowed };
  }

  /** Launches the pick of the admitted rows' first tokens; they join the batch at the regroup. */
  #pickFirst(a: Admission, logits: Tensor | CpuTensor): void {
    const launched: Launched = { rows: a.rows, picks: null, host: null };
    const draws = a.rows.map((s) => s.draws);
    const histories = a.rows.map((s) => s.history);
    try {
      if (logits instanceof Tensor) {
        const settings = a.rows.map((s) => s.request.settings);
        using sampler = new DeviceSampler(settings, this.model.config.vocabSize, histories, draws);
        using constrainedLogits = maskedLogits(logits, a.rows, this.model.config.vocabSize);
        launched.picks = sampler.pick(constrainedLogits ?? logits, null);
        asyncEval(pickTensors(launched.picks));
      } else {
        maskOnHost(logits, a.rows, this.model.config.vocabSize);
        launched.host = pickRowsOnHost(logits, a.rows, histories, draws);
      }
    } finally {
      if (logits instanceof Tensor) logits.dispose();
    }
    for (const [b, s] of a.rows.entries()) {
      s.draws++;
      s.source = { launched, row: b };
      // A sequence cancelled while it prefilled stays done (it leaves at the next regroup).
      if (s.state !== "done") s.state = "running";
    }
    this.#pending.push(launched);
    this.#joining = { rows: a.rows, cache: a.cache, borrowed: a.borrowed };
    this.#admission = null;
  }

  // ---- the batch ----

  /** Lets finished sequences go and takes the admitted ones in: the cache's rows and the sampler
   * are rebuilt when the batch changed. */
  #regroup(): void {
    const leaving = this.#rows.filter((s) => s.state === "done");
    const joining = this.#joining;
    this.#joining = null;
    if (this.#solo) {
      if (joining) {
        this.#rows = joining.rows;
        this.#setSampler();
      }
      return;
    }
    if (leaving.length === 0 && !joining) return;
    const staying = this.#rows.filter((s) => s.state !== "done");
    const cache = (this.#cache ??= createCache(this.model, 1, 1));
    // Conversations' caches get their rows back before the batch's cache is rebuilt.
    for (const s of leaving) {
      const pc = s.request.promptCache;
      if (!pc) continue;
      const row = this.#rows.indexOf(s);
      const length = cache.offset - cache.padding[row]!;
      regroup(pc.cache, [{ cache, rows: [row] }], pc.maxLength - length);
      pc.record(s.history);
    }
    const parts: { cache: Cache; rows: number[] }[] = [];
    if (staying.length > 0) parts.push({ cache, rows: staying.map((s) => this.#rows.indexOf(s)) });
    if (joining) parts.push({ cache: joining.cache, rows: joining.rows.map((_, i) => i) });
    this.#rows = [...staying, ...(joining?.rows ?? [])];
    // The cache's buffers are made anew: captured step graphs (which hold the old ones) go.
    for (const tape of this.#tapes.values()) tape.releaseGraph();
    try {
      if (parts.length > 0)
        regroup(cache, parts, Math.max(...this.#rows.map((s) => s.request.maxTokens - s.generated.length)) + 1);
    } finally {
      if (joining && !joining.borrowed) joining.cache.dispose();
      this.#finish(leaving);
    }
    if (this.#rows.length === 0) this.#idle();
    else this.#setSampler();
  }

  #setSampler(): void {
    this.#sampler?.dispose();
    this.#sampler = null;
    if (this.model.backend === "mlx" && this.#rows.length > 0) {
      this.#sampler = new DeviceSampler(
        this.#rows.map((s) => s.request.settings),
        this.model.config.vocabSize,
        this.#rows.map((s) => s.history),
        this.#rows.map((s) => s.draws),
      );
    }
  }

  /** Launches one decode step for the batch; null when no row needs one. */
  #decode(): Launched | null {
    const rows = this.#rows;
    if (rows.length === 0 || rows.every((s) => s.complete)) return null;
    const cache = this.#solo ?? this.#cache!;
    const launched: Launched = { rows, picks: null, host: null };
    // Constrained rows need their previous tokens read before their masks: the step's logits are
    // launched first, and the masks made on the host while the device runs it.
    const constrained = rows.some((s) => s.request.constraint && s.state !== "done");
    if (this.model.backend === "cpu") {
      launched.host = hostStep(this.model, this.graph, cache as HostKVCache, rows, constrained, () => {
        for (const l of this.#pending.splice(0)) this.#read(l);
      });
    } else {
      const { ids, owned } = stepInputs(rows);
      try {
        const B = rows.length;
        const sampler = this.#sampler!;
        if (constrained) {
          using logits = this.#replay
            ? this.#tape(B, "logits").step(ids)[0]!
            : forward(this.model, ids, { cache: cache as KVCache, graph: this.graph, lazy: true });
          asyncEval([logits]);
          // The previous picks are read (their tensors kept until this pick is built on the ids).
          const previous = this.#pending.splice(0);
          try {
            for (const l of previous) this.#read(l, false);
            using constrainedLogits = maskedLogits(logits, rows, this.model.config.vocabSize);
            launched.picks = sampler.pick(constrainedLogits ?? logits, ids);
          } finally {
            for (const l of previous) release(l);
          }
        } else if (this.#replay) {
          // The step and its pick recorded together, once per batch shape and sampler structure.
          const tail = sampler.tail();
          launched.picks = tail.adopt(this.#tape(B, tail.structure).step(ids, tail));
        } else {
          using logits = forward(this.model, ids, { cache: cache as KVCache, graph: this.graph, lazy: true });
          launched.picks = sampler.pick(logits, ids);
        }
        asyncEval(pickTensors(launched.picks));
      } finally {
        if (owned) ids.dispose();
      }
    }
    for (const [b, s] of rows.entries()) {
      s.draws++;
      s.source = { launched, row: b };
    }
    return launched;
  }

  /** The recorded step of this batch size, padding (with or without) and pick structure. */
  #tape(batch: number, structure: string): DecodeTape {
    const cache = (this.#solo ?? this.#cache) as KVCache;
    const key = `${batch}:${cache.padding.some((p) => p > 0)}:${structure}`;
    let tape = this.#tapes.get(key);
    if (!tape) {
      tape = new DecodeTape(this.model as Extract<Model, { backend: "mlx" }>, cache, this.graph, {
        output: "logits",
        onFallback: this.#onReplayFallback,
      });
      this.#tapes.set(key, tape);
    }
    return tape;
  }

  /** Reads a launched pick and hands each row its token (then frees the pick's tensors, unless the
   * caller still needs them). */
  #read(launched: Launched, free = true): void {
    try {
      if (!launched.delivered) this.#deliver(launched);
      for (const s of launched.rows) if (s.source?.launched === launched) s.source = null;
    } finally {
      if (free) release(launched);
    }
  }

  /** Gives a launched pick's tokens to its rows (its tensors stay: a step may still be fed from them). */
  #deliver(launched: Launched): void {
    const picks =
      launched.host ??
      DeviceSampler.read(
        launched.picks!,
        launched.rows.map((s) => s.request.settings),
      );
    launched.delivered = true;
    for (const [b, s] of launched.rows.entries()) s.accept(picks[b]!);
  }

  /** Lets sequences go: off the batch, and their consumers told. */
  #finish(sequences: readonly Sequence[]): void {
    for (const s of sequences) {
      if (s.state !== "done") s.cancel();
      s.close();
    }
  }

  #failAll(error: Error): void {
    const all = [...this.#rows, ...(this.#joining?.rows ?? []), ...(this.#admission?.rows ?? [])];
    for (const s of all) {
      s.fail(error);
      // Whatever its cache holds now is not vouched for: the conversation starts over.
      s.request.promptCache?.rewind(0);
    }
    for (const l of this.#pending.splice(0)) release(l);
    if (this.#admission && !this.#admission.borrowed) this.#admission.cache.dispose();
    if (this.#joining && !this.#joining.borrowed) this.#joining.cache.dispose();
    this.#admission = null;
    this.#joining = null;
    this.#rows = [];
    this.#finish(all);
    this.#idle();
  }

  /** Nothing decoding: the batch's buffers and sampler go (recorded steps stay). */
  #idle(): void {
    this.#sampler?.dispose();
    this.#sampler = null;
    if (this.#rows.length > 0 || this.#joining) return;
    // Captured step graphs hold the cache's buffers, which an idle engine lets go.
    for (const tape of this.#tapes.values()) tape.releaseGraph();
    const cache = this.#cache;
    if (cache && cache.shape.maxLength > 1) {
      if (cache.backend === "mlx") emptyBuffers(cache, createCache(this.model, 1, 1) as KVCache);
      else this.#cache = null;
    }
  }

  dispose(): void {
    this.#disposed = true;
    this.#failAll(new Error("Engine: disposed"));
    for (const s of this.#waiting.splice(0)) {
      s.fail(new Error("Engine: disposed"));
      s.close();
    }
    for (const tape of this.#tapes.values()) tape.dispose();
    this.#tapes.clear();
    this.#cache?.dispose();
    this.#cache = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
