// A tokenizer's vocabulary as a byte trie (made once per tokenizer and model vocabulary size), and the
// token mask of a grammar state: a token is allowed when the grammar takes all of its bytes. The walk
// goes down the trie with the grammar's state, so a shared prefix is matched once and a refused byte
// prunes every token under it. Masks are kept per grammar and state (a JSON object's keys, a string's
// body: the states recur), as bitsets of the vocabulary.
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { Grammar, GrammarState } from "./matcher.ts";

export class Vocabulary {
  /** Ids the model scores (its vocab_size: may exceed the tokenizer's, or fall short of it). */
  readonly size: number;
  /** Trie: node n's children are childNode[childStart[n] .. childStart[n + 1]), reached by
   * childByte; the tokens that end at node n are tokenIds[tokenStart[n] .. tokenStart[n + 1]). */
  readonly childStart: Int32Array;
  readonly childByte: Uint8Array;
  readonly childNode: Int32Array;
  readonly tokenStart: Int32Array;
  readonly tokenIds: Int32Array;

  constructor(pieces: readonly (Uint8Array | null)[], size: number) {
    this.size = size;
    // Build with maps, then flatten breadth-first.
    const children: Map<number, number>[] = [new Map()];
    const ends: number[][] = [[]];
    for (let id = 0; id < Math.min(size, pieces.length); id++) {
      const bytes = pieces[id];
      if (!bytes || bytes.length === 0) continue;
      let node = 0;
      for (const b of bytes) {
        let next = children[node]!.get(b);
        if (next === undefined) {
          next = children.push(new Map()) - 1;
          ends.push([]);
          children[node]!.set(b, next);
        }
        node = next;
      }
      ends[node]!.push(id);
    }
    const n = children.length;
    this.childStart = new Int32Array(n + 1);
    this.tokenStart = new Int32Array(n + 1);
    const bytes: number[] = [];
    const nodes: number[] = [];
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      this.childStart[i] = bytes.length;
      this.tokenStart[i] = ids.length;
      for (const [b, c] of [...children[i]!].sort((x, y) => x[0] - y[0])) {
        bytes.push(b);
        nodes.push(c);
      }
      ids.push(...ends[i]!);
    }
    this.childStart[n] = bytes.length;
    this.tokenStart[n] = ids.length;
    this.childByte = Uint8Array.from(bytes);
    this.childNode = Int32Array.from(nodes);
    this.tokenIds = Int32Array.from(ids);
  }
}

const vocabularies = new WeakMap<Tokenizer, Map<number, Vocabulary>>();

/** The tokenizer's vocabulary over the model's `size` ids (made once). */
export function vocabularyOf(tokenizer: Tokenizer, size: number): Vocabulary {
  let bySize = vocabularies.get(tokenizer);
  if (!bySize) vocabularies.set(tokenizer, (bySize = new Map()));
  let v = bySize.get(size);
  if (!v) bySize.set(size, (v = new Vocabulary(tokenizer.tokenBytes(), size)));
  return v;
}

/** Masks kept per grammar and vocabulary; past this many the oldest go. */
const MAX_MASKS = 1024;

/** The tokens whose bytes the grammar takes from `state`, as a bitset over the vocabulary (bit i of
 * word i >> 5). End-of-sequence tokens are not in it: the caller allows them where the state accepts. */
export function allowedTokens(grammar: Grammar, vocabulary: Vocabulary, state: GrammarState): Uint32Array {
  let cache = grammar.masks.get(vocabulary);
  if (!cache) grammar.masks.set(vocabulary, (cache = new Map()));
  const hit = cache.get(state.key);
  if (hit) return hit;
  const mask = new Uint32Array(Math.ceil(vocabulary.size / 32));
  const { childStart, childByte, childNode, tokenStart, tokenIds } = vocabulary;
  const walk = (node: number, s: GrammarState) => {
    for (let c = childStart[node]!; c < childStart[node + 1]!; c++) {
      const next = grammar.advance(s, childByte[c]!);
      if (!next) continue;
      const child = childNode[c]!;
      for (let t = tokenStart[child]!; t < tokenStart[child + 1]!; t++) {
        const id = tokenIds[t]!;
        mask[id >>> 5]! |= 1 << (id & 31);
      }
      if (childStart[child + 1]! > childStart[child]! && next.tops.length > 0) walk(child, next);
    }
  };
  walk(0, state);
  if (cache.size >= MAX_MASKS) cache.delete(cache.keys().next().value!);
  cache.set(state.key, mask);
  return mask;
}

/** Whether bit `id` is set. */
export function has(mask: Uint32Array, id: number): boolean {
  return ((mask[id >>> 5]! >>> (id & 31)) & 1) === 1;
}
