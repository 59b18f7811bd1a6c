// Runs a peer script from bench/peers/ and parses its JSON output: Python ones with the oracle venv,
// node-llama-cpp ones with Node beside the pinned node-llama-cpp (installed into .cache/peers/).
import { copyFileSync, existsSync, mkdirSync } from "node:fs";
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

/** The node-llama-cpp version benched against (newer releases may not install here). */
export const LLAMA_CPP = "3.21.1";
/** Where node-llama-cpp is installed: MLXB_LLAMA_CPP_DIR (the lent GPU machine, where
 * scripts/gpu/device.sh unpacks its CUDA build), or .cache/peers/. */
const LLAMA_CPP_DIR = process.env.MLXB_LLAMA_CPP_DIR ?? join(ROOT, ".cache", "peers", `node-llama-cpp-${LLAMA_CPP}`);

/** Installs node-llama-cpp with npm unless it is there (~730 MB with every platform's binaries):
 * the folder holding its node_modules. */
export function llamaCppDir(): string {
  if (!existsSync(join(LLAMA_CPP_DIR, "node_modules", "node-llama-cpp"))) {
    mkdirSync(LLAMA_CPP_DIR, { recursive: true });
    const npm = Bun.spawnSync(
      [
        "npm",
        "install",
        "--silent",
        "--no-audit",
        "--no-fund",
        "--prefix",
        LLAMA_CPP_DIR,
        `node-llama-cpp@${LLAMA_CPP}`,
      ],
      { stdout: "inherit", stderr: "inherit" },
    );
    if (npm.exitCode !== 0) throw new Error("bench: npm install node-llama-cpp failed");
  }
  return LLAMA_CPP_DIR;
}

/** Runs bench/peers/SCRIPT (an .mjs importing node-llama-cpp) with Node (Bun where there is no
 * Node: the GPU machine): its last stdout line as JSON. MLXB_LLAMA_CPP_LIBS goes in front of the
 * child's LD_LIBRARY_PATH (the CUDA runtime that its CUDA build links). */
export function runLlamaCpp(script: string, args: string[]): unknown {
  const dir = llamaCppDir();
  // Beside its node_modules, so that the script's import resolves there.
  copyFileSync(join(ROOT, "bench", "peers", script), join(dir, script));
  const libs = process.env.MLXB_LLAMA_CPP_LIBS;
  const env = libs
    ? { ...process.env, LD_LIBRARY_PATH: [libs, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") }
    : process.env;
  const runtime = Bun.which("node") ?? process.execPath;
  const result = Bun.spawnSync([runtime, join(dir, script), ...args], { stderr: "pipe", env });
  if (result.exitCode !== 0) throw new Error(`peer ${script} failed: ${result.stderr.toString()}`);
  const lines = result.stdout.toString().trim().split("\n");
  return JSON.parse(lines[lines.length - 1]!);
}
