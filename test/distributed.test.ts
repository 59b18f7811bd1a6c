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
