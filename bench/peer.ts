// Runs a Python peer script from bench/peers/ with the oracle venv and parses its JSON output.
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

/** The oracle venv's Python, or MLXB_PYTHON (the lent GPU machine: scripts/gpu/device.sh). */
export const PEER_PYTHON = process.env.MLXB_PYTHON ?? join(ROOT, ".cache", "venv", "bin", "python");

export function runPeer(script: string, args: string[] = []): unknown {
  const result = Bun.spawnSync([PEER_PYTHON, join(ROOT, "bench", "peers", script), ...args], { stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`peer ${script} failed: ${result.stderr.toString()}`);
  const lines = result.stdout.toString().trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!);
}
