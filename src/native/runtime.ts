// Where an installed runtime (MLX's library + the shim, made by `mlx-bun setup`, src/cli/setup.ts) lives:
// a per-user, versioned cache directory.
import { readdirSync, readFileSync, statSync } from "node:fs";
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

let shimHashMemo: string | undefined;

/** A short hash of the shim's sources (shim/**, build.zig): a runtime built from other sources (an
 * older mlx-bun, whose shim lacks a function this one calls) is never loaded. */
export function shimHash(): string {
  if (shimHashMemo === undefined) {
    const hasher = new Bun.CryptoHasher("sha256");
    const shim = join(PACKAGE_ROOT, "shim");
    // shim/ and shim/ext/ (the wrapper and our runtime and kernels).
    const sources = (readdirSync(shim, { recursive: true }) as string[])
      .sort()
      .map((f) => join(shim, f))
      .filter((f) => statSync(f).isFile());
    for (const file of [...sources, join(PACKAGE_ROOT, "build.zig")]) {
      hasher.update(file.slice(PACKAGE_ROOT.length));
      hasher.update(readFileSync(file));
    }
    shimHashMemo = hasher.digest("hex").slice(0, 10);
  }
  return shimHashMemo;
}

/** The directory of one runtime: the pinned MLX version, the target and the shim's sources. */
export function runtimeDir(target: RuntimeTarget): string {
  return join(runtimeHome(), `mlx-${versions()["MLX_VERSION"]}-${target}-${shimHash()}`);
}

/** The shim of an installed runtime. */
export function runtimeLibrary(target: RuntimeTarget): string {
  return join(runtimeDir(target), "lib", "libmlxb.so");
}
