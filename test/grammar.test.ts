// Constrained output (src/grammar/): GBNF parsing and matching, JSON Schema to grammar, token masks
// against a brute-force check, and generation under a responseFormat on the MLX and CPU backends:
// every output of 60 generated schemas (3 small ones on the CPU reference backend), greedy and
// sampled, parses and validates with ajv.
import { describe, expect, test } from "bun:test";
import Ajv from "ajv";
import { compileGbnf } from "../src/grammar/gbnf.ts";
import { jsonSchemaGrammar } from "../src/grammar/json-schema.ts";
import { Grammar, type GrammarState } from "../src/grammar/matcher.ts";
import { allowedTokens, has, vocabularyOf } from "../src/grammar/vocabulary.ts";
import { DEFAULT_MODEL_DIR, generateText, loadModel, Tokenizer } from "../src/index.ts";

const tokenizer = Tokenizer.fromDir(DEFAULT_MODEL_DIR);

function grammar(source: string): Grammar {
  return new Grammar(compileGbnf(source), source);
}

describe("GBNF", () => {
  test("literals, classes, groups and repetition match what they say", () => {
    const g = grammar(
      `root ::= greeting ", " name "!"{1,3}\ngreeting ::= "hi" | "hello"\nname ::= [A-Z] [a-z]* # a comment\n`,
    );
    for (const ok of ["hi, Ann!", "hello, B!!!", "hi, Zed!!"]) expect(g.matches(ok)).toBe(true);
    for (const bad of ["hi, ann!", "hey, Ann!", "hi, Ann", "hi, Ann!!!!", "hi,Ann!"])
      expect(g.matches(bad)).toBe(false);
  });

  test("classes beyond ASCII match whole UTF-8 characters; negated classes take any other character", () => {
    const greek = grammar(`root ::= [α-ω]+`);
    expect(greek.matches("αβγ")).toBe(true);
    expect(greek.matches("αb")).toBe(false);
    expect(greek.matches("Ω")).toBe(false);
    const notQuote = grammar(`root ::= "\\"" [^"\\\\]* "\\""`);
    for (const ok of [`"é€😀"`, `""`, `"a b"`]) expect(notQuote.matches(ok)).toBe(true);
    expect(notQuote.matches(`"a"b"`)).toBe(false);
    // A lone continuation byte is not a character.
    const bytes = new Uint8Array([0x22, 0x80, 0x22]);
    expect(notQuote.advanceBytes(notQuote.initial, bytes)?.accepting ?? false).toBe(false);
    const escapes = grammar(`root ::= "\\x41\\u00e9\\n" [\\x30-\\x39]`);
    expect(escapes.matches("Aé\n7")).toBe(true);
  });

  test("rules across lines, nested groups, optional and counted repetition", () => {
    const g = grammar(`root ::= item ("," item){0,2}
item ::= (
  "a" | "b" ("x" | "y")?
)`);
    for (const ok of ["a", "b", "bx,a", "a,by,a"]) expect(g.matches(ok)).toBe(true);
    for (const bad of ["", "a,a,a,a", "bz", "a,"]) expect(g.matches(bad)).toBe(false);
  });

  test("errors name the problem", () => {
    expect(() => compileGbnf(`start ::= "a"`)).toThrow("no 'root' rule");
    expect(() => compileGbnf(`root ::= missing`)).toThrow("rule 'missing' is not defined");
    expect(() => compileGbnf(`root ::= root "a" | "b"`)).toThrow("left-recursive");
    expect(() => compileGbnf(`root ::= ("a"?)*`)).toThrow("repeats something that can be empty");
    expect(() => compileGbnf(`root ::= "abc`)).toThrow("unterminated literal");
    expect(() => compileGbnf(`root ::= [a-`)).toThrow("character class");
    expect(() => compileGbnf(`root ::= "\\q"`)).toThrow("unknown escape");
    expect(() => compileGbnf(`root ::= ("a"`)).toThrow("unclosed '('");
    expect(() => compileGbnf(`root ::= "a"{3,1}`)).toThrow("min <= max");
    expect(() => compileGbnf(`root ::= "a"\nroot ::= "b"`)).toThrow("defined twice");
    expect(() => compileGbnf(`root ::= [z-a]`)).toThrow("empty range");
  });
});

