// MLX's distributed layer through the shim: `mlx-bun launch -n 2` starts two ranks of a ring group on
// 127.0.0.1; all_sum and all_gather give every rank the same, correct values.
import { expect, test } from "bun:test";
import { join } from "node:path";

test("2 ranks over the ring backend: rank, size, all_sum, all_gather", async () => {
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const child = Bun.spawn([process.execPath, bin, "launch", "-n", "2", "--", process.execPath, join(import.meta.dir, "distributed", "collectives.ts")], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  expect(err).toBe("");
  expect(code).toBe(0);
  const rows = out.trim().split("\n").map((line) => JSON.parse(line.replace(/^\[\d+\] /, "")) as { rank: number; size: number; sum: number[]; gathered: number[] });
  expect(rows.map((r) => r.rank).sort()).toEqual([0, 1]);
  for (const r of rows) {
    expect(r.size).toBe(2);
    expect(r.sum).toEqual([3, 6, 9]);
    expect(r.gathered).toEqual([1, 2, 3, 2, 4, 6]);
  }
}, 60_000);

test("launch: bad use is a usage error; a failing rank's code is returned", async () => {
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const usage = Bun.spawnSync([process.execPath, bin, "launch", "-n", "0", "--", "true"], { stderr: "pipe" });
  expect(usage.exitCode).toBe(2);
  expect(usage.stderr.toString()).toContain("-n must be an integer in [1, 64]");
  const failing = Bun.spawnSync([process.execPath, bin, "launch", "-n", "2", "--", "sh", "-c", "exit 3"], { stderr: "pipe" });
  expect(failing.exitCode).toBe(3);
});

/** Rows printed by test/distributed/generate.ts for `dir`, alone or as `ranks` ranks. */
async function generateRows(dir: string, ranks: number) {
  const script = [process.execPath, join(import.meta.dir, "distributed", "generate.ts"), dir];
  const command = ranks === 1 ? script : [process.execPath, join(import.meta.dir, "..", "src", "bin.ts"), "launch", "-n", String(ranks), "--", ...script];
  const child = Bun.spawn(command, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) throw new Error(`exit ${code}: ${err}`);
  return out.trim().split("\n").map((line) => JSON.parse(line.replace(/^\[\d+\] /, "")) as { rank: number; size: number; heads: number; tokens: number[]; logits: number[] });
}

for (const name of ["llama", "qwen3"]) {
  test(`tensor parallel over 2 ranks (ring): ${name} gives one process's greedy tokens, logits within 1e-4`, async () => {
    const dir = join(import.meta.dir, "fixtures", "data", "models", name);
    const [single] = await generateRows(dir, 1);
    const ranks = await generateRows(dir, 2);
    expect(ranks.length).toBe(2);
    for (const r of ranks) {
      expect([r.size, r.heads]).toEqual([2, single!.heads / 2]);
      expect(r.tokens).toEqual(single!.tokens);
      expect(Math.max(...r.logits.map((v, i) => Math.abs(v - single!.logits[i]!)))).toBeLessThanOrEqual(1e-4);
    }
  }, 60_000);
}

test("tensor parallel: a model that cannot be split evenly, or with fused q/k/v, is an Error", async () => {
  const models = join(import.meta.dir, "fixtures", "data", "models");
  await expect(generateRows(join(models, "llama"), 3)).rejects.toThrow("num_attention_heads (4) must be a multiple of the 3 ranks");
  await expect(generateRows(join(models, "gpt2"), 2)).rejects.toThrow("tensor parallelism needs separate q/k/v projections (gpt2 fuses them)");
}, 60_000);
