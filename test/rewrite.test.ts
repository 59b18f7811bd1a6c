// Every rewriter, alone and all together, leaves results unchanged: for each architecture, logits of a
// prefill and 32 greedy decode steps through the KV cache equal the unrewritten graph's (<= 1e-4) and
// the greedy tokens are identical. Node counts before/after are printed.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { type Graph, GraphBuilder, opCounts } from "../src/graph/graph.ts";
import { ops, Tensor } from "../src/index.ts";
import { createCache, encode, forward, loadModel, type MlxModel } from "../src/models/index.ts";
import { DEFAULT_REWRITERS, REWRITERS, rewrite, singlePositionGraph } from "../src/rewrite/index.ts";
import { decode, decodeIds, type EncodedArray, fixture, maxAbsDiff } from "./helpers.ts";

const STEPS = 32;
const TOLERANCE = 1e-4;
const cases = fixture<Record<string, { prompt: EncodedArray }>>("models.json");

/** Greedy decoding through the cache; per-step logits and the tokens. */
function greedy(model: MlxModel, prompt: number[], graphs: { prefill?: Graph; decode?: Graph }) {
  const cache = createCache(model, 1, prompt.length + STEPS + 1);
  const logits: Float32Array[] = [];
  const tokens: number[] = [];
  let ids = Tensor.from(Int32Array.from(prompt), [1, prompt.length]);
  for (let s = 0; s <= STEPS; s++) {
    using out = forward(model, ids, { cache, graph: s === 0 ? graphs.prefill : graphs.decode });
    ids.dispose();
    logits.push(out.toFloat32Array());
    using next = ops.argmax(out, -1);
    tokens.push(next.toInt32Array()[0]!);
    ids = Tensor.from(new Int32Array([tokens[s]!]), [1, 1]);
  }
  ids.dispose();
  cache.dispose();
  return { logits, tokens };
}

const variants: [string, string[]][] = [
  ...Object.keys(REWRITERS).map((k): [string, string[]] => [k, [k]]),
  ["default", DEFAULT_REWRITERS],
  ["all", Object.keys(REWRITERS)],
];

for (const name of Object.keys(cases)) {
  describe(`rewrite: ${name}`, () => {
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name), { backend: "mlx" });
    const prompt = decodeIds(cases[name]!.prompt);
    const plain = greedy(model, prompt, {});
    const before = model.graph("last").nodes.length;

    for (const [label, only] of variants) {
      test(`${label}: ${STEPS} greedy steps equal the plain graph`, () => {
        const graph = rewrite(model.graph("last"), { only });
        const got = greedy(model, prompt, { prefill: graph, decode: graph });
        for (let s = 0; s <= STEPS; s++) {
          const err = maxAbsDiff(got.logits[s]!, plain.logits[s]!);
          if (err > TOLERANCE) throw new Error(`step ${s}: max abs err ${err}`);
        }
        expect(got.tokens).toEqual(plain.tokens);
        console.log(`  ${name} ${label}: ${before} -> ${graph.nodes.length} nodes`);
      });
    }

    test(`single-position graph: ${STEPS} one-token steps equal the general graph's bit for bit, heads split and merged by one reshape each (none after a fused projection; a fused projection's q and k normed and rotated by it)`, () => {
      const general = rewrite(model.graph("last"));
      const single = singlePositionGraph(general);
      const reference = greedy(model, prompt, { prefill: general, decode: general });
      const got = greedy(model, prompt, { prefill: general, decode: single });
      for (let s = 0; s <= STEPS; s++) expect(maxAbsDiff(got.logits[s]!, reference.logits[s]!)).toBe(0);
      expect(got.tokens).toEqual(reference.tokens);
      // q, k, v split and the output merged: a reshape + transpose pair each, now one reshape; where
      // q, k and v are one fused projection, it makes them in their heads' shapes (no reshape left),
      // and where q and k are then normed and rotated (Qwen3), it does that too (the norm + rope node
      // and the projection's three gets become the new node's three).
      const folded = single.nodes
        .flatMap((n) =>
          n.op === "dense_fused" ? (n.attrs.shapes ?? []) : n.op === "dense_fused_qk_norm_rope" ? n.attrs.shapes : [],
        )
        .filter((s) => s !== null).length;
      const fused = opCounts(general)["dense_fused"] ?? 0;
      expect(folded).toBe(fused ? 3 * model.config.layers : 0);
      const normed = opCounts(single)["dense_fused_qk_norm_rope"] ?? 0;
      expect(normed).toBe(fused && opCounts(general)["fast_qk_norm_rope"] ? model.config.layers : 0);
      expect(opCounts(single)["fast_qk_norm_rope"] ?? 0).toBe((opCounts(general)["fast_qk_norm_rope"] ?? 0) - normed);
      expect(general.nodes.length - single.nodes.length).toBe(4 * model.config.layers + folded + 3 * normed);
      expect(opCounts(single)["transpose"] ?? 0).toBe(0);
      // More than one position: the reshapes cannot hold them, and say so.
      using cache = createCache(model, 1, prompt.length + 1);
      using ids = Tensor.from(Int32Array.from(prompt), [1, prompt.length]);
      expect(() => forward(model, ids, { cache, graph: single })).toThrow(/reshape/);
    });
  });
}