describe("JSON Schema to grammar", () => {
  const accepts = (schema: object, text: string) => grammar(jsonSchemaGrammar(schema)).matches(text);

  test("objects: required and optional properties in order, no others", () => {
    const schema = {
      type: "object",
      properties: { a: { type: "integer" }, b: { type: "string" }, c: { type: "boolean" } },
      required: ["b"],
    };
    for (const ok of [`{"b":""}`, `{"a":1,"b":"x"}`, `{"b":"x","c":true}`, `{ "a" : -20 , "b" : "y" , "c" : false }`])
      expect(accepts(schema, ok)).toBe(true);
    for (const bad of [`{}`, `{"a":1}`, `{"b":"x","a":1}`, `{"b":"x","d":1}`, `{"b":"x",}`, `{"a":1.5,"b":"x"}`])
      expect(accepts(schema, bad)).toBe(false);
  });

  test("arrays, enums, const, anyOf, type lists, lengths and $ref recursion", () => {
    const schema = {
      type: "object",
      properties: {
        tags: { type: "array", items: { enum: ["x", 2, null] }, minItems: 1, maxItems: 2 },
        kind: { const: "k" },
        id: { type: ["string", "null"], maxLength: 3 },
        either: { anyOf: [{ type: "number" }, { type: "boolean" }] },
        tree: { $ref: "#/$defs/node" },
      },
      required: ["tags", "kind", "id", "either", "tree"],
      $defs: {
        node: {
          type: "object",
          properties: { kids: { type: "array", items: { $ref: "#/$defs/node" } } },
          required: ["kids"],
        },
      },
    };
    const ok = `{"tags":["x",2],"kind":"k","id":null,"either":1.5e3,"tree":{"kids":[{"kids":[]}]}}`;
    expect(accepts(schema, ok)).toBe(true);
    expect(accepts(schema, ok.replace(`["x",2]`, `[]`))).toBe(false);
    expect(accepts(schema, ok.replace(`["x",2]`, `["x",2,null]`))).toBe(false);
    expect(accepts(schema, ok.replace(`"k"`, `"j"`))).toBe(false);
    expect(accepts(schema, ok.replace(`null`, `"abcd"`))).toBe(false);
    expect(accepts(schema, ok.replace(`null`, `"abc"`))).toBe(true);
    expect(accepts(schema, ok.replace(`1.5e3`, `"1"`))).toBe(false);
    expect(accepts(schema, ok.replace(`{"kids":[]}`, `{}`))).toBe(false);
  });

  test("strings: escapes and any character but quote, backslash and controls", () => {
    const schema = { type: "string" };
    for (const ok of [`"a\\"b"`, `"\\u00e9\\n"`, `"日本"`]) expect(accepts(schema, ok)).toBe(true);
    for (const bad of [`"a"b"`, `"\\x"`, `"a\nb"`, `"\\u12"`]) expect(accepts(schema, bad)).toBe(false);
  });

  test("unsupported or malformed schemas are Errors naming the keyword and place", () => {
    expect(() => jsonSchemaGrammar({ type: "string", pattern: "^a$" })).toThrow(
      "unsupported JSON Schema keyword 'pattern' at #",
    );
    expect(() => jsonSchemaGrammar({ type: "object", properties: { n: { type: "integer", minimum: 0 } } })).toThrow(
      "'minimum' at #/properties/n",
    );
    expect(() => jsonSchemaGrammar({ type: "strin" })).toThrow('unknown type "strin"');
    expect(() => jsonSchemaGrammar({ type: "object", properties: { a: {} }, required: ["b"] })).toThrow(
      "required property 'b'",
    );
    expect(() => jsonSchemaGrammar({ $ref: "#/$defs/none" })).toThrow("$ref '#/$defs/none'");
    expect(() => jsonSchemaGrammar({ type: "array", minItems: 3, maxItems: 1 })).toThrow("maxItems < minItems");
    expect(() => jsonSchemaGrammar(false)).toThrow("no value is valid");
    expect(() => jsonSchemaGrammar("object")).toThrow("must be a JSON Schema object");
    expect(() => jsonSchemaGrammar({ allOf: [{ type: "string" }, { maxLength: 2 }] })).toThrow("allOf");
  });
});

/** A state as its stacks' element positions, top first (frame ids differ between grammars). */
function stacks(state: GrammarState): string {
  const paths = state.tops.map((top) => {
    const path: number[] = [];
    for (let f: typeof top | null = top; f; f = f.below) path.push(f.pos);
    return path.join(">");
  });
  return `${state.accepting ? "accepting " : ""}${paths.sort().join(" | ")}`;
}

