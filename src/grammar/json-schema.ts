// JSON Schema to GBNF (gbnf.ts): a grammar of the JSON texts the schema accepts, as llama.cpp's
// json-schema-to-grammar does. Supported: type (one or a list), enum, const, properties + required
// (properties in the schema's order; optional ones may be left out), additionalProperties (false, or a
// schema for an object without properties), items, prefixItems, minItems/maxItems, minLength/maxLength,
// anyOf/oneOf, allOf of one schema, $ref into #/$defs or #/definitions (recursion included), and the
// annotations (title, description, default, examples, ...). Any other keyword is an Error naming it:
// a generated value must validate, and a keyword the grammar ignored could make it fail.
//
// Decisions: an object with `properties` gets only those (extra keys are allowed by JSON Schema but
// never needed); whitespace between tokens is at most one space, or a newline and 20 spaces or tabs
// (a model cannot spin in it); numbers have at most 16 integer and 16 fraction digits.

type Schema = boolean | { [keyword: string]: unknown };

const ANNOTATIONS = new Set([
  "title",
  "description",
  "default",
  "examples",
  "$schema",
  "$id",
  "$comment",
  "deprecated",
  "readOnly",
  "writeOnly",
  "$defs",
  "definitions",
]);
const KNOWN = new Set([
  ...ANNOTATIONS,
  "type",
  "enum",
  "const",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "prefixItems",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
  "anyOf",
  "oneOf",
  "allOf",
  "$ref",
]);

/** Rule names the grammars built around a schema's use (root, tools.ts's). */
const RESERVED = new Set(["root", "tool-calls", "tool-call", "tool-text"]);

const PRIMITIVES: Record<string, string> = {
  space: `| " " | "\\n" [ \\t]{0,20}`,
  boolean: `"true" | "false"`,
  null: `"null"`,
  char: `[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})`,
  string: `"\\"" char* "\\""`,
  "integral-part": `"0" | [1-9] [0-9]{0,15}`,
  integer: `"-"? integral-part`,
  number: `"-"? integral-part ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?`,
  value: `object | array | string | number | boolean | null`,
  object: `"{" space (string space ":" space value (space "," space string space ":" space value)* space)? "}"`,
  array: `"[" space (value (space "," space value)* space)? "]"`,
};
const USES: Record<string, string[]> = {
  string: ["char"],
  integer: ["integral-part"],
  number: ["integral-part"],
  value: ["object", "array", "string", "number", "boolean", "null"],
  object: ["space", "string", "value"],
  array: ["space", "value"],
};

/** A GBNF string literal for the text. */
export function gbnfLiteral(text: string): string {
  let out = '"';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return `${out}"`;
}

class Converter {
  readonly rules = new Map<string, string>();
  readonly #byBody = new Map<string, string>();
  readonly #root: Schema;
  readonly #refs = new Map<string, string>();

  constructor(root: Schema) {
    this.#root = root;
  }

  primitive(name: string): string {
    if (!this.rules.has(name)) {
      this.rules.set(name, PRIMITIVES[name]!);
      for (const dep of USES[name] ?? []) this.primitive(dep);
    }
    return name;
  }

  /** A rule with this body (one per distinct body), named after `hint`. */
  rule(hint: string, body: string): string {
    const known = this.#byBody.get(body);
    if (known) return known;
    let name = hint.replace(/[^A-Za-z0-9-]+/g, "-").replace(/^-+|-+$/g, "") || "r";
    if (/^\d/.test(name)) name = `r-${name}`;
    while (this.rules.has(name) || name in PRIMITIVES || RESERVED.has(name)) name = `${name}-${this.rules.size}`;
    this.rules.set(name, body);
    this.#byBody.set(body, name);
    return name;
  }

