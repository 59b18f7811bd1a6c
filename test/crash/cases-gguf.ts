// Hostile GGUF files: truncated, oversized counts, unknown versions, empty.
import { existsSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModel, Tokenizer } from "../../src/index.ts";
import { add, GGUF } from "./harness.ts";

// ---- GGUF files ----
/** A copy of the Q4_0 GGUF fixture changed by `damage`. */
function brokenGguf(damage: (path: string, bytes: Uint8Array) => void): string {
  const path = join(mkdtempSync(join(tmpdir(), "mlxb-crash-")), "model.gguf");
  const bytes = new Uint8Array(readFileSync(GGUF));
  writeFileSync(path, bytes);
  damage(path, bytes);
  return path;
}
const view = (bytes: Uint8Array) => new DataView(bytes.buffer, bytes.byteOffset);
// The GGUF files are test fixtures; the GPU machine is not carried them (scripts/gpu/test.sh).
const ggufCases = existsSync(GGUF);
for (const [label, damage] of [
  ["truncated in the tensor data", (path: string) => truncateSync(path, 12_000_000)],
  ["truncated in the header", (path: string) => truncateSync(path, 5000)],
  [
    "a tensor count of 2^40",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setBigUint64(8, 2n ** 40n, true);
      writeFileSync(path, bytes);
    },
  ],
  [
    "a metadata count of 2^53",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setBigUint64(16, 2n ** 53n, true);
      writeFileSync(path, bytes);
    },
  ],
  [
    "version 7",
    (path: string, bytes: Uint8Array) => {
      view(bytes).setUint32(4, 7, true);
      writeFileSync(path, bytes);
    },
  ],
  ["an empty file", (path: string) => writeFileSync(path, "")],
] as const) {
  if (ggufCases)
    add(`loadModel on a GGUF file: ${label}`, "error", () => loadModel(brokenGguf(damage), { backend: "mlx" }));
}
if (ggufCases) {
  add("loadModel on the Q4_0 GGUF file (control)", "ok", () => loadModel(GGUF, { backend: "mlx" }).dispose());
  add("Tokenizer.fromDir on a truncated GGUF file", "error", () =>
    Tokenizer.fromDir(brokenGguf((path) => truncateSync(path, 3000))),
  );
}
