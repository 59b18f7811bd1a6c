// Where an installed runtime (MLX's library + the shim, made by `mlx-bun setup`, src/setup.ts) lives:
// a per-user, versioned cache directory.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

const PACKAGE_ROOT = join(import.meta.dir, "..", "..");
export const RUNTIME_TARGETS = ["cpu", "cuda13"] as const;
export type RuntimeTarget = (typeof RUNTIME_TARGETS)[number];

/** The pins of scripts/versions.sh (the one place they are written). */
export function versions(): Record<string, string> {
  const text = readFileSync(join(PACKAGE_ROOT, "scripts", "versions.sh"), "utf8");
  return Object.fromEntries([...text.matchAll(/^([A-Z_]+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** The cache holding runtimes: $MLXB_HOME, else $XDG_CACHE_HOME/mlx-bun, else ~/.cache/mlx-bun. */
export function runtimeHome(): string {
  const env = process.env;
  return env["MLXB_HOME"] ?? join(env["XDG_CACHE_HOME"] ?? join(homedir(), ".cache"), "mlx-bun");
}

/** The directory of one runtime: the pinned MLX version and the target. */
export function runtimeDir(target: RuntimeTarget): string {
  return join(runtimeHome(), `mlx-${versions()["MLX_VERSION"]}-${target}`);
}

/** The shim of an installed runtime. */
export function runtimeLibrary(target: RuntimeTarget): string {
  return join(runtimeDir(target), "lib", "libmlxb.so");
}