  /** A rule name matching exactly the values of `schema` (at JSON pointer-ish `path`). */
  visit(schema: Schema, path: string): string {
    if (schema === true) return this.primitive("value");
    if (schema === false) throw new Error(`responseFormat: the schema at ${path} is false (no value is valid)`);
    if (schema === null || typeof schema !== "object" || Array.isArray(schema))
      throw new Error(`responseFormat: the schema at ${path} must be an object or a boolean`);
    for (const keyword of Object.keys(schema)) {
      if (!KNOWN.has(keyword))
        throw new Error(`responseFormat: unsupported JSON Schema keyword '${keyword}' at ${path}`);
    }
    const hint = path.split("/").pop() || "root";
    if (schema["$ref"] !== undefined) return this.#ref(schema, path);
    if (schema["allOf"] !== undefined) {
      const all = schema["allOf"];
      if (!Array.isArray(all) || all.length !== 1)
        throw new Error(`responseFormat: allOf at ${path} is supported with one schema only`);
      if (Object.keys(schema).some((k) => !ANNOTATIONS.has(k) && k !== "allOf"))
        throw new Error(`responseFormat: allOf at ${path} cannot be combined with other keywords`);
      return this.visit(all[0] as Schema, `${path}/allOf/0`);
    }
    for (const key of ["anyOf", "oneOf"] as const) {
      if (schema[key] === undefined) continue;
      const options = schema[key];
      if (!Array.isArray(options) || options.length === 0)
        throw new Error(`responseFormat: ${key} at ${path} must be a non-empty array of schemas`);
      if (Object.keys(schema).some((k) => !ANNOTATIONS.has(k) && k !== key))
        throw new Error(`responseFormat: ${key} at ${path} cannot be combined with other keywords`);
      return this.rule(hint, options.map((s, i) => this.visit(s as Schema, `${path}/${key}/${i}`)).join(" | "));
    }
    if (schema["const"] !== undefined) return this.rule(`${hint}-const`, gbnfLiteral(JSON.stringify(schema["const"])));
    if (schema["enum"] !== undefined) {
      const values = schema["enum"];
      if (!Array.isArray(values) || values.length === 0)
        throw new Error(`responseFormat: enum at ${path} must be a non-empty array`);
      return this.rule(`${hint}-enum`, values.map((v) => gbnfLiteral(JSON.stringify(v))).join(" | "));
    }
    let types = schema["type"];
    if (types === undefined) {
      // Untyped: the keywords say which (properties: an object; items: an array), else any value.
      if (["properties", "additionalProperties"].some((k) => k in schema)) types = "object";
      else if (["items", "prefixItems", "minItems", "maxItems"].some((k) => k in schema)) types = "array";
      else if (["minLength", "maxLength"].some((k) => k in schema)) types = "string";
      else return this.primitive("value");
    }
    const list = Array.isArray(types) ? types : [types];
    if (list.length === 0) throw new Error(`responseFormat: type at ${path} is an empty list`);
    return this.rule(hint, list.map((t) => this.#typed(t, schema, path)).join(" | "));
  }

  #typed(type: unknown, schema: { [keyword: string]: unknown }, path: string): string {
    switch (type) {
      case "string":
        return this.#string(schema, path);
      case "number":
      case "integer":
      case "boolean":
      case "null":
        return this.primitive(type);
      case "object":
        return this.#object(schema, path);
      case "array":
        return this.#array(schema, path);
      default:
        throw new Error(
          `responseFormat: unknown type ${JSON.stringify(type)} at ${path} (valid: string, number, integer, boolean, null, object, array)`,
        );
    }
  }

  #count(schema: { [keyword: string]: unknown }, path: string, min: string, max: string): [number, number] {
    const lo = schema[min] ?? 0;
    const hi = schema[max] ?? Infinity;
    for (const [k, v] of [
      [min, lo],
      [max, hi],
    ] as const) {
      if (!(Number.isSafeInteger(v) || v === Infinity) || (v as number) < 0)
        throw new Error(`responseFormat: ${k} at ${path} must be an integer >= 0`);
    }
    if ((hi as number) < (lo as number)) throw new Error(`responseFormat: ${max} < ${min} at ${path}`);
    if ((lo as number) > 10_000 || (hi !== Infinity && (hi as number) > 10_000))
      throw new Error(`responseFormat: ${min}/${max} at ${path} above 10000 are not supported`);
    return [lo as number, hi as number];
  }

