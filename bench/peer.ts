// Runs a Python peer script from bench/peers/ with the oracle venv and parses its JSON output.
import { join } from "node:path";

const ROOT = join(import.meta.dir, "..");

export function runPeer(script: string, args: string[] = []): unknown {
  const python = join(ROOT, ".cache", "venv", "bin", "python");
  const result = Bun.spawnSync([python, join(ROOT, "bench", "peers", script), ...args], { stderr: "pipe" });
  if (result.exitCode !== 0) throw new Error(`peer ${script} failed: ${result.stderr.toString()}`);
  const lines = result.stdout.toString().trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!);
}
