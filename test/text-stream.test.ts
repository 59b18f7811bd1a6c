// Streamed text (src/engine/text.ts) against the tokenizer's own decode (tokenizers.js): the pieces
// released token by token add up to the decode of all the tokens, and a piece never ends in half a
// character. The default model's tokenizer is byte-level (the stream decodes token bytes as UTF-8);
// the fixtures' are SentencePiece-style (the stream decodes windows of tokens).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { TextStream } from "../src/engine/text.ts";
import { DEFAULT_MODEL_DIR, Tokenizer } from "../src/index.ts";

const TEXTS = [
  "Hello, world! It's 3.14 — naïve café",
  "日本語のテキストと emoji 🎉👩‍💻 mixed",
  "  spaces  ,  before . punctuation ,and\nnew lines\t\ttabs",
  '{"key": [1, 2.5e-3, null], "ü": "ß"}',
];

/** A deterministic stream of ids in [0, n) (xorshift). */
function randomIds(seed: number, count: number, n: number): number[] {
  let x = seed >>> 0 || 1;
  return Array.from({ length: count }, () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  });
}

function streamed(tokenizer: Tokenizer, ids: readonly number[]): string[] {
  const stream = new TextStream(tokenizer);
  const pieces = ids.map((id) => stream.push(id));
  pieces.push(stream.flush());
  return pieces;
}

const tokenizers: [string, Tokenizer, boolean][] = [
  ["default model (byte-level)", Tokenizer.fromDir(DEFAULT_MODEL_DIR), true],
  [
    "llama fixture (SentencePiece)",
    Tokenizer.fromDir(join(import.meta.dir, "fixtures", "data", "models", "llama")),
    false,
  ],
];

describe.each(tokenizers)("TextStream, %s", (_, tokenizer, byteLevel) => {
  test("the decoder kind is recognized", () => {
    expect(tokenizer.byteLevel).toBe(byteLevel);
  });

  test("text pieces add up to the decode and complete each character", () => {
    for (const text of TEXTS) {
      const ids = tokenizer.encode(text, false);
      const pieces = streamed(tokenizer, ids);
      const whole = tokenizer.decode(ids, true, false);
      expect(pieces.join("")).toBe(whole);
      for (const piece of pieces) expect(piece.includes("\uFFFD")).toBe(false);
      // Released as soon as complete: what is out after each token is the decode of the tokens so far
      // less at most one incomplete character.
      let out = "";
      for (const [i, piece] of pieces.slice(0, -1).entries()) {
        out += piece;
        const sofar = tokenizer.decode(ids.slice(0, i + 1), true, false);
        expect(whole.startsWith(out)).toBe(true);
        expect(sofar.replace(/\uFFFD+$/, "").startsWith(out)).toBe(true);
      }
    }
  });

  test("random ids (bytes that are not UTF-8, special tokens) add up to the decode", () => {
    const vocab = tokenizer.tokenBytes().length;
    for (let seed = 1; seed <= 200; seed++) {
      const ids = randomIds(seed, 1 + (seed % 40), vocab);
      expect(streamed(tokenizer, ids).join("")).toBe(tokenizer.decode(ids, true, false));
    }
  });
});
