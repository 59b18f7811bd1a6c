// Running a compiled grammar (gbnf.ts) over bytes, as llama.cpp's grammar sampler does: a state is
// the set of parse stacks still alive; a stack is the element to match next and, below it, where each
// enclosing rule continues. Reading a byte keeps the stacks whose next element takes it and expands
// them (rule references pushed, finished rules popped) until each again waits on a byte. A stack
// whose rules all finished is the accepting one.
//
// Stacks are hash-consed (one object per distinct stack, per grammar), so a state is known by the ids
// of its stacks' tops: equal states have equal keys, across sequences too, and a token mask computed
// for a state (vocabulary.ts) is reused whenever a sequence is there again. States are interned too
// (one object per key) and remember the transitions taken from them, so a byte read from a state seen
// before is a lookup: a token mask's walk over the vocabulary meets the same few states again and
// again (inside a string, after any letter). A rule reference that ends its alternative pushes
// nothing (a tail call), so repetitions do not grow the stacks.
import { type CompiledGrammar, END, REF } from "./gbnf.ts";

/** A stack node: `pos` is the element to match next (on top) or where the enclosing rule continues. */
interface Frame {
  readonly id: number;
  readonly pos: number;
  readonly below: Frame | null;
  /** Marks membership during one advance. */
  seen: number;
}

/** The most stacks a state may hold (an ambiguous grammar can multiply them). */
const MAX_STACKS = 4096;
/** The most transitions a grammar remembers (each a map entry; every interned state but the first
 * was reached by one, so this bounds the states too); past it the interned states start over. */
const MAX_TRANSITIONS = 1 << 20;

/** The key of the state of these tops: equal for equal states of one grammar. */
function stateKey(tops: readonly Frame[], accepting: boolean): string {
  const ids = tops.map((t) => t.id).sort((a, b) => a - b);
  return (accepting ? "a" : "") + ids.join(",");
}

/** A set of live stacks (their tops); `accepting` when a stack has finished the root rule. */
export class GrammarState {
  readonly tops: readonly Frame[];
  readonly accepting: boolean;
  /** Equal for equal states of one grammar. */
  readonly key: string;
  /** The transitions taken from this state (null: the byte is refused), valid in `generation`. */
  readonly next = new Map<number, GrammarState | null>();
  generation: number;

  constructor(tops: Frame[], accepting: boolean, generation: number, key = stateKey(tops, accepting)) {
    this.tops = tops;
    this.accepting = accepting;
    this.generation = generation;
    this.key = key;
  }

  /** Whether nothing can follow (the root rule finished and no stack waits on a byte). */
  get finished(): boolean {
    return this.accepting && this.tops.length === 0;
  }
}

export class Grammar {
  readonly compiled: CompiledGrammar;
  /** The grammar's source (GBNF), for messages and caches. */
  readonly source: string;
  readonly #frames = new Map<number, Frame>();
  #nextId = 1;
  #mark = 1;
  /** Interned states by key, and the transitions remembered in this generation; both start over
   * (a new generation) past `#maxTransitions`. */
  readonly #states = new Map<string, GrammarState>();
  #transitions = 0;
  readonly #maxTransitions: number;
  #generation = 0;
  readonly initial: GrammarState;
  /** Token masks by state key, per vocabulary (vocabulary.ts fills it). */
  readonly masks = new WeakMap<object, Map<string, Uint32Array>>();

  /** `maxTransitions`: the most transitions remembered before the interned states start over (0:
   * none, every byte is matched afresh). */
  constructor(compiled: CompiledGrammar, source: string, maxTransitions = MAX_TRANSITIONS) {
    this.compiled = compiled;
    this.source = source;
    this.#maxTransitions = maxTransitions;
    const tops: Frame[] = [];
    const mark = this.#mark++;
    let accepting = false;
    for (const start of compiled.alternatives[compiled.root]!)
      accepting = this.#expand(start, null, tops, mark) || accepting;
    this.initial = this.#intern(tops, accepting);
  }

  /** The one state of these tops. */
  #intern(tops: Frame[], accepting: boolean): GrammarState {
    if (this.#maxTransitions === 0) return new GrammarState(tops, accepting, this.#generation);
    const key = stateKey(tops, accepting);
    const known = this.#states.get(key);
    if (known) return known;
    const state = new GrammarState(tops, accepting, this.#generation, key);
    this.#states.set(key, state);
    return state;
  }

  #frame(pos: number, below: Frame | null): Frame {
    // pos < 2^26 and ids < 2^27 keep the key exact in a double.
    const key = pos * 134217728 + (below?.id ?? 0);
    let f = this.#frames.get(key);
    if (!f) {
      f = { id: this.#nextId++, pos, below, seen: 0 };
      this.#frames.set(key, f);
    }
    return f;
  }

  /** Expands the stack (element `pos`, then `below`) until each branch waits on a byte: those tops
   * join `out`. Returns whether a branch finished the root rule. */
  #expand(pos: number, below: Frame | null, out: Frame[], mark: number): boolean {
    const { kind, arg, alternatives } = this.compiled;
    const k = kind[pos]!;
    if (k === END) return below === null ? true : this.#expand(below.pos, below.below, out, mark);
    if (k === REF) {
      const next = kind[pos + 1] === END ? below : this.#frame(pos + 1, below);
      let accepting = false;
      for (const start of alternatives[arg[pos]!]!) accepting = this.#expand(start, next, out, mark) || accepting;
      return accepting;
    }
    const top = this.#frame(pos, below);
    if (top.seen !== mark) {
      top.seen = mark;
      out.push(top);
      if (out.length > MAX_STACKS)
        throw new Error(`grammar: more than ${MAX_STACKS} parses are alive at once (the grammar is too ambiguous)`);
    }
    return false;
  }

  /** The state after one byte, or null when no stack takes it. */
  advance(state: GrammarState, byte: number): GrammarState | null {
    if (this.#maxTransitions === 0) return this.#step(state, byte);
    if (this.#transitions >= this.#maxTransitions) {
      // Start over: states of older generations drop their transitions when next read, so the ones
      // no sequence holds become garbage.
      this.#states.clear();
      this.#transitions = 0;
      this.#generation++;
    }
    if (state.generation !== this.#generation) {
      state.next.clear();
      state.generation = this.#generation;
    }
    const known = state.next.get(byte);
    if (known !== undefined) return known;
    const next = this.#step(state, byte);
    state.next.set(byte, next);
    this.#transitions++;
    return next;
  }

  #step(state: GrammarState, byte: number): GrammarState | null {
    const { arg, sets } = this.compiled;
    const out: Frame[] = [];
    const mark = this.#mark++;
    let accepting = false;
    for (const top of state.tops) {
      if (sets[arg[top.pos]!]![byte] === 1) accepting = this.#expand(top.pos + 1, top.below, out, mark) || accepting;
    }
    if (out.length === 0 && !accepting) return null;
    return this.#intern(out, accepting);
  }

  /** The state after `bytes`, or null where one is refused. */
  advanceBytes(state: GrammarState, bytes: Uint8Array): GrammarState | null {
    let s: GrammarState | null = state;
    for (let i = 0; i < bytes.length && s; i++) s = this.advance(s, bytes[i]!);
    return s;
  }

  /** Whether the text (UTF-8) is a whole sentence of the grammar. */
  matches(text: string): boolean {
    return this.advanceBytes(this.initial, new TextEncoder().encode(text))?.accepting ?? false;
  }
}
