// A sequence in the decode engine: what was asked (SequenceRequest), and its state as the engine
// advances it: the tokens read, its text stream and stops, its stats, its chunks for the consumer,
// cancellation, and where its next input id is (a row of a launched pick).
import type { Constraint } from "../grammar/constraint.ts";
import type { PromptCache } from "./prompt-cache.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { Pick, SamplerSettings, TokenLogprob } from "./host-sampler.ts";
import type { DevicePicks } from "./sampler.ts";
import { TextStream } from "./text.ts";

export interface GenerationChunk {
  token: number;
  /** With `logprobs`: the token's log-probability and the most probable alternatives. */
  logprob?: number;
  topLogprobs?: TokenLogprob[];
  /** New text since the previous chunk (empty while a multi-byte character is incomplete). */
  text: string;
  /** Set on the closing chunk of a stop token: `token` is the stop token (not generated text) and
   * `text` is whatever was held back. */
  stop?: true;
}

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens a promptCache already held (not prefilled again). */
  cachedTokens: number;
  generatedTokens: number;
  prefillSeconds: number;
  decodeSeconds: number;
  finishReason: "stop" | "length";
  /** With a responseFormat: whether the output is a whole sentence of its grammar (false when
   * maxTokens or a stop string cut it). */
  formatComplete?: boolean;
}

/** One sequence to generate (options already checked). */
export interface SequenceRequest {
  promptIds: readonly number[];
  maxTokens: number;
  settings: SamplerSettings;
  /** Ids that end the sequence (eos and stopTokens). */
  stop: ReadonlySet<number>;
  stopStrings: readonly string[];
  tokenizer: Tokenizer;
  /** Start from this conversation's cache (rewound to the prefix it shares with the prompt), and
   * leave the prompt and generated tokens in it at the end. */
  promptCache?: PromptCache | undefined;
  /** The output's grammar (a responseFormat): each step's tokens masked to those it takes. */
  constraint?: Constraint | undefined;
}

/** A launched pick for some rows: on the device (`picks`), or already made on the host. */
export interface Launched {
  rows: Sequence[];
  picks: DevicePicks | null;
  host: (Pick | Error)[] | null;
  /** Its tokens were given to its rows already (an admission's first tokens, read early). */
  delivered?: boolean;
}

/** A sequence in the engine: its stream of chunks, stats and state. */
export class Sequence {
  readonly request: SequenceRequest;
  readonly stats: GenerationStats;
  /** The prompt and every token read so far: the tokens the model was fed, or is being fed. */
  readonly history: number[];
  readonly generated: number[] = [];
  state: "waiting" | "prefilling" | "running" | "done" = "waiting";
  /** Draws launched so far: the index of the next one (the sampler's seed stream). */
  draws = 0;
  /** Where the next step's input id is: a row of a launched pick. */
  source: { launched: Launched; row: number } | null = null;
  readonly #stream: TextStream;
  readonly #chunks: GenerationChunk[] = [];
  #error: Error | null = null;
  #ended = false;
  #wake: (() => void) | null = null;
  #closed = false;
  #onClosed: (() => void)[] = [];
  #cancelled = false;
  readonly #start = performance.now();
  #firstAt = 0;

  constructor(request: SequenceRequest, cachedTokens: number) {
    this.request = request;
    this.history = [...request.promptIds];
    this.#stream = new TextStream(request.tokenizer);
    this.stats = {
      promptTokens: request.promptIds.length,
      cachedTokens,
      generatedTokens: 0,
      prefillSeconds: 0,
      decodeSeconds: 0,
      finishReason: "length",
    };
    if (request.constraint) this.stats.formatComplete = request.constraint.complete;
  }

  /** Stops the sequence: no more chunks; its slot is freed at the next step. */
  cancel(): void {
    if (this.state === "done") return;
    this.#cancelled = true;
    this.#end();
  }

  get cancelled(): boolean {
    return this.#cancelled;
  }

  /** The sequence's chunks as they are made. Leaving early cancels it; the iteration ends once the
   * engine let it go (its slot freed, a promptCache written). */
  async *chunks(): AsyncGenerator<GenerationChunk> {
    try {
      for (;;) {
        const chunk = this.#chunks.shift();
        if (chunk) {
          yield chunk;
          continue;
        }
        if (this.#error) throw this.#error;
        if (this.#ended) return;
        await new Promise<void>((resolve) => (this.#wake = resolve));
      }
    } finally {
      this.cancel();
      if (!this.#closed) await new Promise<void>((resolve) => this.#onClosed.push(resolve));
    }
  }

  /** Takes the token picked for it; returns whether the sequence is done. */
  accept(pick: Pick | Error): boolean {
    if (this.state === "done") return true;
    if (pick instanceof Error) {
      this.fail(pick);
      return true;
    }
    const { token } = pick;
    const now = performance.now();
    if (this.generated.length === 0 && this.#firstAt === 0) {
      this.#firstAt = now;
      this.stats.prefillSeconds = (now - this.#start) / 1000;
    } else {
      this.stats.decodeSeconds = (now - this.#firstAt) / 1000;
    }
    this.history.push(token);
    const { stop, stopStrings, maxTokens } = this.request;
    if (stop.has(token)) {
      this.stats.finishReason = "stop";
      this.#push({ token, text: this.#stream.flush(), stop: true });
      this.#end();
      return true;
    }
    const { constraint } = this.request;
    if (constraint) {
      const refused = constraint.accept(token);
      if (refused) {
        this.fail(refused);
        return true;
      }
      this.stats.formatComplete = constraint.complete;
    }
    this.generated.push(token);
    this.stats.generatedTokens = this.generated.length;
    // A grammar that nothing may continue ends the sequence as a stop would.
    const finished = constraint?.finished ?? false;
    const last = this.generated.length === maxTokens || finished;
    // An incomplete multi-byte character is held back while a later token may complete it.
    const piece = this.#stream.append(token, last, stopStrings);
    const scores = pick.logprob === undefined ? {} : { logprob: pick.logprob, topLogprobs: pick.topLogprobs! };
    this.#push({ token, text: piece.text, ...scores });
    if (piece.stopped || finished) this.stats.finishReason = "stop";
    if (piece.stopped || last) this.#end();
    return this.#ended;
  }

  /** Ends the sequence with an error (its consumer gets it after the chunks already made). */
  fail(error: Error): void {
    if (this.state === "done") return;
    this.#error = error;
    this.#end();
  }

  /** Called by the engine once it let the sequence go. */
  close(): void {
    this.#closed = true;
    for (const resolve of this.#onClosed.splice(0)) resolve();
  }

  /** Chunks made and not yet taken. */
  get queued(): number {
    return this.#chunks.length;
  }

  /** Whether this sequence's last token is picked or being picked (no further step needed). */
  get complete(): boolean {
    const unread = this.source && !this.source.launched.delivered ? 1 : 0;
    return this.state === "done" || this.generated.length + unread >= this.request.maxTokens;
  }

  #push(chunk: GenerationChunk): void {
    this.#chunks.push(chunk);
    this.#wake?.();
  }

  #end(): void {
    this.state = "done";
    this.#ended = true;
    this.#wake?.();
  }
}
