// `bun run bench/compare.ts OLD.json NEW.json`: every median both runs have, with NEW / OLD.
import { readFileSync } from "node:fs";
import { table } from "./stats.ts";

const [oldPath, newPath] = process.argv.slice(2);
if (!oldPath || !newPath) throw new Error("usage: bun run bench/compare.ts OLD.json NEW.json");

function medians(value: unknown, path: string, into: Map<string, number>): Map<string, number> {
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    if (typeof record.median === "number") into.set(path, record.median);
    else for (const [k, v] of Object.entries(record)) medians(v, path ? `${path}.${k}` : k, into);
  }
  return into;
}

const before = medians(JSON.parse(readFileSync(oldPath, "utf8")), "", new Map());
const after = medians(JSON.parse(readFileSync(newPath, "utf8")), "", new Map());
const rows = [...after].filter(([k]) => before.has(k)).map(([k, v]) => [k, before.get(k)!, v, v / before.get(k)!]);
table(`${oldPath} -> ${newPath} (medians; units as in each bench)`, ["figure", "old", "new", "new/old"], rows);