describe("rewrite: bert (encoder)", () => {
  test("layer_norm, sdpa, dropout leave hidden states unchanged", () => {
    const f = fixture<Record<"ids" | "tokenTypes" | "keyMask", EncodedArray>>("bert.json");
    const model = loadModel(join(import.meta.dir, "fixtures", "data", "encoders", "bert"), { backend: "mlx" });
    const inputs = { tokenTypes: decode(f.tokenTypes), keyMask: decode(f.keyMask) };
    using plain = encode(model, decode(f.ids), inputs);
    const graph = rewrite(model.graph("all"), { only: ["layer_norm", "sdpa", "dropout"] });
    expect(opCounts(graph).fast_sdpa).toBe(model.config.layers);
    expect(opCounts(graph).layer_norm).toBeUndefined();
    using fused = encode(model, decode(f.ids), { ...inputs, graph });
    expect(maxAbsDiff(fused.toFloat32Array(), plain.toFloat32Array())).toBeLessThanOrEqual(TOLERANCE);
  });
});

describe("rewrite: what each rewriter replaces, and what it leaves", () => {
  const counts = (model: string, only: string[]) => {
    const m = loadModel(join(import.meta.dir, "fixtures", "data", "models", model), { backend: "cpu" });
    return opCounts(rewrite(m.graph("last"), { only }));
  };

  test("matches are replaced", () => {
    expect(counts("llama", ["rms_norm"])).toMatchObject({ fast_rms_norm: 5 });
    expect(counts("llama", ["rms_norm"]).rms_norm).toBeUndefined();
    expect(counts("qwen3", ["swiglu"])).toMatchObject({ fast_swiglu: 2 });
    expect(counts("llama", ["rotary_embedding"])).toMatchObject({ fast_rope: 2 });
    // Qwen3's q and k norms and the rope after them: one op per layer; the layers' other norms stay.
    const qk = counts("qwen3", ["rms_norm", "rotary_embedding", "qk_norm_rope"]);
    expect(qk).toMatchObject({ fast_qk_norm_rope: 2, fast_rms_norm: 5 });
    expect(qk.fast_rope).toBeUndefined();
    // Without q/k norms (llama) or with them left plain (rms_norm off), the rope stays.
    expect(counts("llama", ["rms_norm", "rotary_embedding", "qk_norm_rope"])).toMatchObject({ fast_rope: 2 });
    expect(counts("llama", ["rms_norm", "rotary_embedding", "qk_norm_rope"]).fast_qk_norm_rope).toBeUndefined();
    expect(counts("qwen3", ["rotary_embedding", "qk_norm_rope"])).toMatchObject({ fast_rope: 2, rms_norm: 9 });
    expect(counts("phi", ["layer_norm"])).toMatchObject({ fast_layer_norm: 3 });
    const sdpa = counts("llama", ["sdpa"]);
    expect(sdpa).toMatchObject({ fast_sdpa: 2 });
    expect(sdpa.attention_weights).toBeUndefined();
    expect(counts("llama", ["dropout"]).dropout).toBeUndefined();
    // The cache holds kv heads; the plain graph repeats what it returns (GQA), sdpa drops the repeats.
    expect(counts("llama", []).repeat_interleave).toBe(4);
    expect(counts("llama", ["sdpa"]).repeat_interleave).toBeUndefined();
    const native = counts("llama", ["native_attention"]);
    expect(native).toMatchObject({ native_attention: 2 });
    expect(native.attention_weights).toBeUndefined();
    expect(native.cache_update).toBeUndefined();
    expect(native.repeat_interleave).toBeUndefined();
    // q, k, v on one input and gate, up on another: two fused ops per layer; o_proj, down_proj, the
    // head stay. Phi's parallel block reads one input for q, k, v and fc1; GPT-2's c_attn is fused.
    expect(counts("llama", ["fused_projections"])).toMatchObject({ dense_fused: 4, dense: 5 });
    expect(counts("phi", ["fused_projections"])).toMatchObject({ dense_fused: 2, dense: 5 });
    expect(counts("gpt2", ["fused_projections"]).dense_fused).toBeUndefined();
    // A residual added to a layer's output (o_proj, down_proj): one dense_add each. Phi's parallel
    // block adds its attention output to its MLP output (one dense_add), then the residual (an add).
    expect(counts("llama", ["dense_residual"])).toMatchObject({ dense_add: 4, dense: 11 });
    expect(counts("phi", ["dense_residual"])).toMatchObject({ dense_add: 2, add: 2 });
    // Each residual sum's next norm (the post-attention norm, the next layer's input norm, the final
    // norm) joins its dense_add; the first layer's input norm (of the embedding) stays. Phi's layer
    // norms and GPT-2's are not rms norms.
    const normed = counts("llama", ["rms_norm", "dense_residual", "dense_residual_norm"]);
    expect(normed).toMatchObject({ dense_add_norm: 4, fast_rms_norm: 1 });
    expect(normed.dense_add).toBeUndefined();
    expect(counts("llama", ["rms_norm", "dense_residual_norm"]).dense_add_norm).toBeUndefined();
    expect(counts("phi", ["layer_norm", "dense_residual", "dense_residual_norm"]).dense_add_norm).toBeUndefined();
    // An MLP's fused gate and up layers and the swiglu of them: one dense_fused_swiglu a layer (the
    // q, k, v group stays a dense_fused); without the swiglu rewrite there is no fast_swiglu to join.
    const mlp = counts("llama", ["swiglu", "fused_projections", "fused_swiglu"]);
    expect(mlp).toMatchObject({ dense_fused_swiglu: 2, dense_fused: 2 });
    expect(mlp.fast_swiglu).toBeUndefined();
    expect(counts("llama", ["fused_projections", "fused_swiglu"]).dense_fused_swiglu).toBeUndefined();
    expect(counts("gemma", ["swiglu", "fused_projections", "fused_swiglu"]).dense_fused_swiglu).toBeUndefined();
  });

  test("fused projections: the loader makes one weight per group, the layers' own tensors become views of it", () => {
    const m = loadModel(join(import.meta.dir, "fixtures", "data", "models", "qwen3"), { backend: "mlx" });
    const p = "model.layers.0.self_attn";
    const fused = m.weights.get(`${p}.q_proj+${p}.k_proj+${p}.v_proj.weight`)!;
    const q = m.weights.get(`${p}.q_proj.weight`)!;
    const v = m.weights.get(`${p}.v_proj.weight`)!;
    expect(fused.shape[0]).toBe(q.shape[0]! + m.weights.get(`${p}.k_proj.weight`)!.shape[0]! + v.shape[0]!);
    const rows = (t: Tensor, from: number, to: number) => ops.slice(t, [from, 0], [to, t.shape[1]!]);
    using head = rows(fused, 0, q.shape[0]!);
    using tail = rows(fused, fused.shape[0]! - v.shape[0]!, fused.shape[0]!);
    expect(Buffer.compare(head.toBytes(), q.toBytes())).toBe(0);
    expect(Buffer.compare(tail.toBytes(), v.toBytes())).toBe(0);
    expect(m.checkpoint.weights.get(`${p}.q_proj.weight`)).toBe(q);
    m.dispose();
  });

  test("the KV cache holds kv heads for plain and rewritten graphs alike", () => {
    const m = loadModel(join(import.meta.dir, "fixtures", "data", "models", "llama"), { backend: "mlx" });
    expect([m.config.kvHeads, m.config.heads]).toEqual([2, 4]);
    using cache = createCache(m, 1, 8);
    expect(cache.tensors()[0]!.shape).toEqual([1, 2, 8, m.config.headDim]);
  });

  test("a rewritten graph runs without a cache (one pass from position 0), equal to the plain graph", () => {
    const m = loadModel(join(import.meta.dir, "fixtures", "data", "models", "qwen3"), { backend: "mlx" });
    const prompt = decode(cases.qwen3!.prompt);
    using plain = forward(m, prompt, { logits: "all" });
    for (const only of [DEFAULT_REWRITERS, ["sdpa"], ["native_attention"]]) {
      using fused = forward(m, prompt, { logits: "all", graph: rewrite(m.graph("all"), { only }) });
      expect(maxAbsDiff(fused.toFloat32Array(), plain.toFloat32Array())).toBeLessThanOrEqual(TOLERANCE);
    }
  });

  test("skip rules: rms_norm shift != 0, gated GELU is not SwiGLU", () => {
    const gemma = counts("gemma", ["rms_norm", "swiglu"]);
    expect(gemma.fast_rms_norm).toBeUndefined();
    expect(gemma.rms_norm).toBe(5);
    expect(gemma.fast_swiglu).toBeUndefined();
  });

  test("skip rules: layer_norm off the last axis, sdpa with dropout or a window", () => {
    const b = new GraphBuilder();
    const o = b.ops;
    const x = b.input("x");
    const norm = o.layer_norm([x, b.param("w"), b.param("b")], { eps: 1e-5, axis: 1 });
    const w1 = o.attention_weights([x, x, b.input("mask"), b.input("offset")], { scale: 1, causal: true });
    const dropped = o.attention_output([o.dropout([w1], { rate: 0.1 }), x]);
    const w2 = o.attention_weights([x, x, b.input("mask"), b.input("offset")], { scale: 1, causal: true, window: 4 });
    const windowed = o.attention_output([w2, x]);
    const graph = b.build({ norm, dropped, windowed });
    const after = opCounts(rewrite(graph, { only: ["layer_norm", "sdpa"] }));
    expect(after).toMatchObject({ layer_norm: 1, attention_weights: 2, attention_output: 2 });
    expect(after.fast_sdpa).toBeUndefined();
  });

  test("unknown rewriter names list the valid ones", () => {
    const m = new GraphBuilder();
    expect(() => rewrite(m.build({ x: m.input("x") }), { only: ["rms_norm", "fuse_all"] })).toThrow(
      /rewrite: unknown rewriter\(s\) fuse_all \(valid: dropout, rms_norm, layer_norm, rotary_embedding, qk_norm_rope, swiglu, fused_projections, fused_swiglu, dense_residual, dense_residual_norm, native_attention, sdpa, attn_weights\)/,
    );
  });
});

