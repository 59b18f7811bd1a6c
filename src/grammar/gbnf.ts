// Grammars in llama.cpp's GBNF notation, compiled to byte-level rules for the matcher (matcher.ts).
//
//   root   ::= "{" ws pair ("," ws pair)* "}"     # a rule: alternatives of sequences
//   pair   ::= [a-z]+ ":" [0-9]{1,3}              # literals, classes, references, groups
//   ws     ::= [ \t\n]*                           # repetition: * + ? {m} {m,} {m,n}
//
// Literals and classes are Unicode code points (escapes \n \r \t \\ \" \[ \] \xHH \uHHHH
// \UHHHHHHHH); "." is any code point. The matcher works on bytes: a literal becomes its UTF-8 bytes, a
// class its ASCII bytes plus the UTF-8 byte sequences of its other code points, so only valid UTF-8
// matches. A rule runs until the next `name ::=`; the start rule is `root`. Left recursion (a rule
// that can reach itself without reading a byte) is an Error, as in llama.cpp.

/** Element kinds of the compiled rules. */
export const END = 0;
export const BYTES = 1;
export const REF = 2;

/** A grammar compiled to flat arrays: rule r's alternatives start at `alternatives[r]`; each is a run
 * of elements closed by END. A BYTES element matches one byte of `sets[arg]` (256 entries, 1 = in);
 * a REF element the rule `arg`. */
export interface CompiledGrammar {
  kind: Uint8Array;
  arg: Int32Array;
  sets: Uint8Array[];
  alternatives: number[][];
  names: string[];
  root: number;
}

type Expr =
  | { t: "alt"; options: Expr[][] }
  | { t: "lit"; points: number[] }
  | { t: "class"; ranges: [number, number][] }
  | { t: "ref"; name: string; at: number }
  | { t: "repeat"; body: Expr; min: number; max: number };

const MAX_POINT = 0x10ffff;
const MAX_REPEAT = 10_000;
/** The most elements a compiled grammar may have (nested counted repetitions multiply). */
const MAX_ELEMENTS = 2_000_000;

function fail(source: string, at: number, message: string): never {
  const line = source.slice(0, at).split("\n").length;
  throw new Error(`grammar: ${message} (line ${line})`);
}

