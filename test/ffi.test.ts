// The FFI symbol table (src/native/ffi.ts) and the dtype list (src/dtype.ts) against the one header
// they describe, shim/mlxb.h: every declared function is bound with matching argument and return
// types, nothing else is bound, and the dtypes follow the header's MLXB_DTYPES table.
import { expect, test } from "bun:test";
import { FFIType } from "bun:ffi";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mlxVersion } from "../src/native/device.ts";
import { versions } from "../src/native/runtime.ts";
import { libraryProblem } from "../src/cli/setup.ts";
import { DTYPES, itemSize } from "../src/dtype.ts";
import { returning, symbols } from "../src/native/ffi.ts";

const header = readFileSync(join(import.meta.dir, "..", "shim", "mlxb.h"), "utf8").replace(/\/\*[\s\S]*?\*\//g, "");

/** Opaque handle types (`typedef void* mlx_array;`, ...). */
const HANDLES = new Set([...header.matchAll(/typedef void\* (\w+);/g)].map((m) => m[1]!));

/** The FFI type a C parameter or return type is bound with. */
function ffiType(cType: string): FFIType {
  const t = cType.replace(/\s+/g, " ").trim();
  if (t === "const char*") return FFIType.cstring;
  if (t.endsWith("*") || HANDLES.has(t)) return FFIType.ptr;
  const scalars: Record<string, FFIType> = {
    int: FFIType.i32,
    int32_t: FFIType.i32,
    float: FFIType.f32,
    double: FFIType.f64,
    size_t: FFIType.u64,
    uint64_t: FFIType.u64,
  };
  const scalar = scalars[t];
  if (scalar === undefined) throw new Error(`mlxb.h: no FFI mapping for C type '${t}'`);
  return scalar;
}

/** Declared functions: name -> [return type, parameter types]. */
function declarations(): Map<string, { returns: FFIType; args: FFIType[] }> {
  const out = new Map<string, { returns: FFIType; args: FFIType[] }>();
  for (const m of header.matchAll(/^\s*([A-Za-z_][\w\s]*?\**)\s*\b(mlx_\w+)\s*\(([^)]*)\)\s*;/gm)) {
    const [, returns, name, params] = m as unknown as [string, string, string, string];
    const args =
      params.trim() === "void" || params.trim() === ""
        ? []
        : params.split(",").map((p) =>
            ffiType(
              p
                .trim()
                .replace(/\s*\b\w+$/, "")
                .replace(/\s+\*/g, "*"),
            ),
          );
    out.set(name, { returns: ffiType(returns.replace(/\s+\*/g, "*")), args });
  }
  return out;
}

test("every function in shim/mlxb.h is bound in ffi.ts with the header's argument and return types", () => {
  const declared = declarations();
  expect(declared.size).toBeGreaterThan(70);
  const bound = new Map(
    Object.entries(symbols).map(([name, args]) => [
      name,
      { returns: returning[name as keyof typeof symbols] ?? FFIType.i32, args: [...args] as FFIType[] },
    ]),
  );
  expect([...bound.keys()].sort()).toEqual([...declared.keys()].sort());
  for (const [name, expected] of declared) expect({ name, ...bound.get(name)! }).toEqual({ name, ...expected });
});

test("src/dtype.ts follows the header's MLXB_DTYPES table (order = the enum's codes, item sizes)", () => {
  const rows = [...header.matchAll(/X\((MLX_\w+), (\w+), (\w+), (\d+)\)/g)].map((m) => ({
    name: m[2]!,
    bytes: Number(m[4]),
  }));
  expect(rows.map((r) => r.name)).toEqual([...DTYPES]);
  for (const r of rows) expect(itemSize(r.name as (typeof DTYPES)[number])).toBe(r.bytes);
});

test("setup's library check: the built shim passes; junk, another library, or a missing file is named as not loading", () => {
  const work = mkdtempSync(join(tmpdir(), "mlxb-library-"));
  try {
    const version = versions()["MLX_VERSION"]!;
    const built = process.env["MLXB_LIBRARY"] || join(import.meta.dir, "..", "zig-out", "lib", "libmlxb.so"); // the one these tests load
    expect(libraryProblem(built, version)).toBeNull();
    expect(libraryProblem(built, "0.0.1")).toBe(`was built against MLX ${mlxVersion()}, not 0.0.1`);
    const junk = join(work, "libmlxb.so");
    writeFileSync(junk, "junk\n");
    expect(libraryProblem(junk, version)).toStartWith("does not load");
    expect(libraryProblem(join(work, "missing.so"), version)).toStartWith("does not load");
    // A real shared library without the shim's symbols.
    const libc = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6"].find((p) => existsSync(p));
    if (libc) expect(libraryProblem(libc, version)).toStartWith("does not load");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
