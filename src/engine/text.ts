// Streaming text of generated tokens, released as characters complete, with stop strings cut.
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** Text of a growing token list, released as characters complete. A byte-level tokenizer's tokens
 * are bytes (GPT-2's alphabet), so their text is a streaming UTF-8 decode of each token's bytes
 * (as mlx-lm's BPE streaming detokenizer). Other decoders (SentencePiece's spaces and byte fallback)
 * decode a short window per token (vLLM's incremental detokenization): the text of the tokens since
 * `prefix` past that of [prefix, read), released once it does not end in an incomplete character.
 * Both without the clean-up of spaces before punctuation (as mlx-lm's streaming detokenizers): it
 * would remove characters already released. */
export class TextStream {
  readonly #tokenizer: Tokenizer;
  /** Each token's bytes, for a byte-level tokenizer (null for special tokens: skipped). */
  readonly #bytes: readonly (Uint8Array | null)[] | null;
  readonly #utf8 = new TextDecoder("utf-8");
  readonly #tokens: number[] = [];
  #prefix = 0;
  #read = 0;
  /** The text released so far (by append). */
  #text = "";

  constructor(tokenizer: Tokenizer) {
    this.#tokenizer = tokenizer;
    this.#bytes = tokenizer.byteLevel ? tokenizer.tokenBytes() : null;
  }

  #pending(): { before: string; after: string } {
    return {
      before: this.#tokenizer.decode(this.#tokens.slice(this.#prefix, this.#read), true, false),
      after: this.#tokenizer.decode(this.#tokens.slice(this.#prefix), true, false),
    };
  }

  /** Adds a token; returns the text it completes ("" while a character is incomplete). */
  push(token: number): string {
    if (this.#bytes) {
      const bytes = this.#bytes[token];
      return bytes ? this.#utf8.decode(bytes, { stream: true }) : "";
    }
    this.#tokens.push(token);
    const { before, after } = this.#pending();
    if (after.length <= before.length || after.endsWith("\uFFFD")) return "";
    this.#prefix = this.#read;
    this.#read = this.#tokens.length;
    return after.slice(before.length);
  }

  /** The text held back, released as it is. */
  flush(): string {
    if (this.#bytes) return this.#utf8.decode();
    const { before, after } = this.#pending();
    this.#prefix = this.#read = this.#tokens.length;
    return after.slice(before.length);
  }

  /** Adds a generated token (`last`: flush what is held back too): the new text, cut before the first
   * stop string that now appears in the whole text, and whether one did. */
  append(token: number, last: boolean, stopStrings: readonly string[]): { text: string; stopped: boolean } {
    const from = this.#text.length;
    this.#text += this.push(token) + (last ? this.flush() : "");
    const hit = stopStrings.map((s) => this.#text.indexOf(s, Math.max(0, from - s.length + 1))).filter((at) => at >= 0);
    const end = hit.length > 0 ? Math.max(from, Math.min(...hit)) : this.#text.length;
    return { text: this.#text.slice(from, end), stopped: hit.length > 0 };
  }
}