describe("rewrite: left-padded batches", () => {
  /** Prefill of two left-padded prompts and 4 decode steps; logits per step. */
  function padded(model: MlxModel, graph: Graph | undefined): Float32Array[] {
    const prompt = decodeIds(cases.qwen3!.prompt);
    const width = prompt.length;
    const cache = createCache(model, 2, width + 5);
    cache.setLeftPadding([0, 3]);
    const host = new Int32Array(2 * width);
    host.set(prompt, 0);
    host.set(prompt.slice(3), width + 3);
    let ids = Tensor.from(host, [2, width]);
    const out: Float32Array[] = [];
    for (let s = 0; s <= 4; s++) {
      using logits = forward(model, ids, { cache, graph });
      ids.dispose();
      out.push(logits.toFloat32Array());
      ids = Tensor.from(new Int32Array([s + 1, s + 1]), [2, 1]);
    }
    ids.dispose();
    cache.dispose();
    return out;
  }

  for (const name of ["qwen3", "gpt2"]) {
    test.each([
      ["default", DEFAULT_REWRITERS],
      ["all", Object.keys(REWRITERS)],
    ])(`${name} %s: equal to the plain graph`, (_, only) => {
      const model = loadModel(join(import.meta.dir, "fixtures", "data", "models", name), { backend: "mlx" });
      const plain = padded(model, undefined);
      const fused = padded(model, rewrite(model.graph("last"), { only: only as string[] }));
      for (let s = 0; s < plain.length; s++) expect(maxAbsDiff(fused[s]!, plain[s]!)).toBeLessThanOrEqual(TOLERANCE);
    });
  }
});
