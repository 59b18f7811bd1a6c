// Sentence embeddings of all-MiniLM-L6-v2 (scripts/setup.sh installs it): sentences/s at batch 1 and
// 32 on MLX and the CPU reference, side by side with sentence-transformers (PyTorch, CPU) when its
// venv is there (.cache/st/venv: see scripts/reference/minilm_embeddings.py; optional, torch is big).
import { existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { embed } from "../src/embed.ts";
import { loadModel } from "../src/models/index.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { summarize, table } from "./stats.ts";

const ROOT = join(import.meta.dir, "..");
const MODEL = join(ROOT, ".cache", "models", "all-MiniLM-L6-v2");
const ST_PYTHON = join(ROOT, ".cache", "st", "venv", "bin", "python");

/** 64 sentences of 8 to 30 tokens. */
const SENTENCES = Array.from(
  { length: 64 },
  (_, i) =>
    `Sentence ${i}: ${"the quick brown fox jumps over the lazy dog ".slice(0, 10 + ((i * 37) % 80))}near the river bank.`,
);

export async function run(): Promise<Record<string, unknown>> {
  const tokenizer = Tokenizer.fromDir(MODEL);
  const results: Record<string, unknown> = {};
  const rows: (string | number)[][] = [];
  for (const backend of ["mlx", "cpu"] as const) {
    const model = loadModel(MODEL, { backend });
    const count = backend === "cpu" ? 16 : SENTENCES.length;
    const reps = backend === "cpu" ? 1 : 5;
    for (const batchSize of [1, 32]) {
      const rates: number[] = [];
      for (let r = 0; r <= reps; r++) {
        const start = performance.now();
        embed(model, tokenizer, SENTENCES.slice(0, count), { batchSize });
        if (r > 0 || reps === 1) rates.push(count / ((performance.now() - start) / 1000));
      }
      const s = summarize(rates);
      rows.push([`mlx-bun ${backend}`, batchSize, s.median, s.spread]);
      results[`${backend}-${batchSize}`] = s;
    }
    model.dispose();
  }
  if (existsSync(ST_PYTHON)) {
    const input = join(tmpdir(), `mlxb-embed-${process.pid}.json`);
    writeFileSync(input, JSON.stringify(SENTENCES));
    const peer = Bun.spawnSync([ST_PYTHON, join(import.meta.dir, "peers", "embed.py"), MODEL, input], {
      stderr: "pipe",
    });
    if (peer.exitCode !== 0) throw new Error(`peer embed.py failed: ${peer.stderr.toString()}`);
    const lines = peer.stdout.toString().trim().split("\n");
    const out = JSON.parse(lines[lines.length - 1]!) as Record<string, number[]>;
    for (const [batch, rates] of Object.entries(out)) {
      const s = summarize(rates);
      rows.push(["sentence-transformers (torch cpu)", Number(batch), s.median, s.spread]);
      results[`sentence-transformers-${batch}`] = s;
    }
  } else {
    console.log(`(sentence-transformers peer skipped: no ${ST_PYTHON})`);
  }
  table(
    "Sentence embeddings, all-MiniLM-L6-v2 (sentences/s; 8-30 tokens each)",
    ["engine", "batch", "sentences/s", "spread"],
    rows,
  );
  return results;
}