/** Parses GBNF text into named rule bodies. */
function parse(source: string): Map<string, { body: Expr; at: number }> {
  const rules = new Map<string, { body: Expr; at: number }>();
  let i = 0;
  const name = /[A-Za-z0-9_-]+/y;
  const skip = () => {
    for (;;) {
      while (i < source.length && /\s/.test(source[i]!)) i++;
      if (source[i] !== "#") return;
      while (i < source.length && source[i] !== "\n") i++;
    }
  };
  /** Whether a `name ::=` starts at i (the end of the current rule). */
  const ruleStart = () => /[A-Za-z0-9_-]+[ \t]*::=/y.test(source.slice(i, i + 200));
  const point = (inClass: boolean): number => {
    const c = source.codePointAt(i);
    if (c === undefined) fail(source, i, "unexpected end");
    if (c !== 0x5c) {
      i += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = source[i + 1];
    const simple: Record<string, number> = {
      n: 10,
      r: 13,
      t: 9,
      "\\": 0x5c,
      '"': 0x22,
      "[": 0x5b,
      "]": 0x5d,
      "-": 0x2d,
      "^": 0x5e,
      "/": 0x2f,
    };
    if (e !== undefined && e in simple && (inClass || !"-^".includes(e))) {
      i += 2;
      return simple[e]!;
    }
    const digits = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
    const hex = source.slice(i + 2, i + 2 + digits);
    if (digits === 0 || !new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex))
      fail(source, i, `unknown escape '\\${e ?? ""}'`);
    const value = Number.parseInt(hex, 16);
    if (value > MAX_POINT) fail(source, i, `escape '\\${e}${hex}' is past U+10FFFF`);
    i += 2 + digits;
    return value;
  };
  const sequence = (nested: boolean): Expr[] => {
    const items: Expr[] = [];
    for (;;) {
      skip();
      const c = source[i];
      if (c === undefined || c === "|" || c === ")" || (!nested && ruleStart())) return items;
      let item: Expr;
      const at = i;
      if (c === '"') {
        i++;
        const points: number[] = [];
        while (source[i] !== '"') {
          if (i >= source.length) fail(source, at, "unterminated literal");
          points.push(point(false));
        }
        i++;
        item = { t: "lit", points };
      } else if (c === "[") {
        i++;
        const negated = source[i] === "^";
        if (negated) i++;
        const ranges: [number, number][] = [];
        while (source[i] !== "]") {
          if (i >= source.length) fail(source, at, "unterminated character class");
          const lo = point(true);
          let hi = lo;
          if (source[i] === "-" && source[i + 1] !== "]") {
            if (i + 1 >= source.length) fail(source, at, "unterminated character class");
            i++;
            hi = point(true);
          }
          if (hi < lo) fail(source, at, `empty range in character class`);
          ranges.push([lo, hi]);
        }
        i++;
        item = { t: "class", ranges: negated ? complement(ranges) : ranges };
      } else if (c === "(") {
        i++;
        item = alternatives(true);
        skip();
        if (source[i] !== ")") fail(source, at, "unclosed '('");
        i++;
      } else if (c === ".") {
        i++;
        item = { t: "class", ranges: [[0, MAX_POINT]] };
      } else {
        name.lastIndex = i;
        const m = name.exec(source);
        if (!m) fail(source, i, `unexpected '${c}'`);
        i += m[0].length;
        item = { t: "ref", name: m[0], at };
      }
      // Postfix repetition.
      for (;;) {
        const p = source[i];
        if (p === "*") item = { t: "repeat", body: item, min: 0, max: Infinity };
        else if (p === "+") item = { t: "repeat", body: item, min: 1, max: Infinity };
        else if (p === "?") item = { t: "repeat", body: item, min: 0, max: 1 };
        else if (p === "{") {
          const m = /\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}/y;
          m.lastIndex = i;
          const r = m.exec(source);
          if (!r) fail(source, i, "malformed repetition '{...}'");
          const min = Number(r[1]);
          const max = r[2] === undefined ? min : r[3] === "" ? Infinity : Number(r[3]);
          if (max < min || min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT))
            fail(source, i, `repetition ${r[0]} must have min <= max <= ${MAX_REPEAT}`);
          item = { t: "repeat", body: item, min, max };
          i += r[0].length - 1;
        } else break;
        i++;
      }
      items.push(item);
    }
  };
  const alternatives = (nested: boolean): Expr => {
    const options = [sequence(nested)];
    while (source[i] === "|") {
      i++;
      options.push(sequence(nested));
    }
    return { t: "alt", options };
  };
  for (;;) {
    skip();
    if (i >= source.length) break;
    name.lastIndex = i;
    const m = name.exec(source);
    const at = i;
    if (!m) fail(source, i, `expected a rule name, got '${source[i]}'`);
    i += m[0].length;
    while (source[i] === " " || source[i] === "\t") i++;
    if (source.slice(i, i + 3) !== "::=") fail(source, i, `expected '::=' after '${m[0]}'`);
    i += 3;
    const body = alternatives(false);
    if (source[i] === ")") fail(source, i, "unmatched ')'");
    if (rules.has(m[0])) fail(source, at, `rule '${m[0]}' is defined twice`);
    rules.set(m[0], { body, at });
  }
  return rules;
}

/** The code points not in `ranges`. */
function complement(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  let next = 0;
  for (const [lo, hi] of sorted) {
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= MAX_POINT) out.push([next, MAX_POINT]);
  return out;
}

function utf8(point: number): number[] {
  return [...new TextEncoder().encode(String.fromCodePoint(point))];
}

