// `bun run bench [name...]`: runs the named benchmarks (default: all), prints tables and writes
// bench/results/<timestamp>.json so runs can be compared.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { deviceInfo } from "../src/index.ts";

const benches: Record<string, () => Promise<{ run: () => unknown }>> = {
  overhead: () => import("./overhead.ts"),
  "fast-ops": () => import("./fast-ops.ts"),
  quant: () => import("./quant.ts"),
  matvec: () => import("./matvec.ts"),
  attention: () => import("./attention.ts"),
  decode: () => import("./decode.ts"),
  step: () => import("./step.ts"),
  rewrite: () => import("./rewrite.ts"),
  backends: () => import("./backends.ts"),
  embed: () => import("./embed.ts"),
  serve: () => import("./serve.ts"),
  "prompt-cache": () => import("./prompt-cache.ts"),
  batch: () => import("./batch.ts"),
  speculative: () => import("./speculative.ts"),
  "kv-cache": () => import("./kv-cache.ts"),
  sampling: () => import("./sampling.ts"),
  pick: () => import("./pick.ts"),
  constrained: () => import("./constrained.ts"),
  gguf: () => import("./gguf.ts"),
  cpu: () => import("./cpu.ts"),
  "tensor-parallel": () => import("./tensor-parallel.ts"),
};

const names = process.argv.slice(2);
for (const n of names) {
  if (!benches[n]) throw new Error(`unknown bench '${n}' (valid: ${Object.keys(benches).join(", ")})`);
}
const results: Record<string, unknown> = { device: deviceInfo(), date: new Date().toISOString() };
for (const name of names.length > 0 ? names : Object.keys(benches)) {
  const bench = await benches[name]!();
  results[name] = await bench.run();
}
const dir = join(import.meta.dir, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify(results, null, 2));
console.log(`\nresults: ${file}`);