test("a state's token mask is the set of tokens whose bytes the grammar takes (brute force)", () => {
  const source = jsonSchemaGrammar({
    type: "object",
    properties: { name: { type: "string" }, n: { type: "number" } },
    required: ["name"],
  });
  // The reference matches every byte afresh (no interned states, no remembered transitions); the
  // grammars under test keep them, one with room for 3 transitions (it starts over again and again).
  const reference = new Grammar(compileGbnf(source), source, 0);
  const vocabulary = vocabularyOf(tokenizer, 8192);
  const pieces = tokenizer.tokenBytes();
  const prefixes = ["", `{"name": "`, `{"name":"ab\\`, `{"name":"x", "n": 1`, `{"name":"x"`];
  for (const g of [grammar(source), new Grammar(compileGbnf(source), source, 3)]) {
    for (const pass of [1, 2]) {
      for (const prefix of prefixes) {
        const text = new TextEncoder().encode(prefix);
        const state = g.advanceBytes(g.initial, text)!;
        const expectedState = reference.advanceBytes(reference.initial, text)!;
        expect(state).not.toBeNull();
        expect(stacks(state)).toBe(stacks(expectedState));
        const mask = allowedTokens(g, vocabulary, state);
        let allowed = 0;
        for (let id = 0; id < 8192; id++) {
          const bytes = pieces[id];
          const expected =
            bytes !== null &&
            bytes !== undefined &&
            bytes.length > 0 &&
            reference.advanceBytes(expectedState, bytes) !== null;
          if (has(mask, id) !== expected)
            throw new Error(
              `pass ${pass}, prefix ${JSON.stringify(prefix)}: token ${id} ${JSON.stringify(tokenizer.decode([id]))} mask ${has(mask, id)}, brute force ${expected}`,
            );
          // A transition remembered by the walk gives the state the reference reaches.
          if (expected)
            expect(stacks(g.advanceBytes(state, bytes!)!)).toBe(stacks(reference.advanceBytes(expectedState, bytes!)!));
          allowed += Number(expected);
        }
        expect(allowed).toBeGreaterThan(0);
      }
      // The second pass finds its masks made: the walks start over from states read again.
      g.masks.delete(vocabulary);
    }
  }
});

/** A seeded generator of JSON Schemas: objects of leaves, nested objects and arrays, enums, consts,
 * anyOf, type lists, $defs references; strings and arrays bounded so that outputs end within the
 * token budget. */