/** The UTF-8 encodings of the code points lo..hi (of one encoded length, no surrogates) as runs of
 * per-byte ranges (the split of regex engines: each byte position a whole range). */
function utf8Runs(lo: number, hi: number, out: [number, number][][]): void {
  if (lo > hi) return;
  // Surrogates have no UTF-8 encoding; encoded lengths change at 0x80, 0x800, 0x10000.
  for (const [a, b] of [[0xd800, 0xdfff]] as const) {
    if (lo <= b && hi >= a) {
      utf8Runs(lo, a - 1, out);
      utf8Runs(b + 1, hi, out);
      return;
    }
  }
  for (const edge of [0x7f, 0x7ff, 0xffff]) {
    if (lo <= edge && hi > edge) {
      utf8Runs(lo, edge, out);
      utf8Runs(edge + 1, hi, out);
      return;
    }
  }
  const length = utf8(lo).length;
  for (let n = 1; n < length; n++) {
    const m = (1 << (6 * n)) - 1;
    if ((lo & ~m) !== (hi & ~m)) {
      if ((lo & m) !== 0) {
        utf8Runs(lo, lo | m, out);
        utf8Runs((lo | m) + 1, hi, out);
        return;
      }
      if ((hi & m) !== m) {
        utf8Runs(lo, (hi & ~m) - 1, out);
        utf8Runs(hi & ~m, hi, out);
        return;
      }
    }
  }
  const a = utf8(lo);
  const b = utf8(hi);
  out.push(a.map((x, k) => [x, b[k]!]));
}

/** Compiles GBNF text (start rule `root`). */
export function compileGbnf(source: string): CompiledGrammar {
  if (typeof source !== "string") throw new Error("grammar: must be a string of GBNF rules");
  const parsed = parse(source);
  if (!parsed.has("root")) throw new Error("grammar: no 'root' rule");
  const names = [...parsed.keys()];
  const ids = new Map(names.map((n, i) => [n, i]));
  // Rule bodies as alternatives of element lists; helper rules are appended.
  type Element = { kind: typeof BYTES; set: number } | { kind: typeof REF; rule: number };
  const bodies: Element[][][] = names.map(() => []);
  const sets: Uint8Array[] = [];
  const setIds = new Map<string, number>();
  const setOf = (lo: number, hi: number): number => {
    const key = `${lo}-${hi}`;
    let id = setIds.get(key);
    if (id === undefined) {
      const set = new Uint8Array(256);
      set.fill(1, lo, hi + 1);
      id = sets.push(set) - 1;
      setIds.set(key, id);
    }
    return id;
  };
  const helper = (base: string, alternatives: Element[][]): Element => {
    const id = names.push(`${base}-${names.length}`) - 1;
    bodies.push(alternatives);
    return { kind: REF, rule: id };
  };
  const classCache = new Map<string, Element[]>();
  let size = 0;
  const lower = (e: Expr, rule: string): Element[] => {
    switch (e.t) {
      case "lit":
        return e.points.flatMap((p) => utf8(p).map((b): Element => ({ kind: BYTES, set: setOf(b, b) })));
      case "ref": {
        const id = ids.get(e.name);
        if (id === undefined) fail(source, e.at, `rule '${e.name}' is not defined`);
        return [{ kind: REF, rule: id }];
      }
      case "alt": {
        const options = e.options.map((seq) => seq.flatMap((x) => lower(x, rule)));
        return options.length === 1 ? options[0]! : [helper(rule, options)];
      }
      case "class": {
        const key = JSON.stringify(e.ranges);
        const cached = classCache.get(key);
        if (cached) return cached;
        const ascii = new Uint8Array(256);
        const runs: [number, number][][] = [];
        for (const [lo, hi] of e.ranges) {
          if (lo < 0x80) ascii.fill(1, lo, Math.min(hi, 0x7f) + 1);
          if (hi >= 0x80) utf8Runs(Math.max(lo, 0x80), hi, runs);
        }
        const options: Element[][] = runs.map((run) =>
          run.map(([lo, hi]): Element => ({ kind: BYTES, set: setOf(lo, hi) })),
        );
        if (ascii.some((x) => x)) {
          const id = sets.push(ascii) - 1;
          options.unshift([{ kind: BYTES, set: id }]);
        }
        if (options.length === 0) fail(source, 0, `a character class in rule '${rule}' matches nothing`);
        const lowered = options.length === 1 ? options[0]! : [helper(rule, options)];
        classCache.set(key, lowered);
        return lowered;
      }
      case "repeat": {
        const body = lower(e.body, rule);
        size += body.length * Math.max(e.min, e.max === Infinity ? e.min + 1 : e.max);
        if (size > MAX_ELEMENTS)
          throw new Error(
            `grammar: rule '${rule}' expands to more than ${MAX_ELEMENTS} elements (nested counted repetitions)`,
          );
        const out: Element[] = [];
        for (let k = 0; k < e.min; k++) out.push(...body);
        if (e.max === Infinity) {
          // star ::= body star | (empty)
          const id = names.push(`${rule}-${names.length}`) - 1;
          bodies.push([[...body, { kind: REF, rule: id }], []]);
          out.push({ kind: REF, rule: id });
        } else {
          // Nested optionals: opt_k ::= body opt_(k-1) | (empty).
          let tail: Element[] = [];
          for (let k = e.min; k < e.max; k++) tail = [helper(rule, [[...body, ...tail], []])];
          out.push(...tail);
        }
        return out;
      }
    }
  };
  for (const [n, { body }] of parsed) {
    const e = body as Extract<Expr, { t: "alt" }>;
    bodies[ids.get(n)!] = e.options.map((seq) => seq.flatMap((x) => lower(x, n)));
  }
  checkLeftRecursion(bodies, names);
  const kind: number[] = [];
  const arg: number[] = [];
  const alternatives = bodies.map((alts) =>
    alts.map((elements) => {
      const start = kind.length;
      for (const el of elements) {
        kind.push(el.kind);
        arg.push(el.kind === BYTES ? el.set : el.rule);
      }
      kind.push(END);
      arg.push(0);
      return start;
    }),
  );
  return { kind: Uint8Array.from(kind), arg: Int32Array.from(arg), sets, alternatives, names, root: ids.get("root")! };
}

