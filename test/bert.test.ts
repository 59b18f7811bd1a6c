// BERT (encoder) against an independent MLX forward (scripts/fixtures/bert.py), with a padded batch.
import { expect, test } from "bun:test";
import { join } from "node:path";
import { encode, forward, loadModel } from "../src/models/index.ts";
import { decode, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

test("bert hidden states match within 1e-4, key padding mask honoured", () => {
  const f = fixture<Record<"ids" | "tokenTypes" | "keyMask" | "hidden", EncodedArray>>("bert.json");
  const model = loadModel(join(import.meta.dir, "fixtures", "data", "encoders", "bert"), { backend: "mlx" });
  expect(model.kind).toBe("encoder");
  const ids = decode(f.ids);
  using hidden = encode(model, ids, { tokenTypes: decode(f.tokenTypes), keyMask: decode(f.keyMask) });
  expect(hidden.shape).toEqual([2, 9, 64]);
  expect(maxAbsDiff(hidden.toFloat32Array(), decode(f.hidden).toFloat32Array())).toBeLessThanOrEqual(1e-4);
  // Without the mask the padded example changes: the mask is not a no-op.
  using unmasked = encode(model, ids, { tokenTypes: decode(f.tokenTypes) });
  expect(maxAbsDiff(unmasked.toFloat32Array(), decode(f.hidden).toFloat32Array())).toBeGreaterThan(1e-2);
  expect(() => forward(model, ids)).toThrow("forward: bert is an encoder; use encode");
  model.dispose();
});
