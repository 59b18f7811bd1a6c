// Constrained output: a responseFormat (JSON Schema, any JSON object, or a GBNF grammar) compiled
// once to a grammar, and per sequence a Constraint that follows the tokens read and gives the mask of
// the next step: the tokens whose bytes the grammar takes, and the end-of-sequence tokens once the
// output is a whole sentence. The decode engine applies the mask on the device before sampling.
import { Tensor } from "../tensor.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { compileGbnf } from "./gbnf.ts";
import { jsonObjectGrammar, jsonSchemaGrammar } from "./json-schema.ts";
import { Grammar, type GrammarState } from "./matcher.ts";
import { allowedTokens, has, type Vocabulary, vocabularyOf } from "./vocabulary.ts";

export { jsonSchemaGrammar } from "./json-schema.ts";

/** What the output must be: free text, any JSON object, JSON valid under a schema, or a sentence of a
 * GBNF grammar (llama.cpp's notation, start rule `root`). */
export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; schema: unknown }
  | { type: "grammar"; grammar: string };

const compiled = new Map<string, Grammar>();
const MAX_COMPILED = 64;

/** The grammar of a response format (compiled once per distinct format), or null for free text. */
export function grammarOf(format: ResponseFormat): Grammar | null {
  if (format === null || typeof format !== "object" || Array.isArray(format))
    throw new Error("responseFormat must be an object with a type");
  const keys: Record<string, string[]> = { text: [], json_object: [], json_schema: ["schema"], grammar: ["grammar"] };
  const type = (format as { type?: unknown }).type;
  if (typeof type !== "string" || !(type in keys))
    throw new Error(`responseFormat: type must be one of ${Object.keys(keys).join(", ")}, got ${JSON.stringify(type)}`);
  for (const key of Object.keys(format)) {
    if (key !== "type" && !keys[type]!.includes(key))
      throw new Error(`responseFormat: unknown key '${key}' for type ${type}`);
  }
  if (format.type === "text") return null;
  const id =
    format.type === "json_schema"
      ? `s${JSON.stringify(format.schema)}`
      : format.type === "grammar"
        ? `g${format.grammar}`
        : "o";
  let grammar = compiled.get(id);
  if (grammar) {
    compiled.delete(id);
    compiled.set(id, grammar);
    return grammar;
  }
  let source: string;
  if (format.type === "json_schema") {
    if (format.schema === undefined) throw new Error("responseFormat: json_schema needs a schema");
    source = jsonSchemaGrammar(format.schema);
  } else if (format.type === "grammar") {
    if (typeof format.grammar !== "string") throw new Error("responseFormat: grammar must be a string of GBNF rules");
    source = format.grammar;
  } else {
    source = jsonObjectGrammar();
  }
  grammar = new Grammar(compileGbnf(source), source);
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  compiled.set(id, grammar);
  return grammar;
}

/** Device masks kept per grammar (state and stops), up to this many bytes per grammar. */
const DEVICE_MASK_BYTES = 64 << 20;
const deviceMasks = new WeakMap<Grammar, Map<string, Tensor>>();

/** One sequence's place in its grammar. */
export class Constraint {
  readonly grammar: Grammar;
  readonly vocabulary: Vocabulary;
  /** End-of-sequence ids: allowed once the output is a whole sentence. */
  readonly #stops: readonly number[];
  #state: GrammarState;
  readonly #pieces: readonly (Uint8Array | null)[];

  constructor(grammar: Grammar, tokenizer: Tokenizer, vocabularySize: number, stops: Iterable<number>) {
    this.grammar = grammar;
    this.vocabulary = vocabularyOf(tokenizer, vocabularySize);
    this.#pieces = tokenizer.tokenBytes();
    this.#stops = [...stops].filter((id) => id < vocabularySize);
    this.#state = grammar.initial;
  }

  /** Whether the output so far is a whole sentence of the grammar. */
  get complete(): boolean {
    return this.#state.accepting;
  }

  /** Whether nothing may follow (the sequence ends here). */
  get finished(): boolean {
    return this.#state.finished;
  }

  /** Follows a generated token (not a stop token); an Error when the grammar refuses it. */
  accept(token: number): Error | null {
    const bytes = this.#pieces[token];
    const next = bytes ? this.grammar.advanceBytes(this.#state, bytes) : null;
    if (!next)
      return new Error(`responseFormat: token ${token} does not continue the grammar (a mask was not applied)`);
    this.#state = next;
    return null;
  }

  /** The next step's mask as an MLX tensor [V] (fill's values), made once per grammar state and kept
   * (a recurring state's mask is not uploaded again); an Error as fill's. The caller must not dispose it. */
  maskTensor(): Tensor | Error {
    let cache = deviceMasks.get(this.grammar);
    if (!cache) deviceMasks.set(this.grammar, (cache = new Map()));
    const V = this.vocabulary.size;
    const key = `${V}|${this.#state.key}|${this.#state.accepting ? this.#stops.join(",") : ""}`;
    const hit = cache.get(key);
    if (hit) return hit;
    const row = new Float32Array(V);
    const stuck = this.fill(row);
    if (stuck) return stuck;
    const mask = Tensor.from(row, [V]);
    mask.eval();
    if (cache.size * V * 4 >= DEVICE_MASK_BYTES) {
      const [oldest, tensor] = cache.entries().next().value!;
      cache.delete(oldest);
      tensor.dispose();
    }
    cache.set(key, mask);
    return mask;
  }

  /** The next step's additive mask into `row` (0: allowed, -infinity: not), V entries; an Error when
   * no token continues the grammar (the vocabulary cannot spell what it needs). */
  fill(row: Float32Array): Error | null {
    const allowed = allowedTokens(this.grammar, this.vocabulary, this.#state);
    let any = false;
    for (let id = 0; id < row.length; id++) {
      const ok = has(allowed, id);
      row[id] = ok ? 0 : Number.NEGATIVE_INFINITY;
      any ||= ok;
    }
    if (this.#state.accepting) {
      for (const id of this.#stops) row[id] = 0;
      any ||= this.#stops.length > 0;
    }
    return any ? null : new Error("responseFormat: no token of this vocabulary continues the grammar here");
  }
}
