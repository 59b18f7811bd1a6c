// The import graph of src/: no cycles, and every import points down the layer order below (or
// within its own layer), so each folder can be read knowing only the ones beneath it.
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = join(import.meta.dir, "..", "src");

/** Bottom to top; an entry is a folder or a file directly under src/. */
const LAYERS: string[][] = [
  ["dtype.ts", "options.ts"],
  ["native"],
  ["tensor.ts"],
  ["ops"],
  ["quant"],
  ["io"],
  ["graph"],
  ["rewrite", "kv-cache.ts"],
  ["backend"],
  ["models", "tokenizer"],
  ["grammar"],
  ["engine"],
  ["embed.ts"],
  ["serve"],
  ["cli", "index.ts", "bin.ts"],
];

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** src-relative path -> src-relative paths it imports (static and dynamic, type-only included). */
function imports(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of files(SRC)) {
    const text = readFileSync(file, "utf8");
    const targets = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)].map((m) =>
      relative(SRC, resolve(dirname(file), m[1]!)),
    );
    graph.set(relative(SRC, file), targets);
  }
  return graph;
}

function layerOf(path: string): number {
  const top = path.split("/")[0]!;
  const layer = LAYERS.findIndex((names) => names.includes(top));
  if (layer < 0) throw new Error(`src/${path}: not in test/layers.test.ts's LAYERS`);
  return layer;
}

test("every import in src/ points to its own layer or a lower one", () => {
  const upward: string[] = [];
  for (const [from, targets] of imports()) {
    for (const to of targets) if (layerOf(to) > layerOf(from)) upward.push(`${from} -> ${to}`);
  }
  expect(upward).toEqual([]);
});

test("src/ has no import cycles", () => {
  const graph = imports();
  const state = new Map<string, "visiting" | "done">();
  const cycles: string[] = [];
  const visit = (node: string, path: string[]) => {
    if (state.get(node) === "done") return;
    if (state.get(node) === "visiting") {
      cycles.push([...path.slice(path.indexOf(node)), node].join(" -> "));
      return;
    }
    state.set(node, "visiting");
    for (const next of graph.get(node) ?? []) visit(next, [...path, node]);
    state.set(node, "done");
  };
  for (const node of graph.keys()) visit(node, []);
  expect(cycles).toEqual([]);
});
