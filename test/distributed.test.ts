// MLX's distributed layer through the shim: `mlx-bun launch -n 2` starts two ranks of a ring group on
// 127.0.0.1; all_sum and all_gather give every rank the same, correct values.
import { expect, test } from "bun:test";
import { join } from "node:path";

test("2 ranks over the ring backend: rank, size, all_sum, all_gather", async () => {
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const child = Bun.spawn(
    [
      process.execPath,
      bin,
      "launch",
      "-n",
      "2",
      "--",
      process.execPath,
      join(import.meta.dir, "distributed", "collectives.ts"),
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  expect(err).toBe("");
  expect(code).toBe(0);
  const rows = out
    .trim()
    .split("\n")
    .map(
      (line) =>
        JSON.parse(line.replace(/^\[\d+\] /, "")) as { rank: number; size: number; sum: number[]; gathered: number[] },
    );
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
  const failing = Bun.spawnSync([process.execPath, bin, "launch", "-n", "2", "--", "sh", "-c", "exit 3"], {
    stderr: "pipe",
  });
  expect(failing.exitCode).toBe(3);
});

// NCCL needs GPUs; what is tested here is the environment each rank gets, which MLX's NCCL backend
// reads (mlx/distributed/nccl: NCCL_HOST_IP, NCCL_PORT, MLX_RANK, MLX_WORLD_SIZE) plus one GPU per
// rank, as MLX's own launcher gives it.
test("launch --backend nccl: each rank gets its rank, the world size, one bootstrap address, and its own GPU", () => {
  const bin = join(import.meta.dir, "..", "src", "bin.ts");
  const show =
    "console.log(JSON.stringify(Object.fromEntries(['MLX_RANK','MLX_WORLD_SIZE','NCCL_HOST_IP','NCCL_PORT','CUDA_VISIBLE_DEVICES','MLX_HOSTFILE'].map((k) => [k, process.env[k] ?? null]))))";
  const run = (visible: string | undefined, ranks: number) => {
    const env: Record<string, string | undefined> = { ...process.env, CUDA_VISIBLE_DEVICES: visible };
    if (visible === undefined) delete env.CUDA_VISIBLE_DEVICES;
    return Bun.spawnSync(
      [process.execPath, bin, "launch", "-n", String(ranks), "--backend", "nccl", "--", process.execPath, "-e", show],
      { env, stdout: "pipe", stderr: "pipe" },
    );
  };
  for (const [visible, gpus] of [
    [undefined, ["0", "1"]],
    ["4,5", ["4", "5"]],
  ] as const) {
    const done = run(visible, 2);
    expect(done.exitCode).toBe(0);
    const rows = done.stdout
      .toString()
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line.replace(/^\[\d+\] /, "")) as Record<string, string | null>);
    rows.sort((a, b) => Number(a.MLX_RANK) - Number(b.MLX_RANK));
    expect(rows.map((r) => r.MLX_RANK)).toEqual(["0", "1"]);
    expect(rows.map((r) => r.CUDA_VISIBLE_DEVICES)).toEqual([...gpus]);
    for (const r of rows) {
      expect(r.MLX_WORLD_SIZE).toBe("2");
      expect(r.NCCL_HOST_IP).toBe("127.0.0.1");
      expect(Number(r.NCCL_PORT)).toBeGreaterThan(0);
      expect(r.NCCL_PORT).toBe(rows[0]!.NCCL_PORT!);
      expect(r.MLX_HOSTFILE).toBeNull();
    }
  }
  const short = run("0,1", 3);
  expect(short.exitCode).toBe(1);
  expect(short.stderr.toString()).toContain("3 NCCL ranks need 3 GPUs, CUDA_VISIBLE_DEVICES names 2");
  // Set but empty hides every GPU (CUDA's reading), unlike unset.
  const hidden = run("", 1);
  expect(hidden.exitCode).toBe(1);
  expect(hidden.stderr.toString()).toContain('1 NCCL ranks need 1 GPUs, CUDA_VISIBLE_DEVICES names 0 ("")');
  const unknown = Bun.spawnSync([process.execPath, bin, "launch", "-n", "2", "--backend", "tcp", "--", "true"], {
    stderr: "pipe",
  });
  expect(unknown.exitCode).toBe(2);
  expect(unknown.stderr.toString()).toContain("--backend must be one of ring, nccl, got 'tcp'");
});

/** Rows printed by test/distributed/generate.ts for `dir`, alone or as `ranks` ranks. */
async function generateRows(dir: string, ranks: number) {
  const script = [process.execPath, join(import.meta.dir, "distributed", "generate.ts"), dir];
  const command =
    ranks === 1
      ? script
      : [
          process.execPath,
          join(import.meta.dir, "..", "src", "bin.ts"),
          "launch",
          "-n",
          String(ranks),
          "--",
          ...script,
        ];
  const child = Bun.spawn(command, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  if (code !== 0) throw new Error(`exit ${code}: ${err}`);
  return out
    .trim()
    .split("\n")
    .map(
      (line) =>
        JSON.parse(line.replace(/^\[\d+\] /, "")) as {
          rank: number;
          size: number;
          heads: number;
          tokens: number[];
          logits: number[];
          bytes: number;
          projectionBytes: number;
        },
    );
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
      // Each rank holds half of the projections and none of the full ones.
      expect(r.projectionBytes).toBe(single!.projectionBytes / 2);
      expect(r.bytes).toBe(single!.bytes - single!.projectionBytes / 2);
    }
  }, 60_000);
}

test("tensor parallel: a model that cannot be split evenly, or with fused q/k/v, is an Error", async () => {
  const models = join(import.meta.dir, "fixtures", "data", "models");
  await expect(generateRows(join(models, "llama"), 3)).rejects.toThrow(
    "num_attention_heads (4) must be a multiple of the 3 ranks",
  );
  await expect(generateRows(join(models, "gpt2"), 2)).rejects.toThrow(
    "tensor parallelism needs separate q/k/v projections (gpt2 fuses them)",
  );
}, 60_000);