/** Throws if a rule can reach itself before reading a byte (the matcher would never stop expanding). */
function checkLeftRecursion(bodies: { kind: number; rule?: number }[][][], names: string[]): void {
  const nullable = new Array<boolean>(bodies.length).fill(false);
  for (let changed = true; changed; ) {
    changed = false;
    for (const [r, alts] of bodies.entries()) {
      if (nullable[r]) continue;
      if (alts.some((els) => els.every((el) => el.kind === REF && nullable[el.rule!]))) changed = nullable[r] = true;
    }
  }
  // Rules each rule can start with (through nullable prefixes).
  const starts = bodies.map((alts) => {
    const out = new Set<number>();
    for (const els of alts) {
      for (const el of els) {
        if (el.kind !== REF) break;
        out.add(el.rule!);
        if (!nullable[el.rule!]) break;
      }
    }
    return out;
  });
  const state = new Array<number>(bodies.length).fill(0);
  const visit = (r: number, path: number[]): void => {
    if (state[r] === 2) return;
    if (state[r] === 1) {
      const cycle = path.slice(path.indexOf(r)).map((x) => names[x]!.replace(/-\d+$/, ""));
      throw new Error(
        `grammar: rule '${cycle[0]}' is left-recursive or repeats something that can be empty (${[...cycle, cycle[0]].join(" -> ")})`,
      );
    }
    state[r] = 1;
    for (const s of starts[r]!) visit(s, [...path, r]);
    state[r] = 2;
  };
  for (let r = 0; r < bodies.length; r++) visit(r, []);
}