function schemas(count: number, seed: number): object[] {
  let s = seed;
  const rand = () => (s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const names = ["id", "name", "age", "title", "done", "score", "tags", "kind", "note", "count", "user", "items"];
  const leaf = (): object =>
    pick([
      () => ({ type: "string", maxLength: 1 + Math.floor(rand() * 10) }),
      () => ({ type: "string", minLength: 1, maxLength: 6 }),
      () => ({ type: "integer" }),
      () => ({ type: "number" }),
      () => ({ type: "boolean" }),
      () => ({ type: "null" }),
      () => ({ enum: ["red", "green", "blue"] }),
      () => ({ enum: [1, 2, 3, "many"] }),
      () => ({ const: pick(["yes", 42, true]) }),
      () => ({ type: ["integer", "null"] }),
      () => ({ anyOf: [{ type: "boolean" }, { type: "string", maxLength: 4 }] }),
    ])();
  const node = (depth: number): object => {
    const r = rand();
    if (depth >= 2 || r < 0.5) return leaf();
    if (r < 0.75)
      return {
        type: "array",
        items: node(depth + 1),
        minItems: Math.floor(rand() * 2),
        maxItems: 1 + Math.floor(rand() * 3),
      };
    return object(depth + 1);
  };
  const object = (depth: number): object => {
    const keys = [...new Set(Array.from({ length: 1 + Math.floor(rand() * 4) }, () => pick(names)))];
    const properties = Object.fromEntries(keys.map((k) => [k, node(depth)]));
    const required = keys.filter(() => rand() < 0.6);
    return { type: "object", properties, required, ...(rand() < 0.5 ? { additionalProperties: false } : {}) };
  };
  return Array.from({ length: count }, (_, i) => {
    if (i % 10 === 9)
      return {
        type: "object",
        properties: {
          head: { $ref: "#/$defs/item" },
          rest: { type: "array", items: { $ref: "#/$defs/item" }, maxItems: 2 },
        },
        required: ["head"],
        $defs: { item: object(1) },
      };
    if (i % 10 === 4) return { type: "array", items: object(1), minItems: 1, maxItems: 2 };
    return object(0);
  });
}

// The CPU reference backend decodes about 2 tokens/s here: it gets three small schemas, or with
// MLXB_GRAMMAR_CPU_SCHEMAS=n the first n of the MLX backend's (a long run, not the suite's).
const CPU_SCHEMAS = Number(process.env.MLXB_GRAMMAR_CPU_SCHEMAS ?? 0);
const SMALL = [
  { type: "object", properties: { title: { type: "null" }, name: { const: "yes" } }, required: ["title", "name"] },
  { enum: ["red", "green", "blue"] },
  { type: "array", items: { type: "boolean" }, minItems: 1, maxItems: 2 },
];

for (const backend of ["mlx", "cpu"] as const) {
  const long = backend === "mlx" || CPU_SCHEMAS > 0;
  const count = backend === "mlx" ? 60 : long ? CPU_SCHEMAS : SMALL.length;
  test(`${count} schemas, greedy and sampled, on ${backend}: every output parses and validates (ajv)`, async () => {
    const model = loadModel(DEFAULT_MODEL_DIR, { backend });
    const ajv = new Ajv({ strict: false });
    const cases = long ? schemas(60, 11).slice(0, count) : SMALL;
    const prompts = ["The weather today", "A list of things:", "Tom said", "{"];
    try {
      const runs = cases.flatMap((schema, i) =>
        [0, 0.9].map(async (temperature) => {
          const options = {
            maxTokens: long ? 160 : 40,
            temperature,
            seed: i,
            responseFormat: { type: "json_schema" as const, schema },
          };
          const { text, stats } = await generateText(model, tokenizer, prompts[i % prompts.length]!, options);
          return { i, temperature, schema, text, stats };
        }),
      );
      const problems: string[] = [];
      for (const { i, temperature, schema, text, stats } of await Promise.all(runs)) {
        const where = `schema ${i} (T ${temperature}): ${JSON.stringify(schema)} -> ${JSON.stringify(text)}`;
        if (stats.formatComplete !== true || stats.finishReason !== "stop") {
          problems.push(`${where}: incomplete (${stats.finishReason})`);
          continue;
        }
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (e) {
          problems.push(`${where}: ${(e as Error).message}`);
          continue;
        }
        if (!ajv.validate(schema, value)) problems.push(`${where}: ${ajv.errorsText()}`);
      }
      expect(problems).toEqual([]);
    } finally {
      model.dispose();
    }
  }, 7_200_000);
}

test("constrained and free sequences share a batch: the free ones give the tokens they give alone", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  try {
    const free = { maxTokens: 24, ignoreEos: true };
    const alone = await generateText(model, tokenizer, "The river", free);
    const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
    const [together, constrained] = await Promise.all([
      generateText(model, tokenizer, "The river", free),
      generateText(model, tokenizer, "Numbers:", { maxTokens: 40, responseFormat: { type: "json_schema", schema } }),
    ]);
    expect(together.tokens).toEqual(alone.tokens);
    expect(constrained.stats.formatComplete).toBe(true);
    expect(Object.keys(JSON.parse(constrained.text))).toEqual(["a"]);
  } finally {
    model.dispose();
  }
});

test("responseFormat errors: unknown type, unsupported keyword, bad grammar, unknown key; a grammar cut by maxTokens says so", async () => {
  const model = loadModel(DEFAULT_MODEL_DIR, { backend: "mlx" });
  try {
    const run = (responseFormat: unknown, maxTokens = 8) =>
      generateText(model, tokenizer, "x", { maxTokens, responseFormat: responseFormat as never });
    await expect(run({ type: "yaml" })).rejects.toThrow(
      "responseFormat: type must be one of text, json_object, json_schema, grammar",
    );
    await expect(run({ type: "json_schema", schema: { type: "number", minimum: 1 } })).rejects.toThrow(
      "unsupported JSON Schema keyword 'minimum'",
    );
    await expect(run({ type: "grammar", grammar: "root ::= nope" })).rejects.toThrow("rule 'nope' is not defined");
    await expect(run({ type: "json_schema", schema: {}, extra: 1 })).rejects.toThrow("unknown key 'extra'");
    const cut = await run({ type: "grammar", grammar: 'root ::= "[" [a-z]{40} "]"' }, 6);
    expect(cut.stats.finishReason).toBe("length");
    expect(cut.stats.formatComplete).toBe(false);
    const free = await run({ type: "text" });
    expect(free.stats.formatComplete).toBeUndefined();
  } finally {
    model.dispose();
  }
});