  #string(schema: { [keyword: string]: unknown }, path: string): string {
    const [lo, hi] = this.#count(schema, path, "minLength", "maxLength");
    if (lo === 0 && hi === Infinity) return this.primitive("string");
    this.primitive("char");
    return this.rule(
      `${path.split("/").pop() || "root"}-string`,
      `"\\"" char{${lo},${hi === Infinity ? "" : hi}} "\\""`,
    );
  }

  #object(schema: { [keyword: string]: unknown }, path: string): string {
    const hint = path.split("/").pop() || "root";
    const properties = schema["properties"] ?? {};
    if (properties === null || typeof properties !== "object" || Array.isArray(properties))
      throw new Error(`responseFormat: properties at ${path} must be an object`);
    const required = schema["required"] ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === "string"))
      throw new Error(`responseFormat: required at ${path} must be an array of property names`);
    const names = Object.keys(properties);
    for (const r of required)
      if (!names.includes(r))
        throw new Error(`responseFormat: required property '${r}' at ${path} is not in its properties`);
    this.primitive("space");
    if (names.length === 0) {
      // A map: any keys, values of additionalProperties (default: any value).
      const extra = schema["additionalProperties"];
      if (extra === false) return this.rule(`${hint}-empty`, `"{" space "}"`);
      if (extra === undefined || extra === true) return this.primitive("object");
      const value = this.visit(extra as Schema, `${path}/additionalProperties`);
      const key = this.primitive("string");
      const pair = `${key} space ":" space ${value}`;
      return this.rule(hint, `"{" space (${pair} (space "," space ${pair})* space)? "}"`);
    }
    const pairs = names.map((n) => {
      const value = this.visit((properties as Record<string, Schema>)[n]!, `${path}/properties/${n}`);
      return `${gbnfLiteral(JSON.stringify(n))} space ":" space ${value}`;
    });
    // after(i): the properties from i on, after at least one was written; first(i): before any was.
    const after: string[] = [];
    const first: string[] = [];
    for (let i = names.length - 1; i >= 0; i--) {
      const rest = i + 1 < names.length ? ` ${after[i + 1]}` : "";
      const kv = `space "," space ${pairs[i]}${rest}`;
      after[i] = required.includes(names[i]!)
        ? this.rule(`${hint}-after-${names[i]}`, kv)
        : this.rule(`${hint}-after-${names[i]}`, `${kv}${rest ? ` | ${rest.trim()}` : " | "}`);
      const start = `${pairs[i]}${rest}`;
      const skip = i + 1 < names.length ? first[i + 1] : "";
      first[i] = required.includes(names[i]!)
        ? this.rule(`${hint}-${names[i]}`, start)
        : this.rule(`${hint}-${names[i]}`, `${start} | ${skip ?? ""}`);
    }
    return this.rule(hint, `"{" space ${first[0]} space "}"`);
  }

  #array(schema: { [keyword: string]: unknown }, path: string): string {
    const hint = path.split("/").pop() || "root";
    this.primitive("space");
    const prefix = schema["prefixItems"];
    if (prefix !== undefined) {
      if (!Array.isArray(prefix)) throw new Error(`responseFormat: prefixItems at ${path} must be an array of schemas`);
      if (schema["minItems"] !== undefined || schema["maxItems"] !== undefined)
        throw new Error(`responseFormat: prefixItems at ${path} with minItems/maxItems is not supported`);
      const items = prefix.map((s, i) => this.visit(s as Schema, `${path}/prefixItems/${i}`));
      return this.rule(
        hint,
        items.length === 0 ? `"[" space "]"` : `"[" space ${items.join(' space "," space ')} space "]"`,
      );
    }
    const item =
      schema["items"] === undefined ? this.primitive("value") : this.visit(schema["items"] as Schema, `${path}/items`);
    const [lo, hi] = this.#count(schema, path, "minItems", "maxItems");
    if (hi === 0) return this.rule(`${hint}-empty`, `"[" space "]"`);
    const more = `(space "," space ${item}){${Math.max(0, lo - 1)},${hi === Infinity ? "" : hi - 1}}`;
    const list = `${item} ${more} space`;
    return this.rule(hint, lo === 0 ? `"[" space (${list})? "]"` : `"[" space ${list} "]"`);
  }

  #ref(schema: { [keyword: string]: unknown }, path: string): string {
    const ref = schema["$ref"];
    if (typeof ref !== "string") throw new Error(`responseFormat: $ref at ${path} must be a string`);
    if (Object.keys(schema).some((k) => !ANNOTATIONS.has(k) && k !== "$ref"))
      throw new Error(`responseFormat: $ref at ${path} cannot be combined with other keywords`);
    const known = this.#refs.get(ref);
    if (known) return known;
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    const defs =
      m && typeof this.#root === "object" ? (this.#root[m[1]!] as Record<string, Schema> | undefined) : undefined;
    const target = m ? defs?.[decodeURIComponent(m[2]!).replaceAll("~1", "/").replaceAll("~0", "~")] : undefined;
    if (target === undefined)
      throw new Error(`responseFormat: $ref '${ref}' at ${path} does not name a schema in #/$defs or #/definitions`);
    // Named before it is visited, so a recursive reference finds it.
    const name = this.rule(`ref-${m![2]}`, `__pending_${this.#refs.size}`);
    this.#refs.set(ref, name);
    const body = this.visit(target, ref.slice(1));
    this.rules.set(name, body);
    return name;
  }
}

/** GBNF text (root rule `root`) of the JSON values a schema accepts. */
export function jsonSchemaGrammar(schema: unknown): string {
  if (typeof schema !== "boolean" && (schema === null || typeof schema !== "object" || Array.isArray(schema))) {
    throw new Error("responseFormat: schema must be a JSON Schema object");
  }
  const c = new Converter(schema as Schema);
  const top = c.visit(schema as Schema, "#");
  const lines = [`root ::= ${top}`];
  for (const [name, body] of c.rules) lines.push(`${name} ::= ${body}`);
  return `${lines.join("\n")}\n`;
}

/** GBNF text of any JSON object (OpenAI's json_object). */
export function jsonObjectGrammar(): string {
  return jsonSchemaGrammar({ type: "object" });
}
